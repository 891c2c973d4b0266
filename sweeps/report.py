"""Figures and a report next to the tables, under <sweep>/results/:

    accuracy.png             test accuracy against noise rate: a panel per data set and noise type, a line
                             per method (mean over seeds, error bars = std), published numbers as markers
    rounds_<dataset>.png     per round of the methods that extract training sets (memomentum,
                             classwise): confident-set size, precision, recall and hard examples,
                             mean over seeds, a line per noise setting
    extraction.png           one cell: per round, the extracted examples that the first classifier had
                             missed (the hard ones), split into correctly and wrongly labelled
    report.md                links the figures, embeds the paper table, and lists every trial

Built from the Parquet tables of sweeps/results.py, so it works on finished and partial sweeps alike.
"""
import io
from collections import defaultdict
from typing import Dict, List

import pyarrow as pa

from memomentum.methods import METHODS, columns
from sweeps import tables as paper, tuning
from sweeps.layout import RESULTS
from sweeps.storage import Storage

_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def method_style(method: str):
    """(colour, marker) of a method: fixed by its place in the registry, the same in every figure."""
    i = paper.method_order(method)
    return _COLORS[i % len(_COLORS)], _MARKERS[i % len(_MARKERS)]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return buf.getvalue()


def _finished(trials: pa.Table) -> List[dict]:
    """The finished trials the figures show (not those of an earlier version of their method)."""
    return [t for t in trials.to_pylist() if t["status"] == "finished" and t["test_acc"] is not None
            and not paper.superseded(t)]


def accuracy_figure(trials: pa.Table):
    """Test accuracy against noise rate; None when no trial has finished."""
    rows = [{**t, "_variant": paper.variant(t)} for t in _finished(trials)]  # parsed once per trial
    panels = sorted({(t["dataset"], t["noise_type"]) for t in rows},
                    key=lambda p: (p[0], paper.NOISE_ORDER.get(p[1], 9)))
    if not panels:
        return None
    plt = _pyplot()
    cols = min(3, len(panels))
    nrows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.3 * nrows), squeeze=False)
    for ax, (dataset, kind) in zip(axes.flat, panels):
        mine = [t for t in rows if t["dataset"] == dataset and t["noise_type"] == kind]
        lines = sorted({(t["method"], t["_variant"]) for t in mine}, key=lambda m: (paper.method_order(m[0]), m))
        for method, mode in lines:
            by_rate = defaultdict(list)
            for t in mine:
                if t["method"] == method and t["_variant"] == mode:
                    by_rate[_noise_x(t)].append(t["test_acc"])
            rates = sorted(by_rate)
            means = [sum(by_rate[r]) / len(by_rate[r]) for r in rates]
            stds = [_std(by_rate[r]) for r in rates]
            color, marker = method_style(method)
            ax.errorbar([r * 100 for r, _ in rates], means, yerr=stds, color=color, marker=marker, capsize=3,
                        linestyle="--" if mode else "-", label=f"{method} [{mode}]" if mode else f"{method} (ours)")
            if mode:  # published numbers belong to the official settings only
                continue
            refs = [(r, paper.reference(method, dataset, kind, r, label)) for r, label in rates]
            refs = [(r, v) for r, v in refs if v]
            if refs:
                ax.errorbar([r * 100 for r, _ in refs], [v[0] for _, v in refs], yerr=[v[1] or 0 for _, v in refs],
                            color=color, marker="*", markersize=11, linestyle="none", label=f"{method} (published)")
        ax.set_title(f"{dataset}, {kind} noise" if kind != "real" else f"{dataset}, real noise")
        ax.set_xlabel("noise rate (%)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle("Test accuracy at the best noisy-validation score (mean ± std over seeds)")
    fig.tight_layout()
    return fig


def _noise_x(t: dict) -> tuple:
    """(noise rate on the x axis, label set): human label sets sit at their realised rate."""
    if t["noise_type"] == paper.HUMAN:
        return round(t["realized_noise_rate"] or 0.0, 4), t.get("noise_label") or ""
    return t["noise_rate"], ""


def _std(values: List[float]) -> float:
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def _rounds_by_trial(rounds: pa.Table, skip=frozenset()) -> Dict[str, List[dict]]:
    """Round records of the trials of methods that extract training sets round by round (but the trials `skip`)."""
    out = defaultdict(list)
    for r in rounds.to_pylist():
        if r["method"] in METHODS and METHODS[r["method"]].rounds and r["key"] not in skip:
            out[r["key"]].append(r)
    return {k: sorted(v, key=lambda r: r["step"]) for k, v in out.items()}


def _cell(r: dict) -> tuple:
    return r["dataset"], r["noise_type"], r["noise_rate"], r["method"], r.get("noise_label") or ""


def rounds_figures(rounds: pa.Table, skip=frozenset()) -> Dict[str, object]:
    """One figure per data set: confident-set size, precision, recall, hard examples per round (trials `skip` left
    out)."""
    by_trial = _rounds_by_trial(rounds, skip)
    cells = defaultdict(list)  # (dataset, type, rate, method) -> list of per-trial round lists
    for trial_rounds in by_trial.values():
        cells[_cell(trial_rounds[0])].append(trial_rounds)
    figures = {}
    plt = _pyplot()
    metrics = [("n_confident", "confident-set size"), ("precision", "precision (% correctly labelled)"),
               ("recall", "recall (% of correct labels kept)"), ("n_hard", "hard examples (missed by round 1)")]
    for dataset in sorted({c[0] for c in cells}):
        fig, axes = plt.subplots(1, 4, figsize=(17, 3.6))
        mine = sorted((c for c in cells if c[0] == dataset),
                      key=lambda c: (paper.method_order(c[3]), paper.NOISE_ORDER.get(c[1], 9), c[2]))
        methods = sorted({c[3] for c in mine}, key=paper.method_order)
        for cell in mine:
            trials = cells[cell]
            length = max(len(t) for t in trials)
            label = paper.column_label(cell[1], cell[2], cell[4]) + f" ({len(trials)} seeds)"
            if len(methods) > 1:
                label = f"{cell[3]}: {label}"
            for ax, (name, title) in zip(axes, metrics):
                xs, ys = [], []
                for i in range(length):
                    values = [t[i][name] for t in trials if i < len(t) and t[i][name] is not None]
                    if values:
                        xs.append(i + 1)
                        ys.append(sum(values) / len(values))
                ax.plot(xs, ys, marker="o", markersize=3, label=label)
                ax.set_title(title, fontsize=10)
                ax.set_xlabel("round (outer and inner loops, in order)")
                ax.grid(alpha=0.3)
        axes[0].legend(fontsize=7)
        fig.suptitle(f"{dataset}: the confident set round by round ({', '.join(methods)}, mean over seeds)")
        fig.tight_layout()
        figures[dataset] = fig
    return figures


def extraction_figure(rounds: pa.Table, skip=frozenset()):
    """For the cell whose last round holds the most hard examples (first seed): per round, the hard
    examples split into correctly and wrongly labelled. Returns (figure, cell name) or (None, None)."""
    by_trial = _rounds_by_trial(rounds, skip)
    if not by_trial:
        return None, None
    cell_best = defaultdict(list)
    for trial_rounds in by_trial.values():
        cell_best[_cell(trial_rounds[0])].append(trial_rounds)
    cell = max(cell_best, key=lambda c: (sum(t[-1]["n_hard"] or 0 for t in cell_best[c]) / len(cell_best[c]), c[2]))
    trial = min(cell_best[cell], key=lambda t: t[0]["seed"])
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(trial) + 3), 3.8))
    xs = list(range(1, len(trial) + 1))
    hard = [r["n_hard"] or 0 for r in trial]
    right = [round(h * (r["hard_precision"] or 0) / 100) for h, r in zip(hard, trial)]
    wrong = [h - c for h, c in zip(hard, right)]
    ax.bar(xs, right, color="tab:green", label="correctly labelled")
    ax.bar(xs, wrong, bottom=right, color="tab:red", label="wrongly labelled")
    ax.set_xticks(xs, [f"{r['outer']}.{r['inner']}" for r in trial], rotation=45, fontsize=8)
    ax.set_xlabel("round (outer.inner)")
    ax.set_ylabel("examples")
    name = f"{cell[0]} {paper.column_label(cell[1], cell[2], cell[4])}, {cell[3]}, seed {trial[0]['seed']}"
    ax.set_title(f"{name}: extracted examples the first classifier had missed")
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig, name


def write_report(store: Storage, sweep: str, tables: Dict[str, pa.Table]) -> List[str]:
    """Write the figures and report.md under <sweep>/results/; returns the file names written."""
    files: Dict[str, bytes] = {}
    figures = []  # (file, caption)
    fig = accuracy_figure(tables["trials"])
    if fig is not None:
        files["accuracy.png"] = _png(fig)
        figures.append(("accuracy.png", "Test accuracy against noise rate, one panel per data set and noise type; "
                                        "error bars are the std over seeds, stars the published numbers."))
    skip = {t["key"] for t in tables["trials"].to_pylist() if paper.superseded(t)}  # earlier method versions
    for dataset, fig in rounds_figures(tables["rounds"], skip).items():
        files[f"rounds_{dataset}.png"] = _png(fig)
        figures.append((f"rounds_{dataset}.png", f"{dataset}: confident-set size, precision, recall and hard "
                                                 f"examples per round, mean over seeds."))
    fig, name = extraction_figure(tables["rounds"], skip)
    if fig is not None:
        files["extraction.png"] = _png(fig)
        figures.append(("extraction.png", f"{name}: per round, the extracted examples that the first "
                                          f"classifier (end of outer loop 1, stage A) had not extracted."))
    searches = {g: tuning.read_records(store, sweep, g) for g in store.listdir(sweep, tuning.FOLDER) if g != "trials"}
    searches = {g: r for g, r in searches.items() if r}
    extra = []
    if searches:
        chosen = tuning.read_chosen(store, sweep)
        fig = tuning_figure(searches)
        files["tuning.png"] = _png(fig)
        extra = tuning_section(searches, chosen)
    files["report.md"] = render_report(sweep, tables, figures, extra).encode()
    for name, data in files.items():
        store.write_atomic(data, sweep, RESULTS, name)
    return list(files)


def tuning_figure(searches: Dict[str, List[dict]]):
    """Per search (a data set x noise setting x method), the best best_val_score of the completed trials against the
    number of trials spent, in the order Tune started them."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for group, records in sorted(searches.items()):
        label = records[0].get("label", group)
        best, xs, ys = None, [], []
        for r in records:
            if r["status"] == "finished" and r.get("best_val_score") is not None:
                best = r["best_val_score"] if best is None else max(best, r["best_val_score"])
            xs.append(r["index"] + 1)
            ys.append(best if best is not None else float("nan"))
        color, marker = method_style(records[0].get("method", ""))
        ax.plot(xs, ys, marker=marker, color=color, label=label)
    ax.set_xlabel("tuning trials spent")
    ax.set_ylabel("best noisy-validation score (%)")
    ax.set_title("Tuning: best score found against trials spent, per method")
    ax.legend(fontsize=7)
    return fig


def tuning_section(searches: Dict[str, List[dict]], chosen: Dict[str, dict]) -> List[str]:
    """The report's account of the searches: budget, space, what each found and what it cost."""
    spec = next((doc.get("spec") for doc in chosen.values() if doc.get("spec")), None)
    lines = ["## Tuning", ""]
    if spec:
        lines += [f"Budget: {spec['trials_per_method']} trials per method on seed {spec['seed']} ({spec['search']} search, "
                  f"{'ASHA early stopping (metric ' + spec['metric'] + ', reduction factor ' + str(spec['reduction_factor']) + ')' if spec['scheduler'] == 'asha' else 'no early stopping'}), "
                  f"chosen by the noisy-validation score alone. The tuned rows of the paper table run these settings on "
                  f"every evaluation seed.", ""]
    lines += ["| search | space | trials | stopped early | chosen settings | its best_val_score | tuning seconds |",
              "|---|---|---|---|---|---|---|"]
    for group, records in sorted(searches.items()):
        doc = chosen.get(group, {})
        space = ", ".join(f"{k} {next(iter(v))} {next(iter(v.values()))}" for k, v in (doc.get("space") or {}).items())
        settings = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                             for k, v in sorted((doc.get("settings") or {}).items())) or "(not chosen yet)"
        seconds = sum(r.get("seconds") or 0 for r in records)
        lines.append(f"| {records[0].get('label', group)} | {space or '–'} | {len(records)} | "
                     f"{sum(r['status'] == 'stopped' for r in records)} | {settings} | "
                     f"{_cell_text(doc.get('best_val_score'), _FMT)} | {seconds:.0f} |")
    lines += ["", "![Best score against trials spent](tuning.png)", ""]
    return lines


class _Fmt:
    fmt = ".2f"


_FMT = _Fmt()


def render_report(sweep: str, tables: Dict[str, pa.Table], figures, extra: List[str] = ()) -> str:
    trials = tables["trials"].to_pylist()
    statuses = defaultdict(int)
    for t in trials:
        statuses[t["status"]] += 1
    hours = sum(t["seconds"] or 0 for t in trials) / 3600
    table_md = paper.render_markdown(tables["paper_table"], tables["trials"], title="Paper table")
    lines = [f"# Sweep `{sweep}`", "",
             f"{len(trials)} trials ({', '.join(f'{n} {s}' for s, n in sorted(statuses.items())) or 'none'}); "
             f"{hours:.2f} trial-hours in all. Tables: `trials.parquet`, `rounds.parquet`, `epochs.parquet`, "
             f"`paper_table.parquet`.", ""]
    lines += ["#" + line if line.startswith("# ") else line for line in table_md.splitlines()]
    lines += [""]
    for name, caption in figures:
        lines += [f"## {name.rsplit('.', 1)[0].replace('_', ' ')}", "", f"![{caption}]({name})", "", caption, ""]
    lines += list(extra)
    listed = [c for c in columns("result") if c.label]  # the result fields the trial list shows
    lines += ["## Trials", "", "| trial | status | " + " | ".join(c.label for c in listed) + " | node |",
              "|---|---|" + "---|" * len(listed) + "---|"]
    for t in sorted(trials, key=lambda t: t["name"]):
        cells = [_cell_text(t.get(c.name), c) for c in listed]
        lines.append(f"| {t['name']} | {t['status']} | " + " | ".join(cells) + f" | {(t['node_id'] or '')[:8]} |")
    return "\n".join(lines) + "\n"


def _cell_text(value, column) -> str:
    """A trial-list cell: '–' when unknown, numbers in the column's format (whole numbers as they are)."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:{column.fmt}}"
    return str(value)
