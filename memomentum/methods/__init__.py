"""The method registry: name -> Method (memomentum/methods/method.py). Adding a method is one module in
this folder, ending with `METHOD = Method(...)`, plus its line below; the config, the CLI, the sweep,
the tables and the tests take the list from here.

    from memomentum.methods import METHODS, make_trial, run
    run(TrialConfig.from_dict({"dataset": "digits", "method": "ce"}))
"""
from typing import Dict, Optional

from memomentum.methods import ce, classwise, coteaching, jocor, memomentum
from memomentum.methods.method import Method

METHODS: Dict[str, Method] = {m.METHOD.name: m.METHOD for m in (memomentum, ce, coteaching, jocor, classwise)}


def make_trial(cfg, state: Optional[dict] = None, **kwargs):
    """The trial of cfg.method (its Trial subclass), loaded and ready; `state` continues a checkpoint."""
    return METHODS[cfg.method].trial(cfg, state=state, **kwargs)


def run(cfg, state: Optional[dict] = None) -> dict:
    """Run one trial to the end (or from a checkpoint state) and return its result record."""
    result = None
    for record in make_trial(cfg, state).records():
        result = record
    return result


__all__ = ["METHODS", "Method", "make_trial", "run"]
