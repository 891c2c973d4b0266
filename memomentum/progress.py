"""Progress lines and JSON output, written so that reporting can never lose a result.

A value that can be unknown (precision and recall without clean labels, the realised noise rate of
real noise, a test accuracy not measured this epoch) is None in records and JSON and "n/a" in
progress lines; NaN and infinity never reach JSON. `ReportGuard` runs anything that only reports
(progress lines, TensorBoard, figures): if it fails, one warning line says so and the trial goes on,
so its result is still printed and written.
"""
import json
import math
from typing import Any, Callable, Optional

from memomentum.errors import clip

NA = "n/a"


def fmt(value: Any, spec: str = "", na: str = NA) -> str:
    """format(value, spec), or `na` for None / NaN / infinity / a value the spec does not fit."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return na
    try:
        return format(value, spec)
    except (TypeError, ValueError):
        return str(value)


def format_record(r: dict) -> str:
    """One human-readable progress line for an epoch or a round record (any field may be missing)."""
    get = r.get
    where = f"outer {fmt(get('outer'))} inner {fmt(get('inner'))}"
    if get("kind") == "epoch":
        test = f"  test {fmt(get('test_acc'), '.2f')}" if get("test_acc") is not None else ""
        kept = f"  kept {fmt(get('kept_precision'), '.1f')}% clean" if get("kept_precision") is not None else ""
        return (f"[{fmt(get('seconds'), '7.1f')}s] {where} epoch {fmt(get('epoch'), '3d')}  "
                f"loss {fmt(get('train_loss'), '.4f')}  train {fmt(get('train_acc'), '6.2f')}  "
                f"val {fmt(get('val_score'), '6.2f')}{'*' if get('improved') else ' '}  "
                f"n_train {fmt(get('n_train'))}{kept}{test}")
    hard = f"  hard {fmt(get('n_hard'))}"
    if get("hard_precision") is not None:
        hard += f" ({fmt(get('hard_precision'), '.1f')}% clean)"
    return (f"== round {where} ({fmt(get('stage'))}, {fmt(get('epochs'))} epochs): confident "
            f"{fmt(get('n_confident'))}  precision {fmt(get('precision'), '.2f')}%  recall "
            f"{fmt(get('recall'), '.2f')}%{hard}  round val {fmt(get('val_score'), '.2f')}  "
            f"best val {fmt(get('best_val_score'), '.2f')}  test {fmt(get('test_acc'), '.2f')}")


def json_safe(obj: Any) -> Any:
    """A copy with every NaN / infinite float replaced by None (JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def dumps(obj: Any) -> str:
    """Strict JSON (NaN / infinity become null)."""
    return json.dumps(json_safe(obj), allow_nan=False)


class ReportGuard:
    """Runs reporting calls; a failure becomes one warning line (once per kind) instead of an exception.

        guard = ReportGuard(print_to_stderr)
        guard("progress line", lambda: log(format_record(record)))   # never raises
    """

    def __init__(self, warn: Callable[[str], None]):
        self.warn = warn
        self.failed = set()

    def __call__(self, what: str, fn: Callable, *args, **kwargs) -> Optional[Any]:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # reporting must never take a result down with it
            if what not in self.failed:
                self.failed.add(what)
                try:
                    self.warn(f"warning: {what} failed ({type(exc).__name__}: {clip(exc, 120)}); "
                              f"training goes on and the result is kept")
                except Exception:
                    pass
            return None
