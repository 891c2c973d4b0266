"""Paper-style tables: test accuracy mean +- std over seeds per (data set, method, noise setting),
beside the published numbers of SPEC §5 and the difference. "n/a" wherever no published number exists.

The std is the sample standard deviation over seeds (ddof = 1); a single seed shows no std.
Trials run with a setting that can change results (bf16 precision, stage-A selection) form their
own variant, labelled e.g. "memomentum [bf16]", and are never compared with the published numbers.
"""
import math
from collections import defaultdict
from typing import Dict, List, Optional, Tuple

import pyarrow as pa

from memomentum.methods import METHODS

NOISE_ORDER = {"symmetric": 0, "pairflip": 1, "instance": 2}
NOISE_SHORT = {"symmetric": "sym", "pairflip": "pair", "instance": "inst"}

# Me-Momentum, as reprinted in the Self-Filtering paper (Wei et al., ECCV 2022); ResNet-18 / ResNet-34.
_COLUMNS = [("symmetric", 0.2), ("symmetric", 0.4), ("pairflip", 0.2), ("pairflip", 0.4), ("instance", 0.2),
            ("instance", 0.4)]
_PUBLISHED = {
    ("Me-Momentum", "cifar10"): [(91.44, 0.33), (88.39, 0.34), (90.91, 0.45), (87.49, 0.56), (90.86, 0.21), (86.66, 0.91)],
    ("Me-Momentum", "cifar100"): [(68.03, 0.53), (63.48, 0.72), (68.42, 0.19), (59.73, 0.47), (68.11, 0.57), (58.38, 1.28)],
    ("Co-teaching", "cifar10"): [(87.16, None), (83.59, None), (86.91, None), (82.77, None), (86.54, None), (80.98, None)],
    ("JoCoR", "cifar10"): [(88.69, None), (85.44, None), (87.75, None), (83.91, None), (87.31, None), (82.49, None)],
    ("Co-teaching", "cifar100"): [(59.28, None), (51.60, None), (58.07, None), (49.79, None), (57.24, None), (49.39, None)],
    ("JoCoR", "cifar100"): [(64.17, None), (55.97, None), (60.42, None), (50.97, None), (61.98, None), (50.59, None)],
}
PUBLISHED: Dict[Tuple[str, str, str, float], Tuple[float, Optional[float]]] = {
    (method, dataset, kind, rate): value
    for (method, dataset), values in _PUBLISHED.items() for (kind, rate), value in zip(_COLUMNS, values)}

PAPER_TABLE = pa.schema([
    ("dataset", pa.string()), ("method", pa.string()), ("variant", pa.string()),
    ("noise_type", pa.string()), ("noise_rate", pa.float64()), ("n", pa.int64()), ("seeds", pa.list_(pa.int64())),
    ("mean", pa.float64()), ("std", pa.float64()), ("ref_mean", pa.float64()), ("ref_std", pa.float64()),
    ("delta", pa.float64())])


def reference(method: str, dataset: str, noise_type: str, rate: float):
    """The published (mean, std or None) of our method `method` in a cell, or None."""
    name = METHODS[method].published if method in METHODS else None
    return PUBLISHED.get((name, dataset, noise_type, round(rate, 4))) if name else None


def method_order(method: str) -> int:
    """Registry order: the paper's method first, then its baselines."""
    names = list(METHODS)
    return names.index(method) if method in names else len(names)


def paper_table(trials: pa.Table) -> pa.Table:
    groups = defaultdict(list)
    for row in trials.to_pylist():
        if row["status"] == "finished" and row["test_acc"] is not None:
            groups[(row["dataset"], row["method"], variant(row), row["noise_type"], row["noise_rate"])].append(row)
    out = []
    for (dataset, method, mode, kind, rate), rows in sorted(groups.items(), key=_sort_key):
        accs = [r["test_acc"] for r in rows]
        mean = sum(accs) / len(accs)
        std = math.sqrt(sum((a - mean) ** 2 for a in accs) / (len(accs) - 1)) if len(accs) > 1 else None
        ref = reference(method, dataset, kind, rate) if not mode else None
        out.append({"dataset": dataset, "method": method, "variant": mode, "noise_type": kind,
                    "noise_rate": rate, "n": len(accs), "seeds": sorted(r["seed"] for r in rows),
                    "mean": mean, "std": std, "ref_mean": ref[0] if ref else None,
                    "ref_std": ref[1] if ref else None, "delta": mean - ref[0] if ref else None})
    return pa.Table.from_pylist(out, schema=PAPER_TABLE)


def variant(trial_row: dict) -> str:
    """'' for the faithful settings, else the result-changing options in use, e.g. 'bf16'."""
    parts = []
    if trial_row.get("precision_mode") not in (None, "fp32"):
        parts.append(trial_row["precision_mode"])
    if trial_row.get("select_stage_a"):
        parts.append("stage-A selection")
    return ", ".join(parts)


def zero_by_rule(trials: pa.Table) -> int:
    """Finished trials in which no epoch ever set the test accuracy, so they report 0 (for memomentum:
    stage B never beat stage A, the official rule)."""
    return sum(1 for r in trials.to_pylist() if r["status"] == "finished" and r.get("best_stage") is None)


def _sort_key(item):
    (dataset, method, mode, kind, rate), _ = item
    return dataset, method_order(method), method, mode, NOISE_ORDER.get(kind, 9), rate


def column_label(kind: str, rate: float) -> str:
    if kind == "real":
        return "real noise"
    return f"{NOISE_SHORT.get(kind, kind)} {rate * 100:g}%"


def _fmt(mean: Optional[float], std: Optional[float]) -> str:
    if mean is None:
        return "n/a"
    return f"{mean:.2f} ± {std:.2f}" if std is not None else f"{mean:.2f}"


def render_markdown(table: pa.Table, trials: Optional[pa.Table] = None, title: str = "Results") -> str:
    rows = table.to_pylist()
    lines = [f"# {title}", ""]
    if trials is not None:
        statuses = defaultdict(int)
        for status in trials.column("status").to_pylist():
            statuses[status] += 1
        lines += ["Trials: " + (", ".join(f"{n} {s}" for s, n in sorted(statuses.items())) or "none yet"), ""]
    if not rows:
        return "\n".join(lines + ["No finished trials yet.", ""])
    columns = sorted({(r["noise_type"], r["noise_rate"]) for r in rows}, key=lambda c: (NOISE_ORDER.get(c[0], 9), c[1]))
    lines += ["Test accuracy (%) at the best noisy-validation score. Each cell: ours, mean ± std over seeds "
              "(n seeds) / published / ours − published; n/a where nothing is published.", "",
              "| data set | method | " + " | ".join(column_label(*c) for c in columns) + " |",
              "|---|---|" + "---|" * len(columns)]
    by_row = defaultdict(dict)
    for r in rows:
        by_row[(r["dataset"], r["method"], r["variant"])][(r["noise_type"], r["noise_rate"])] = r
    for (dataset, method, mode), cells in by_row.items():
        label = f"{method} [{mode}]" if mode else method
        rendered = []
        for col in columns:
            r = cells.get(col)
            if r is None:
                rendered.append("–")
                continue
            delta = f"{r['delta']:+.2f}" if r["delta"] is not None else "n/a"
            rendered.append(f"{_fmt(r['mean'], r['std'])} ({r['n']}) / {_fmt(r['ref_mean'], r['ref_std'])} / {delta}")
        lines.append(f"| {dataset} | {label} | " + " | ".join(rendered) + " |")
    zeros = zero_by_rule(trials) if trials is not None else 0
    if zeros:
        lines += ["", f"Note: {zeros} trial(s) report 0: no epoch ever set their test accuracy. For "
                      f"memomentum this is the official rule when no stage-B epoch beats stage A's best "
                      f"validation score (likely with a small validation set; `select_stage_a: true` lets "
                      f"stage A count)."]
    baselines = _baseline_rows({r["dataset"] for r in rows}, columns)
    if baselines:
        lines += ["", "Published baselines (same source), for context:", "",
                  "| data set | method | " + " | ".join(column_label(*c) for c in columns) + " |",
                  "|---|---|" + "---|" * len(columns)] + baselines
    return "\n".join(lines) + "\n"


def _baseline_rows(datasets, columns) -> List[str]:
    out = []
    for (method, dataset), _ in _PUBLISHED.items():
        if dataset in datasets:
            cells = [_fmt(*PUBLISHED[(method, dataset, k, round(r, 4))]) if (method, dataset, k, round(r, 4)) in PUBLISHED
                     else "n/a" for k, r in columns]
            out.append(f"| {dataset} | {method} (published) | " + " | ".join(cells) + " |")
    return out
