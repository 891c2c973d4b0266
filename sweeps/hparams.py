"""TensorBoard's HParams view of a sweep, with tensorboard's own hparams plugin API (summary_v2's
protobuf builders, which need no TensorFlow):

    <sweep>/tensorboard/                 the experiment: the grid's axes as hyper-parameters (with the
                                         grid's values as their domains) and the final metrics
    <sweep>/tensorboard/<trial key>/     per trial: its hyper-parameter values (once, at a fresh start)
                                         and, when it finishes, one point of each final metric

so `tensorboard --logdir <sweep>/tensorboard` lists every trial in the HParams tab, filterable and
sortable by data set, noise, rate, seed and method. A resumed trial does not write its values again,
and the final metrics are written once, when the result exists.
"""
import math
import time
from typing import Dict, Iterable

from memomentum.methods import columns

# (hyper-parameter, config field); the metrics are the result fields with an HParams tag (memomentum/records.py
# and each method's result columns): (metric tag, result field, display name)
HPARAMS = (("dataset", "dataset"), ("noise_type", "noise_type"), ("noise_rate", "noise_rate"),
           ("noise_label", "noise_label"), ("seed", "seed"), ("method", "method"), ("model", "model"),
           ("precision", "precision"), ("phase", "phase"))  # phase: reference, tuning or tuned (sweeps/tuning.py)
METRICS = tuple((c.tag, c.name, c.doc) for c in columns("result") if c.tag)


def _api():
    from tensorboard.plugins.hparams import summary_v2

    return summary_v2


def experiment_summary(configs: Iterable[dict], searched: Iterable[str] = ()):
    """The sweep's experiment definition from its cells' configs (dicts of config fields); `searched`: the settings
    a `tune:` search samples, hyper-parameters too."""
    hp = _api()
    configs = list(configs)
    params = []
    for name, field in HPARAMS + tuple((key, key) for key in searched):
        values = sorted({c.get(field) for c in configs if c.get(field) not in (None, "")}, key=str)
        if not values:  # e.g. noise_label in a sweep without human noise: not a hyper-parameter of it
            continue
        domain = hp.Discrete(values) if len({type(v) for v in values}) == 1 else None
        params.append(hp.HParam(name, domain))
    metrics = [hp.Metric(tag, display_name=label) for tag, _, label in METRICS]
    return hp.hparams_config_pb(params, metrics, time_created_secs=time.time())


def session_summary(config: dict, trial_id: str, searched: Iterable[str] = ()):
    """One trial's hyper-parameter values (a session start); `searched`: the settings its search sampled."""
    values = {name: config.get(field) for name, field in HPARAMS + tuple((key, key) for key in searched)
              if config.get(field) not in (None, "") and not isinstance(config.get(field), (list, tuple))}
    return _api().hparams_pb(values, trial_id=trial_id, start_time_secs=time.time())


def final_metrics(result: dict) -> Dict[str, float]:
    """metric tag -> value of a finished trial's result; unknown values are left out (never NaN)."""
    out = {}
    for tag, field, _ in METRICS:
        value = result.get(field)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[tag] = float(value)
    return out


__all__ = ["HPARAMS", "METRICS", "experiment_summary", "session_summary", "final_metrics"]
