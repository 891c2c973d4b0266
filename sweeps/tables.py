"""Paper-style tables: test accuracy mean +- std over seeds per (data set, method, noise setting),
beside the published numbers of SPEC §5 and the difference, with a verdict per cell from a Welch
t-test. "n/a" wherever no published number exists.

Three accuracies per cell, as SPEC §6 asks of every method: `test_acc` (at the best noisy-validation
score, the project's rule), `last_test_acc` (the last epoch) and `last10_test_acc` (mean over the last
10 epochs, JoCoR's report). The std is the sample standard deviation over seeds (ddof = 1); a single
seed shows no std. Trials whose config differs from the official settings of their cell in anything
that can change results (config.differences(): bf16, stage-A selection, fewer epochs, another lr, ...)
form their own variant, labelled e.g. "memomentum [bf16]", and are never compared with the published
numbers.
"""
import json
import math
from collections import defaultdict
from typing import Dict, List, Optional, Tuple

import pyarrow as pa

from memomentum.cifar_n import HUMAN
from memomentum.config import own_differences, EXECUTION_ONLY, TrialConfig
from memomentum.methods import METHODS
from sweeps.tuning import TUNED

ALPHA = 0.05  # verdict threshold of the Welch t-test
PUBLISHED_N = 5  # seeds assumed behind a published mean +- std (SPEC §5)
# settings that change how fast or where a trial runs, not the procedure: never a variant
NOT_A_VARIANT = set(EXECUTION_ONLY) | {"compile", "deterministic"}
LEGEND = (f"Verdict: Welch's t-test of our seeds against the published mean ± std, {PUBLISHED_N} seeds assumed "
          f"there (a one-sample t-test where no std is published); \"matches\" when p ≥ {ALPHA}, else \"above\" "
          f"or \"below\". n/a with fewer than 2 seeds or no published number.")

NOISE_ORDER = {"symmetric": 0, "pairflip": 1, "instance": 2, HUMAN: 3}
NOISE_SHORT = {"symmetric": "sym", "pairflip": "pair", "instance": "inst"}
HUMAN_ORDER = ("aggre", "random1", "random2", "random3", "worst", "noisy")  # CIFAR-N label sets, cleanest first

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
    # the other rows of the same table (SPEC §8.0; means only)
    **{(name, dataset): [(v, None) for v in values] for name, dataset, values in (
        ("DMI", "cifar10", (88.18, 83.98, 89.44, 84.37, 89.14, 84.78)),
        ("DMI", "cifar100", (58.73, 49.81, 59.41, 48.13, 58.05, 47.36)),
        ("Peer Loss", "cifar10", (88.97, 84.29, 89.61, 85.18, 89.94, 85.77)),
        ("Peer Loss", "cifar100", (58.41, 50.53, 58.73, 50.17, 58.91, 48.61)),
        ("SELFIE", "cifar10", (90.18, 86.27, 89.29, 85.71, 89.24, 84.16)),
        ("SELFIE", "cifar100", (67.19, 61.29, 65.18, 58.67, 65.44, 53.91)),
        ("CDR", "cifar10", (89.68, 86.13, 89.19, 85.79, 90.24, 83.07)),
        ("CDR", "cifar100", (66.52, 60.18, 66.12, 59.49, 67.06, 56.86)),
        ("PES", "cifar10", (92.38, 87.45, 91.22, 89.52, 92.69, 89.73)),
        ("PES", "cifar100", (68.89, 64.90, 69.31, 59.08, 70.49, 65.68)),
        ("SFT", "cifar10", (92.57, 89.54, 91.53, 89.93, 91.41, 89.97)),
        ("SFT", "cifar100", (71.98, 69.72, 71.23, 69.29, 71.83, 69.91)))},
}
# what a reader must know about a published row (SPEC §8.0), printed under the tables that show it
PUBLISHED_NOTES = {
    "PES": "PES's published \"sym 40%\" column is the PES paper's symmetric 50% value (a secondary note).",
    "SFT": "SFT's published row is its best TEST accuracy over all epochs (selected on the test set); compare it with "
           "the optimistic section, not with the test accuracy at the best validation score.",
}
PUBLISHED: Dict[Tuple[str, str, str, object], Tuple[float, Optional[float]]] = {
    (method, dataset, kind, rate): value
    for (method, dataset), values in _PUBLISHED.items() for (kind, rate), value in zip(_COLUMNS, values)}
# CIFAR-N (SPEC §7, published secondary numbers, not verified against the paper); keyed by label set
PUBLISHED.update({
    ("CE", "cifar10", HUMAN, "aggre"): (87.77, 0.38),
    **{("Co-teaching", "cifar10", HUMAN, label): (value, None) for label, value in
       (("aggre", 91.20), ("random1", 90.33), ("random2", 90.30), ("random3", 90.15), ("worst", 83.83))},
    ("Co-teaching", "cifar100", HUMAN, "noisy"): (60.37, None)})

# which test accuracy is which (trials.parquet's column names in brackets), said once under the main table
ACCURACIES = ("Which accuracy is which: the main table's is the test accuracy of the epoch with the best noisy-"
              "validation score (test_acc; the paper's model selection, no clean label used); \"last\" is the "
              "last epoch's (last_test_acc); \"last 10\" the mean over the last 10 epochs (last10_test_acc, "
              "JoCoR's report); \"optimistic\" the best test accuracy of any epoch (best_test_acc), selected on "
              "the test set.")

PAPER_TABLE = pa.schema([
    ("dataset", pa.string()), ("method", pa.string()), ("variant", pa.string()),
    ("noise_type", pa.string()), ("noise_rate", pa.float64()), ("noise_label", pa.string()),
    ("n", pa.int64()), ("seeds", pa.list_(pa.int64())),
    ("realized_noise_rate", pa.float64()),  # the share of wrong training labels, mean over the seeds (None: unknown)
    ("mean", pa.float64()), ("std", pa.float64()),  # test_acc: at the best noisy-validation score
    ("last_mean", pa.float64()), ("last_std", pa.float64()), ("last_n", pa.int64()),  # last epoch
    ("last10_mean", pa.float64()), ("last10_std", pa.float64()), ("last10_n", pa.int64()),  # last 10 epochs
    ("best_mean", pa.float64()), ("best_std", pa.float64()), ("best_n", pa.int64()),  # best test epoch: optimistic
    ("ref_mean", pa.float64()), ("ref_std", pa.float64()), ("delta", pa.float64()),
    ("p_value", pa.float64()), ("verdict", pa.string()),
    ("val_mean", pa.float64()), ("val_std", pa.float64()), ("val_n", pa.int64())])  # the best noisy-validation score


def reference(method: str, dataset: str, noise_type: str, rate: float, label: str = ""):
    """The published (mean, std or None) of our method `method` in a cell (synthetic noise: by rate; human
    noise: by label set), or None."""
    name = METHODS[method].published if method in METHODS else None
    return PUBLISHED.get((name, dataset, noise_type, label if noise_type == HUMAN else round(rate, 4))) if name else None


def method_order(method: str) -> int:
    """Registry order: the paper's method first, then its baselines."""
    names = list(METHODS)
    return names.index(method) if method in names else len(names)


def version_mismatch(method: str, recorded) -> Optional[str]:
    """None when `recorded` is the registry's version of `method` (a file written before versions existed records
    none: version 1); else "earlier", "newer" or "unknown" (not a version any method has, e.g. 0)."""
    known = METHODS.get(method)
    if known is None:
        return None
    if recorded is None:
        recorded = 1
    if not isinstance(recorded, int) or isinstance(recorded, bool) or recorded < 1:
        return "unknown"
    return None if recorded == known.version else "earlier" if recorded < known.version else "newer"


def superseded(row: dict) -> bool:
    """A trial made by another version of its method than the registry's (an earlier one: its cells ran again
    under new keys; a newer or unknown one: never taken for this code's), or from files its data set has since
    replaced (`data_superseded`): kept in trials.parquet, left out of the paper table and the figures."""
    return bool(row.get("data_superseded")) or version_mismatch(row.get("method"), row.get("method_version")) is not None


def paper_table(trials: pa.Table) -> pa.Table:
    groups = defaultdict(list)
    for row in trials.to_pylist():  # a data set without a trusted test set: its rows carry the validation score only
        if row["status"] == "finished" and (row["test_acc"] is not None or row.get("best_val_score") is not None) \
                and not superseded(row):
            for mode in variants(row):
                groups[(row["dataset"], row["method"], mode, row["noise_type"], row["noise_rate"],
                        row.get("noise_label") or "")].append(row)
    out = []
    for (dataset, method, mode, kind, rate, label), rows in sorted(groups.items(), key=_sort_key):
        mean, std, n = mean_std([r["test_acc"] for r in rows])
        last, last_std, last_n = mean_std([r.get("last_test_acc") for r in rows])
        last10, last10_std, last10_n = mean_std([r.get("last10_test_acc") for r in rows])
        best, best_std, best_n = mean_std([r.get("best_test_acc") for r in rows])
        val, val_std, val_n = mean_std([r.get("best_val_score") for r in rows])
        ref = reference(method, dataset, kind, rate, label) if not mode else None
        p_value = welch_p(mean, std, n, *ref) if ref and mean is not None else None
        out.append({"dataset": dataset, "method": method, "variant": mode, "noise_type": kind,
                    "noise_rate": rate, "noise_label": label, "n": n, "seeds": sorted(r["seed"] for r in rows),
                    "realized_noise_rate": _mean_known([r.get("realized_noise_rate") for r in rows]),
                    "mean": mean, "std": std, "last_mean": last, "last_std": last_std, "last_n": last_n,
                    "last10_mean": last10, "last10_std": last10_std, "last10_n": last10_n,
                    "best_mean": best, "best_std": best_std, "best_n": best_n,
                    "ref_mean": ref[0] if ref else None, "ref_std": ref[1] if ref else None,
                    "delta": mean - ref[0] if ref and mean is not None else None, "p_value": p_value,
                    "verdict": verdict(p_value, mean - ref[0]) if ref and p_value is not None else None,
                    "val_mean": val, "val_std": val_std, "val_n": val_n})
    return pa.Table.from_pylist(out, schema=PAPER_TABLE)


def _mean_known(values) -> Optional[float]:
    """The mean, or None when any value is unknown."""
    return sum(values) / len(values) if values and all(v is not None for v in values) else None


def mean_std(values) -> Tuple[Optional[float], Optional[float], int]:
    """(mean, sample std or None below 2 values, count) of the known values; (None, None, 0) if none."""
    known = [v for v in values if v is not None]
    if not known:
        return None, None, 0
    mean = sum(known) / len(known)
    std = math.sqrt(sum((v - mean) ** 2 for v in known) / (len(known) - 1)) if len(known) > 1 else None
    return mean, std, len(known)


def welch_p(mean: float, std: Optional[float], n: int, ref_mean: float, ref_std: Optional[float]) -> Optional[float]:
    """Two-sided p of Welch's t-test of our n seeds against a published mean +- std over PUBLISHED_N seeds
    (std unknown: a one-sample t-test against the published mean). None below 2 seeds."""
    if n < 2 or std is None:
        return None
    try:
        from scipy import stats
    except ImportError:  # a machine without scipy (a bare GPU image) still gets its tables, without verdicts
        return None
    ref_std = ref_std or 0.0
    if std == 0 and ref_std == 0:
        return 1.0 if mean == ref_mean else 0.0
    return float(stats.ttest_ind_from_stats(mean, std, n, ref_mean, ref_std, PUBLISHED_N, equal_var=False).pvalue)


def verdict(p_value: float, delta: float) -> str:
    if p_value >= ALPHA:
        return "matches"
    return "above" if delta > 0 else "below"


def variants(trial_row: dict) -> List[str]:
    """The rows a trial counts in: its variant; a trial with the settings a search chose, the method's tuned row (and
    its reference row too when the search chose the reference settings)."""
    own = variant(trial_row)
    if trial_row.get("tuned"):
        return [TUNED, own] if own == "" else [TUNED]
    return [own]


def variant(trial_row: dict) -> str:
    """'' for the official settings of the trial's cell, else what differs, e.g. 'bf16' or
    'decay_start=40, epochs_per_stage=100' (from the trial's stored config, config.differences())."""
    differences = _differences(trial_row)
    parts = []
    if differences.pop("precision", None) not in (None, "fp32") or trial_row.get("precision_mode") not in (None, "fp32"):
        parts.append(trial_row.get("precision_mode") or "bf16")
    if differences.pop("matmul_precision", None) == "tf32" or trial_row.get("matmul_precision") == "tf32":
        parts.append("tf32")
    parts += [f"{k}={_value(v)}" for k, v in sorted(differences.items())]
    return ", ".join(parts)


def _differences(trial_row: dict) -> dict:
    """The stored config's result-changing fields that differ from its cell's official settings."""
    try:
        config = json.loads(trial_row.get("config_json") or "null")
        if not isinstance(config, dict):
            return {}
        if config.get("data_path"):  # a data set given by a path: judged without its files (they may be elsewhere)
            differences = own_differences(config)
        else:
            differences = TrialConfig.from_stored(config).differences()
    except (ValueError, TypeError, KeyError):  # ConfigError is a ValueError: a config this version no longer accepts
        return {}
    return {k: v for k, v in differences.items() if k not in NOT_A_VARIANT}


def _value(v) -> str:
    if isinstance(v, list):
        return "[" + ",".join(str(x) for x in v) + "]"
    return f"{v:g}" if isinstance(v, float) else str(v)


def zero_by_rule(trials: pa.Table) -> int:
    """Finished trials in which no epoch ever set the test accuracy, so they report 0 (for memomentum:
    stage B never beat stage A, the official rule)."""
    return sum(1 for r in trials.to_pylist() if r["status"] == "finished" and r.get("best_stage") is None)


def code_versions_line(trials: pa.Table) -> Optional[str]:
    """One line when the finished trials a sweep's tables show (not those of an earlier method version) were
    made by more than one code version, else None."""
    counts = defaultdict(int)
    for t in trials.to_pylist():
        if t["status"] == "finished" and not superseded(t):
            counts[t.get("code_version") or "unknown (recorded before code versions were)"] += 1
    if len(counts) < 2:
        return None
    listed = ", ".join(f"{v} ({n})" for v, n in sorted(counts.items(), key=lambda vn: (-vn[1], vn[0])))
    return (f"Note: the finished trials come from {len(counts)} code versions: {listed}; the code_version column "
            f"of trials.parquet says which made each.")


def _sort_key(item):
    (dataset, method, mode, kind, rate, label), _ = item
    return dataset, method_order(method), method, mode, NOISE_ORDER.get(kind, 9), rate, _label_order(label)


def _label_order(label: str) -> tuple:
    return (HUMAN_ORDER.index(label), label) if label in HUMAN_ORDER else (len(HUMAN_ORDER), label)


def setting(row: dict) -> tuple:
    """(noise type, rate, label set) of a table row: its column in the rendered tables."""
    return row["noise_type"], row["noise_rate"], row.get("noise_label") or ""


def setting_order(c: tuple) -> tuple:
    return NOISE_ORDER.get(c[0], 9), c[1], _label_order(c[2])


def column_label(kind: str, rate: float, label: str = "") -> str:
    if kind == "real":
        return "real noise"
    if kind == HUMAN:
        return f"human {label}"
    return f"{NOISE_SHORT.get(kind, kind)} {rate * 100:g}%"


def _fmt(mean: Optional[float], std: Optional[float]) -> str:
    if mean is None:
        return "n/a"
    return f"{mean:.2f} ± {std:.2f}" if std is not None else f"{mean:.2f}"


def render_markdown(table: pa.Table, trials: Optional[pa.Table] = None, title: str = "Results",
                    brief: bool = False) -> str:
    """paper_table.md: the main table (test accuracy at the best noisy-validation score), the last-epoch table,
    the optimistic best-test table, notes and the published rows. `brief`: the main table and its notes only
    (what a sweep prints at its end)."""
    rows = table.to_pylist()
    lines = [f"# {title}", ""]
    if trials is not None:
        statuses = defaultdict(int)
        for status in trials.column("status").to_pylist():
            statuses[status] += 1
        lines += ["Trials: " + (", ".join(f"{n} {s}" for s, n in sorted(statuses.items())) or "none yet"), ""]
    if not rows:
        return "\n".join(lines + ["No finished trials yet.", ""])
    columns = sorted({setting(r) for r in rows}, key=setting_order)
    by_row = defaultdict(dict)
    for r in rows:
        by_row[(r["dataset"], r["method"], r["variant"])][setting(r)] = r
    header = ["| data set | method | " + " | ".join(column_label(*c) for c in columns) + " |",
              "|---|---|" + "---|" * len(columns)]
    lines += ["Test accuracy (%) at the best noisy-validation score. Each cell: ours, mean ± std over seeds "
              "(n seeds) / published / ours − published / verdict; n/a where nothing is published.", LEGEND, ""]
    lines += header + _rows(by_row, columns, _main_cell)
    untested = _validation_ranking(rows) + tuned_note(rows)
    if brief:  # a note changes how a row reads (a DMI row that is its warm-up): said even here
        return "\n".join(lines + untested + _trial_notes(trials)) + "\n"
    lines += untested
    lines += ["", ACCURACIES, ""]
    lines += _seeds_and_noise(rows, columns)
    lines += ["", "Test accuracy (%) at the last epoch / mean over the last 10 epochs (mean ± std over seeds; for "
                  "two-network methods both networks' mean; for Me-Momentum the epochs of its final round):", ""]
    lines += header + _rows(by_row, columns, _last_cell)
    lines += ["", "Optimistic: the best test accuracy (%) of any epoch (mean ± std over seeds), selected on the TEST "
                  "set, as SFT, PES's semi-supervised variant and the CIFAR-N leaderboard report. Never compare it with "
                  "the tables above; n/a for trials recorded before it was.", ""]
    lines += header + _rows(by_row, columns, _best_cell)
    notes = [PUBLISHED_NOTES[name] for name in dict.fromkeys(METHODS[m].published for _, m, _ in by_row
                                                            if m in METHODS) if name in PUBLISHED_NOTES]
    lines += [""] + [f"Note: {note}" for note in notes] if notes else []
    versions = code_versions_line(trials) if trials is not None else None
    if versions:
        lines += ["", versions]
    other, older_data = defaultdict(int), 0
    for r in trials.to_pylist() if trials is not None else ():
        if r["status"] == "finished" and r.get("data_superseded"):
            older_data += 1
        elif r["status"] == "finished" and superseded(r):
            other[version_mismatch(r["method"], r.get("method_version"))] += 1
    if older_data:
        lines += ["", f"Note: {older_data} finished trial(s) were made from an earlier version of their data set's files "
                      f"(another fingerprint) and are left out of these tables (trials.parquet keeps them, with their "
                      f"data_fingerprint)."]
    if other:
        said = ", ".join(f"{n} by {'a' if kind == 'newer' else 'an'} {kind} version" for kind, n in sorted(other.items()))
        lines += ["", f"Note: {sum(other.values())} finished trial(s) were made by another version of their method "
                      f"than this code's ({said}) and are left out of these tables (trials.parquet keeps them, with "
                      f"their method_version)."]
    lines += _trial_notes(trials)
    zeros = zero_by_rule(trials) if trials is not None else 0
    if zeros:
        lines += ["", f"Note: {zeros} trial(s) report 0: no epoch ever set their test accuracy. For "
                      f"memomentum this is the official rule when no stage-B epoch beats stage A's best "
                      f"validation score (likely with a small validation set; `select_stage_a: true` lets "
                      f"stage A count)."]
    baselines = _baseline_rows({r["dataset"] for r in rows}, columns)
    if baselines:
        lines += ["", "Published numbers (same source), for context:", ""] + header + baselines
    return "\n".join(lines) + "\n"


def _validation_ranking(rows: List[dict]) -> List[str]:
    """For each data set without a trusted test set (a data set given by a path whose test labels are not known to
    be clean): a note that its cells show the best noisy-validation score, and the methods ranked by it per column."""
    cells = defaultdict(list)
    for r in rows:
        if r["n"] == 0 and r.get("val_n"):
            cells[(r["dataset"], setting(r))].append(r)
    if not cells:
        return []
    out = ["", f"Note: {', '.join(sorted({d for d, _ in cells}))}: no test set with trusted labels (no clean_label, and "
               f"the labels not declared clean), so no test accuracy; its cells show the best noisy-validation score "
               f"(mean ± std over seeds), the only measure there, and rank the methods by it:"]
    for (dataset, column), group in sorted(cells.items(), key=lambda kv: (kv[0][0], setting_order(kv[0][1]))):
        ranked = sorted(group, key=lambda r: -r["val_mean"])
        out.append(f"- {dataset}, {column_label(*column)}: " + " > ".join(
            f"{_row_name(r)} ({r['val_mean']:.2f})" for r in ranked))
    return out


def tuned_note(rows: List[dict]) -> List[str]:
    """What the tuned rows are, under a table that has them."""
    if not any(r["variant"] == TUNED for r in rows):
        return []
    return ["", f"Note: \"{TUNED}\" rows: each method's settings chosen by the grid's `tune:` search, the same number "
                f"of trials for every method, on a tuning seed of its own, by the noisy-validation score alone (no clean "
                f"label, no test image); the chosen settings are in results/tuned.yaml, every tuning trial in "
                f"results/tuning.parquet."]


def _row_name(r: dict) -> str:
    return f"{r['method']} [{r['variant']}]" if r["variant"] else r["method"]


def _trial_notes(trials: Optional[pa.Table]) -> List[str]:
    """One line per distinct note the methods left on the finished trials the tables show (e.g. a DMI round that
    moved no weight, so the row is its warm-up's), with how many trials of which cells say it."""
    if trials is None or "note" not in trials.column_names:
        return []
    said = defaultdict(list)
    for r in trials.to_pylist():
        if r["status"] == "finished" and r.get("note") and not superseded(r):
            said[(r["method"], r["note"])].append(f"{r['dataset']} {column_label(*setting(r))} seed {r['seed']}")
    return [line for (method, note), where in sorted(said.items()) for line in
            ("", f"Note: {len(where)} {method} trial(s) ({', '.join(where[:4])}{', ...' if len(where) > 4 else ''}): "
                 f"{note}.")]


def _seeds_and_noise(rows: List[dict], columns: List[tuple]) -> List[str]:
    """Per data set and column: the realised noise rate beside the nominal one (the column) and the seeds the
    cells average; a method whose seeds differ from its column's is named under the table."""
    by_setting = defaultdict(list)
    for r in rows:
        by_setting[(r["dataset"], setting(r))].append(r)
    out = ["Realised noise rate (the share of training labels that differ from the clean ones, mean over the seeds; "
           "the nominal rate is the column's) and the seeds each cell averages:", ""]
    out += ["| data set | " + " | ".join(column_label(*c) for c in columns) + " |", "|---|" + "---|" * len(columns)]
    odd = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        cells = []
        for c in columns:
            group = by_setting.get((dataset, c), [])
            seeds = sorted({s for r in group for s in r["seeds"]})
            if not seeds:
                cells.append("–")
                continue
            realised = [r["realized_noise_rate"] for r in group if r["realized_noise_rate"] is not None]
            rate = f"{sum(realised) / len(realised) * 100:.1f}%" if realised else "n/a"
            cells.append(f"{rate}, seeds {_seed_list(seeds)}")
            odd += [f"{dataset} {r['method']}{_variant_label(r['variant'])} {column_label(*c)}: seeds "
                    f"{_seed_list(r['seeds'])}" for r in group if r["seeds"] != seeds]
        out.append(f"| {dataset} | " + " | ".join(cells) + " |")
    if odd:
        out += ["", "Cells with fewer seeds than their column: " + "; ".join(odd) + "."]
    return out


def _variant_label(mode: str) -> str:
    return f" [{mode}]" if mode else ""


def _seed_list(seeds: List[int]) -> str:
    return ", ".join(str(s) for s in seeds)


def _rows(by_row, columns, cell) -> List[str]:
    out = []
    for (dataset, method, mode), cells in by_row.items():
        label = method + _variant_label(mode)
        out.append(f"| {dataset} | {label} | " + " | ".join(cell(cells[c]) if c in cells else "–" for c in columns) + " |")
    return out


def _main_cell(r: dict) -> str:
    if r["n"] == 0 and r.get("val_n"):  # no trusted test set: the noisy-validation score, the only measure there
        return f"val {_fmt(r['val_mean'], r['val_std'])} ({r['val_n']}) / no trusted test set"
    delta = f"{r['delta']:+.2f}" if r["delta"] is not None else "n/a"
    return f"{_fmt(r['mean'], r['std'])} ({r['n']}) / {_fmt(r['ref_mean'], r['ref_std'])} / {delta} / {r['verdict'] or 'n/a'}"


def _best_cell(r: dict) -> str:
    return _fmt(r["best_mean"], r["best_std"])


def _last_cell(r: dict) -> str:
    return f"{_fmt(r['last_mean'], r['last_std'])} / {_fmt(r['last10_mean'], r['last10_std'])}"


def _baseline_rows(datasets, columns) -> List[str]:
    out = []
    names = sorted({(m, d) for m, d, _, _ in PUBLISHED if d in datasets}, key=lambda md: (md[1], md[0]))
    for method, dataset in names:
        cells = [_fmt(*PUBLISHED[key]) if (key := (method, dataset, k, lab if k == HUMAN else round(r, 4))) in PUBLISHED
                 else "n/a" for k, r, lab in columns]
        if any(c != "n/a" for c in cells):
            out.append(f"| {dataset} | {method} (published) | " + " | ".join(cells) + " |")
    return out
