"""The method registry: name -> Method (memomentum/methods/method.py). Adding a method is one module in
this folder, ending with `METHOD = Method(...)` (its trial, options, defaults per data set, extra record
columns and version), plus its line below; the config, the CLI, grids, the sweep, the tables,
TensorBoard and the tests take everything from here.

    from memomentum.methods import METHODS, make_trial, run
    run(TrialConfig.from_dict({"dataset": "digits", "method": "ce"}))
"""
from typing import Dict, Optional, Tuple

from memomentum import records
from memomentum.methods import cdr, ce, classwise, coteaching, dmi, jocor, memomentum, peer, pes, selfie, sft
from memomentum.methods.method import Method

METHODS: Dict[str, Method] = {m.METHOD.name: m.METHOD for m in (memomentum, ce, coteaching, jocor, cdr, pes, sft, dmi,
                                                                peer, selfie, classwise)}


def columns(kind: str) -> Tuple[records.Column, ...]:
    """Every field a record of `kind` ("epoch", "round", "result") may hold: the shared ones
    (memomentum.records), then each registered method's own, once each, in registry order. A name
    declared twice with different types is an error (the tables could not hold both)."""
    shared = {"epoch": records.EPOCH, "round": records.ROUND, "result": records.RESULT}[kind]
    out = {c.name: c for c in shared}
    for method in METHODS.values():
        for column in method.columns.get(kind, ()):
            known = out.get(column.name)
            if known is not None and (column.name in {c.name for c in shared} or known.type != column.type):
                raise ValueError(f"method {method.name} declares {kind} column {column.name!r}, which is already "
                                 f"a shared column or another method's with type {known.type}")
            out.setdefault(column.name, column)
    return tuple(out.values())


def make_trial(cfg, state: Optional[dict] = None, **kwargs):
    """The trial of cfg.method (its Trial subclass), loaded and ready; `state` continues a checkpoint."""
    return METHODS[cfg.method].trial(cfg, state=state, **kwargs)


def run(cfg, state: Optional[dict] = None) -> dict:
    """Run one trial to the end (or from a checkpoint state) and return its result record."""
    result = None
    for record in make_trial(cfg, state).records():
        result = record
    return result


__all__ = ["METHODS", "Method", "columns", "make_trial", "run"]
