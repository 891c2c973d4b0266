"""Me-Momentum (Bai & Liu, ICCV 2021) as a library: extract confident examples from noisily labelled
data and retrain on them, alternately; with the baselines it is compared against. No Ray here; the
sweep runner lives in `sweeps/`.

    from memomentum import TrialConfig, run
    result = run(TrialConfig.from_dict({"dataset": "digits", "noise_type": "pairflip", "noise_rate": 0.4}))
    sorted(memomentum.METHODS)      # the method registry; memomentum.DATASETS: the data sets
"""
from memomentum.config import TrialConfig
from memomentum.errors import ConfigError, DataError

__all__ = ["TrialConfig", "ConfigError", "DataError", "METHODS", "DATASETS", "make_trial", "run"]


def __getattr__(name):  # torch-heavy parts load on first use, so `import memomentum` stays instant
    if name in ("METHODS", "make_trial", "run"):
        from memomentum import methods

        return getattr(methods, name)
    if name == "DATASETS":
        from memomentum.data import DATASETS

        return DATASETS
    raise AttributeError(f"module 'memomentum' has no attribute {name!r}")
