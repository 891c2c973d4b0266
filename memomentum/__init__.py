"""Me-Momentum (Bai & Liu, ICCV 2021) as a library: extract confident examples from noisily labelled
data and retrain on them, alternately. No Ray here; the sweep runner lives in `sweeps/`.

    from memomentum import TrialConfig, Trial
    result = run(TrialConfig.from_dict({"dataset": "digits", "noise_rate": 0.4}))
"""
from memomentum.config import ConfigError, TrialConfig
from memomentum.data import DataError

__all__ = ["TrialConfig", "ConfigError", "DataError", "Trial", "run"]


def __getattr__(name):  # torch-heavy parts load on first use, so config checks stay instant
    if name in ("Trial", "run"):
        from memomentum import procedure

        return getattr(procedure, name)
    raise AttributeError(name)
