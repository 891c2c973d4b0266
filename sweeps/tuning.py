"""Fair tuning: every method's settings searched with the same budget on the NOISY validation set (Ray Tune's search
and ASHA), then its best settings evaluated on the grid's seeds beside its reference settings.

    tune:
      trials_per_method: 8          # the budget: the same number of trials for every method (required)
      hours_per_method: 0           # optional: also stop a method's search after this many hours of wall time
      seed: 1000                    # the tuning trials' seed: its noisy labels and split, never an evaluation seed
      search: random                # random (Tune's, seeded) or optuna (TPE, Tune's OptunaSearch; pip install optuna)
      scheduler: asha               # asha (early stopping) or none
      metric: val_score             # ASHA's: val_score (the best epoch score so far) or best_val_score
      grace_period: 0               # epochs before ASHA may stop a trial (0: per method, from its schedule)
      reduction_factor: 3           # ASHA keeps the best 1 / reduction_factor at each rung
      max_concurrent: 0             # tuning trials at once per method (0: as many as fit)
      space:                        # per method, or "*" for every method that has the setting
        "*": {lr: {loguniform: [0.001, 0.1]}}
        coteaching: {forget_rate: {uniform: [0.2, 0.6]}}
        sft: {sft_warm_up: {randint: [5, 20]}}           # whole numbers, both ends included

Distributions: {choice: [v, ...]}, {uniform: [lo, hi]}, {loguniform: [lo, hi]}, {randint: [lo, hi]},
{lograndint: [lo, hi]}. The random search is seeded with the tuning seed, so every method's search draws the same
sequence of random numbers (common random numbers: the same budget, and the same luck). For each data set x noise setting x method of the grid (a "group"), one Tune experiment
samples `trials_per_method` settings and runs each as a trial on the tuning seed; no decision reads a clean label
or the test set. ASHA compares trials by the running best noisy-validation score of their epochs so far at each rung
(`metric: val_score`); Me-Momentum's first stage A is not stopped before its slack rule can end it (grace period 21
epochs), and its stage-A scores count toward the running best, as they are noisy-validation scores of the same
network; a method with a warm-up (SFT, SELFIE, PES's T1, DMI's CE round, Co-teaching's and JoCoR's forget-rate
ramp) is never stopped before it ends. The chosen settings are those of the completed trial (not stopped early)
with the best `best_val_score`, the score of the model the method reports (ties: the earlier trial). They become
the method's "tuned" cells on every evaluation seed (the grid's `seeds`), beside its reference cells.

Resume: each group's Tune experiment lives at <sweep>/tune/tuning-<group>/ and is saved at least every second while
it runs; running the same command again restores it (Tune's searcher and scheduler state: finished trials are kept,
the search continues), and a finished group is never searched again (its choice is <sweep>/tuning/<group>/chosen.json).
"""
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

from memomentum.config import EXECUTION_ONLY, TrialConfig, field_types, not_a_field
from memomentum.errors import ConfigError, short, unknown
from memomentum.methods import METHODS

DISTRIBUTIONS = ("choice", "uniform", "loguniform", "randint", "lograndint")
SEARCHES = ("random", "optuna")
SCHEDULERS = ("asha", "none")
METRICS = {"val_score": "tune_score", "best_val_score": "best_val_score"}  # the grid's name -> the reported metric
KEYS = ("trials_per_method", "hours_per_method", "seed", "search", "scheduler", "metric", "grace_period",
        "reduction_factor", "max_concurrent", "space")
ALL = "*"
TUNED = "tuned (same budget, noisy validation)"  # the label of the tuned rows in the tables
FOLDER = "tuning"  # under the sweep folder: <group>/records/*.json, <group>/chosen.json; trials/ (tuning trials)
MAX_TRIALS = 10_000


@dataclass(frozen=True)
class Dist:
    kind: str
    args: tuple

    def domain(self):
        """Ray Tune's search domain."""
        from ray import tune

        if self.kind == "choice":
            return tune.choice(list(self.args))
        lo, hi = self.args
        return {"uniform": lambda: tune.uniform(lo, hi), "loguniform": lambda: tune.loguniform(lo, hi),
                "randint": lambda: tune.randint(lo, hi + 1), "lograndint": lambda: tune.lograndint(lo, hi + 1)}[
            self.kind]()

    def extremes(self) -> list:
        """The values whose acceptance by the method stands for the whole range."""
        return list(self.args)

    def to_raw(self):
        return {self.kind: list(self.args)}


@dataclass(frozen=True)
class TuneSpec:
    trials_per_method: int
    hours_per_method: float
    seed: int
    search: str
    scheduler: str
    metric: str
    grace_period: int
    reduction_factor: int
    max_concurrent: int
    space: Dict[str, Dict[str, Dist]]  # method or "*" -> setting -> distribution

    def for_method(self, method: str) -> Dict[str, Dist]:
        own = field_types(method)
        return {**{k: d for k, d in self.space.get(ALL, {}).items() if k in own}, **self.space.get(method, {})}

    def raw(self) -> dict:
        return {"trials_per_method": self.trials_per_method, "hours_per_method": self.hours_per_method,
                "seed": self.seed, "search": self.search, "scheduler": self.scheduler, "metric": self.metric,
                "grace_period": self.grace_period, "reduction_factor": self.reduction_factor,
                "space": {m: {k: d.to_raw() for k, d in s.items()} for m, s in self.space.items()}}


def parse_tune(raw, methods: List[str], seeds: List[int], base: Callable[[str, dict], None], fail) -> TuneSpec:
    """The grid's `tune:` section, checked in full (one line per mistake, via `fail`). `base(method, values)` builds a
    trial config of that method with `values` on top of its grid settings (raises ConfigError for a value it refuses)."""
    if not isinstance(raw, dict):
        fail("'tune' must be a mapping with trials_per_method and space (see sweeps/tuning.py)")
    for key in raw:
        if key not in KEYS:
            fail(f"tune: {unknown('setting', key, KEYS)}")

    def whole(key, default, low, high):
        value = raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            fail(f"tune.{key} = {short(value)} must be a whole number from {low} to {high:,}")
        return value

    if "trials_per_method" not in raw:
        fail("tune: give trials_per_method, the budget of trials every method gets (e.g. 8)")
    trials = whole("trials_per_method", 0, 1, MAX_TRIALS)
    hours = raw.get("hours_per_method", 0)
    if isinstance(hours, bool) or not isinstance(hours, (int, float)) or not 0 <= hours < 1e4 or hours != hours:
        fail(f"tune.hours_per_method = {short(hours)} must be a number of hours, 0 for none")
    seed = whole("seed", 1000, 0, 2 ** 32 - 1)
    if seed in seeds:
        fail(f"tune.seed {seed} is also an evaluation seed (seeds {seeds}); tuning must use a seed of its own")
    search, scheduler, metric = (raw.get("search", "random"), raw.get("scheduler", "asha"),
                                 raw.get("metric", "val_score"))
    for name, value, valid in (("search", search, SEARCHES), ("scheduler", scheduler, SCHEDULERS),
                               ("metric", metric, tuple(METRICS))):
        if value not in valid:
            fail(f"tune.{name}: {unknown(name, value, valid)}")
    if search == "optuna":
        try:
            import optuna  # noqa: F401
        except ImportError:
            fail("tune.search optuna needs Optuna: pip install optuna, or use search: random")
    grace = whole("grace_period", 0, 0, 100_000)
    factor = whole("reduction_factor", 3, 2, 100)
    concurrent = whole("max_concurrent", 0, 0, 10_000)
    space_raw = raw.get("space")
    if not isinstance(space_raw, dict) or not space_raw:
        fail("tune.space must map methods (or '*') to the settings to search, e.g. {'*': {lr: {loguniform: [0.001, "
             "0.1]}}}")
    space = {}
    for owner, settings in space_raw.items():
        if owner != ALL and owner not in methods:
            fail(f"tune.space names {short(owner)}, which is not one of the grid's methods {methods} (or '*')")
        if not isinstance(settings, dict) or not settings:
            fail(f"tune.space.{owner} must map settings to distributions, e.g. {{lr: {{loguniform: [0.001, 0.1]}}}}")
        space[owner] = {key: _dist(f"tune.space.{owner}.{key}", owner, key, value, methods, fail)
                        for key, value in settings.items()}
    spec = TuneSpec(trials, float(hours), seed, search, scheduler, metric, grace, factor, concurrent, space)
    for method in methods:
        searched = spec.for_method(method)
        if not searched:
            fail(f"tune.space gives {method} nothing to search; add settings for it (or '*' ones it has)")
        for key, dist in searched.items():  # every end of every range must be a value the method accepts
            for value in dist.extremes():
                try:
                    base(method, {key: value})
                except ConfigError as exc:
                    fail(f"tune.space: {method} refuses {key}={short(value)} at the edge of its range ({exc})")
    return spec


def _dist(where: str, owner: str, key: str, value, methods: List[str], fail) -> Dist:
    kinds = {k: t for m in (methods if owner == ALL else [owner]) for k, t in field_types(m).items()}
    if key not in kinds:
        fail(f"{where}: {not_a_field(key, owner) if owner != ALL else unknown('setting', key, kinds)}")
    if key in ("dataset", "noise_type", "noise_rate", "noise_label", "seed", "method", "data_path", "device"):
        fail(f"{where}: {key} is not a setting to tune (a grid axis or where the trial runs)")
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in DISTRIBUTIONS:
        fail(f"{where} must be one distribution: {{choice: [...]}}, {{uniform: [lo, hi]}}, {{loguniform: [lo, hi]}}, "
             f"{{randint: [lo, hi]}} or {{lograndint: [lo, hi]}}")
    kind, args = next(iter(value.items()))
    kind_type = kinds[key]
    if kind == "choice":
        if not isinstance(args, list) or not args:
            fail(f"{where}: choice needs a non-empty list of values")
        return Dist(kind, tuple(tuple(a) if isinstance(a, list) else a for a in args))
    if kind_type not in (int, float):
        fail(f"{where}: {key} is not a number; search it with choice: [...]")
    if not isinstance(args, list) or len(args) != 2 or not all(
            isinstance(a, (int, float)) and not isinstance(a, bool) and math.isfinite(a) for a in args):
        fail(f"{where}: {kind} needs [low, high], two finite numbers")
    lo, hi = args
    if not lo < hi:
        fail(f"{where}: the range [{lo}, {hi}] is empty or inverted; give low < high")
    if kind.startswith("log") and lo <= 0:
        fail(f"{where}: {kind} needs a positive low end, got {lo}")
    if kind in ("uniform", "loguniform") and kind_type is int:
        fail(f"{where}: {key} must be a whole number; search it with randint or lograndint")
    if kind in ("randint", "lograndint") and not all(isinstance(a, int) for a in args):
        fail(f"{where}: {kind} needs whole-number ends")
    return Dist(kind, (lo, hi))


# --- groups: one search per data set x noise setting x method --------------------------------------------------
@dataclass(frozen=True)
class Group:
    key: str  # names its Tune experiment and its folder
    label: str  # e.g. "digits pairflip 0.4 coteaching"
    method: str
    base: dict  # the trial config (flat) every tuning trial starts from: the reference cell's, on the tuning seed
    space: Dict[str, Dist]
    cpu: float
    gpu: float
    max_t: int  # the most epochs a trial can report
    grace: int  # epochs before ASHA may stop a trial


def groups(grid) -> List[Group]:
    """The searches of a grid with a `tune:` section, in the grid's order."""
    spec = grid.tune
    out, seen = [], set()
    for cell in grid.cells:
        c = cell.config
        ident = (c.dataset, c.noise_type, c.noise_rate, c.noise_label, c.method)
        if ident in seen:
            continue
        seen.add(ident)
        base = {**c.to_dict(), "seed": spec.seed, "export": False}
        space = spec.for_method(c.method)
        digest = hashlib.sha1(json.dumps({"base": TrialConfig.from_dict(base).config_hash(), "tune": spec.raw(),
                                          "space": {k: d.to_raw() for k, d in space.items()}},
                                         sort_keys=True, default=str).encode()).hexdigest()[:8]
        setting = c.noise_label or f"{c.noise_rate:g}"
        label = f"{c.dataset}-{c.noise_type}-{setting}-{c.method}"
        typical, worst = METHODS[c.method].epochs(c)
        # past the warm-up of any setting the search may sample (a sampled warm-up may be longer than the reference's)
        grace = spec.grace_period or max([grace_period(c)] + [grace_period(trial_of(base, {k: v})) for k, d in
                                                              space.items() for v in d.extremes()])
        out.append(Group(f"{label}-{digest}", label, c.method, base, space, cell.cpu, cell.gpu, max(int(worst), 1),
                         max(1, min(grace, int(worst)))))
    return out


def grace_period(cfg) -> int:
    """Epochs before ASHA may stop a trial of `cfg`, from its method's schedule: past its warm-up (a phase whose
    scores say nothing yet of the method), else a tenth of its typical epochs."""
    o = cfg.options.to_dict()
    warm = {"memomentum": 21, "coteaching": o.get("num_gradual", 0), "jocor": o.get("num_gradual", 0),
            "sft": o.get("sft_warm_up", 0), "selfie": o.get("selfie_warm_up", 0), "pes": o.get("t1", 0) + 1,
            "dmi": cfg.epochs_per_stage + 1, "peer": o.get("peer_warmup", 0)}.get(cfg.method, 0)
    typical, _ = METHODS[cfg.method].epochs(cfg)
    return max(int(warm) + 1, int(round(0.1 * typical)), 1)


def comparable(config: dict) -> dict:
    """What a config computes, as JSON has it (tuples as lists): without the seed and what only says where it runs.
    A search's chosen config and a finished trial's config compare equal through it."""
    return json.loads(json.dumps({k: v for k, v in config.items() if k not in EXECUTION_ONLY and k != "seed"},
                                 default=list))


def trial_of(group_base: dict, sampled: dict) -> TrialConfig:
    """A tuning trial's config: its group's base with the sampled settings (tuples back where a list came)."""
    return TrialConfig.from_dict({**group_base, **{k: tuple(v) if isinstance(v, list) else v
                                                   for k, v in sampled.items()}})


# --- what a search leaves: records and its choice ----------------------------------------------------------------
def record_path(group: str, name: str) -> Tuple[str, ...]:
    return FOLDER, group, "records", f"{name}.json"


def chosen_path(group: str) -> Tuple[str, ...]:
    return FOLDER, group, "chosen.json"


def read_records(store, sweep: str, group: str) -> List[dict]:
    out = []
    for name in store.listdir(sweep, FOLDER, group, "records"):
        try:
            doc = json.loads(store.read(sweep, *record_path(group, name[:-len(".json")])) or b"")
        except ValueError:
            continue
        if isinstance(doc, dict) and "index" in doc:
            out.append(doc)
    return sorted(out, key=lambda r: r["index"])


def read_chosen(store, sweep: str) -> Dict[str, dict]:
    """group -> its choice, for every finished search of the sweep."""
    out = {}
    for group in store.listdir(sweep, FOLDER):
        raw = store.read(sweep, *chosen_path(group))
        if raw is None:
            continue
        try:
            doc = json.loads(raw)
        except ValueError:
            continue
        if isinstance(doc, dict) and isinstance(doc.get("settings"), dict):
            out[group] = doc
    return out


def latest(chosen: Dict[str, dict]) -> Dict[str, dict]:
    """Of the choices of a sweep's searches, the newest per data set x noise setting x method (a grid whose `tune:`
    section changed searched again under new group keys; the earlier choices stay in the folder, unused)."""
    newest = {}
    for group, doc in chosen.items():
        known = newest.get(doc.get("label"))
        if known is None or (doc.get("chosen_at") or 0) > (known[1].get("chosen_at") or 0):
            newest[doc.get("label")] = (group, doc)
    return dict(newest.values())


def choose(records: List[dict]) -> Optional[dict]:
    """The record whose settings a search chooses: the completed trial (not stopped early) with the best
    best_val_score, the earlier one on a tie; None if none completed."""
    done = [r for r in records if r["status"] == "finished" and r.get("best_val_score") is not None]
    return max(done, key=lambda r: (r["best_val_score"], -r["index"])) if done else None


def tuned_cells(grid, chosen: Dict[str, dict]) -> List[tuple]:
    """The evaluation cells of the finished searches, as (reference cell, its config with the chosen settings): each
    group's reference cells (every evaluation seed) with its choice."""
    by_ident = {}
    for group in groups(grid):
        doc = chosen.get(group.key)
        if doc is not None:
            by_ident[group.label] = doc["settings"]
    out = []
    for cell in grid.cells:
        c = cell.config
        label = f"{c.dataset}-{c.noise_type}-{c.noise_label or f'{c.noise_rate:g}'}-{c.method}"
        if label in by_ident:
            out.append((cell, trial_of(c.to_dict(), by_ident[label])))
    return out


__all__ = ["TuneSpec", "Dist", "Group", "parse_tune", "groups", "grace_period", "trial_of", "choose", "tuned_cells",
           "read_records", "read_chosen", "latest", "record_path", "chosen_path", "TUNED", "FOLDER", "METRICS"]
