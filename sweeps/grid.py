"""Grid files: YAML -> a validated list of cells, before Ray starts.

    name: quick                      # the sweep's folder under the storage
    description: ...                 # optional, free text
    datasets: [digits]               # or your own images: [{name: pets, path: /data/pets, labels: noisy}]
    noise:                           # one entry per noise type
      - {type: symmetric, rates: [0.2, 0.4]}
      - {type: human, labels: [aggre, worst]}   # CIFAR-N label sets (cifar10, cifar100)
      - {type: real}                 # labels noisy as given (clothing1m; your own images, unless labels: clean)
    seeds: [1, 2]                    # whole numbers
    methods: [memomentum, ce]
    resources:                       # per data set, or `default`; fractions share a GPU
      default: {cpu: 1, gpu: 0}
    config: {epochs_per_stage: 100}  # any config field, for every trial that has it
    dataset_config:                  # optional, per data set, on top of `config`
      mnist: {batch_size: 128}
    method_config:                   # optional, per method, on top of both
      coteaching: {epochs_per_stage: 100, forget_rate: 0.3}
    tune: {trials_per_method: 8, space: {...}}   # optional: search every method's settings (sweeps/tuning.py)
    storage: runs                    # optional; --storage overrides
    data_root: ../shared/data        # optional; --data-root overrides

Every cell is built into a memomentum TrialConfig here, so a bad field, type or range is reported
with the grid file's name before anything is scheduled. A setting in `config` or `dataset_config`
that belongs to some methods' options (e.g. `forget_rate`) goes to the trials of those methods only: it
is never stored on, and never makes a variant of, a trial whose method does not have it. In
`method_config` a setting its method does not have is an error.
"""
import math
import os
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import yaml

from memomentum.cifar_n import HUMAN
from memomentum.config import REAL_NOISE, SEED_MAX, ConfigError, TrialConfig, _check_type, field_types, not_a_field
from memomentum.data import DATASETS, info as dataset_info
from memomentum.errors import DataError, short, unknown
from memomentum.methods import METHODS
from memomentum.noise import NOISE_TYPES

TOP_KEYS = ("name", "description", "datasets", "noise", "seeds", "methods", "resources", "config",
            "dataset_config", "method_config", "storage", "data_root", "tune")
AXIS_FIELDS = ("dataset", "noise_type", "noise_rate", "noise_label", "seed", "method")
DEFAULT_RESOURCES = {"cpu": 1.0, "gpu": 0.0}


class GridError(ValueError):
    """A mistake in a grid file; the message names the file, the key and the fix."""


class StrictLoader(yaml.SafeLoader):
    """yaml.safe_load without aliases: `*name` could expand a few lines into gigabytes (an alias
    bomb), and no grid needs one."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.constructor.ConstructorError(
                None, None, "grid files may not use YAML aliases (*name); write the values out", mark)
        return super().compose_node(parent, index)


# YAML 1.1 (PyYAML) reads a number in exponent form without a dot, 1e-06, as a string; YAML 1.2 and every other
# tool (and --list-methods, which prints such values) read it as a number: so does a grid
StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
                                   list("-+0123456789"))


def read_yaml(text) -> Any:
    """Parse grid YAML (a str or a stream) with the StrictLoader."""
    return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - StrictLoader is a SafeLoader


@dataclass(frozen=True)
class Cell:
    config: TrialConfig
    cpu: float
    gpu: float
    phase: str = "reference"  # reference settings, or "tuned": the settings a `tune:` search chose

    @property
    def name(self) -> str:
        return self.config.trial_name()

    @property
    def key(self) -> str:
        return self.config.trial_key()

    def to_dict(self) -> dict:
        return {"key": self.key, "name": self.name, "cpu": self.cpu, "gpu": self.gpu, "phase": self.phase,
                "trial": self.config.to_dict()}


@dataclass(frozen=True)
class Grid:
    name: str
    description: str
    cells: Tuple[Cell, ...]
    storage: str
    data_root: str
    source: str  # the file it came from
    raw: dict  # the parsed YAML, snapshot into the sweep folder
    tune: Optional[object] = None  # its `tune:` section (sweeps/tuning.py TuneSpec), None without one

    @property
    def datasets(self) -> List[str]:
        return sorted({c.config.dataset for c in self.cells})


def load_grid(path: str, storage: Optional[str] = None, data_root: Optional[str] = None) -> Grid:
    try:
        with open(path) as fh:
            raw = read_yaml(fh)
    except FileNotFoundError:
        raise GridError(f"grid file {path} not found; pass a YAML grid such as grids/quick.yaml") from None
    except IsADirectoryError:
        raise GridError(f"{path} is a folder; pass a YAML grid file such as grids/quick.yaml") from None
    except UnicodeDecodeError:
        raise GridError(f"{path} is not a text file (not UTF-8); pass a YAML grid file such as "
                        f"grids/quick.yaml") from None
    except OSError as exc:
        raise GridError(f"cannot read grid file {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise GridError(f"{path} is not valid YAML{at}: {problem[:200]}; fix it and run again") from None
    return parse_grid(raw, path, storage=storage, data_root=data_root)


def parse_grid(raw: Any, source: str = "<grid>", storage: Optional[str] = None,
               data_root: Optional[str] = None) -> Grid:
    def fail(msg: str):
        raise GridError(f"{source}: {msg}")

    if not isinstance(raw, dict):
        fail("a grid must be a YAML mapping with keys such as name, datasets, noise, seeds, methods")
    for key in raw:
        if key not in TOP_KEYS:
            fail(unknown("top-level key", key, TOP_KEYS))
    name = raw.get("name")
    # the sweep's folder under the storage: one plain path component, never '..', '/' or empty
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", name):
        fail(f"name {short(name)} must be a word of 1 to 100 letters, digits, '.', '_' or '-' (starting with "
             f"a letter or digit); it names the sweep's folder under the storage")

    datasets, own = _datasets(raw, fail)
    for d in datasets:
        if d not in DATASETS and d not in own:
            fail(unknown("dataset", d, DATASETS) + "; or give your own images as {name: NAME, path: PATH}")
    methods = _axis(raw, "methods", str, fail)
    for m in methods:
        if m not in METHODS:
            fail(unknown("method", m, METHODS))
    seeds = _axis(raw, "seeds", int, fail)
    for s in seeds:
        if not 0 <= s <= SEED_MAX:
            fail(f"'seeds' holds {short(s)}; every seed must be a whole number in 0 .. {SEED_MAX}")
    noise = _noise(raw.get("noise"), fail)

    config = _mapping(raw, "config", fail)
    for axis in AXIS_FIELDS:
        if axis in config:
            fail(f"config sets {axis!r}, which is a grid axis; list it under "
                 f"{'noise' if axis.startswith('noise') else axis + 's'} instead")
    dataset_config = _part_config(raw, "dataset_config", datasets, fail)
    method_config = _part_config(raw, "method_config", methods, fail)
    for dataset, settings in own.items():  # a data set given by a path: its entry's settings, under dataset_config's
        dataset_config[dataset] = {**settings, **dataset_config.get(dataset, {})}
    for where, values in [("config", config)] + [(f"dataset_config.{d}", v) for d, v in dataset_config.items()]:
        for key in values:  # a setting of methods this grid does not run is kept (the grid may grow), never applied
            if key not in field_types():
                fail(f"{where}: {unknown('config field', key, field_types())}")
    for method, values in method_config.items():
        for key in values:
            if key not in field_types(method):
                fail(f"method_config.{method}: {not_a_field(key, method)}")
    resources = _resources(raw, datasets, fail)

    root = data_root if data_root is not None else raw.get("data_root", "")
    if not isinstance(root, str):
        fail(f"data_root must be a path, got {short(root)}")
    root = os.path.abspath(os.path.expanduser(root)) if root else ""
    store = storage if storage is not None else raw.get("storage", "runs")
    if not isinstance(store, str) or not store:
        fail(f"storage must be a path or URI, got {short(store)}")

    for dataset in own:  # read, checked and decoded once here (cached on disk): a bad file stops the run before Ray
        values = {**config, **dataset_config[dataset]}
        try:
            from memomentum import owndata

            owndata.register_config(dataset, {k: _check_type(k, v, field_types()[k]) for k, v in values.items()
                                              if k in field_types()}, DATASETS)
        except (ConfigError, DataError) as exc:
            fail(f"datasets entry {dataset}: {exc}")

    # Each data set takes the noise entries and methods that fit it: `real` noise for data collected with
    # noisy labels (Clothing1M), the synthetic types for the rest; the methods that run on its kind of
    # data (METHODS[m].supports). So one grid can hold both kinds.
    for kind, _, label in noise:
        if kind == HUMAN and not any(d.human_noise is not None and label in d.human_noise.labels
                                     for d in map(dataset_info, datasets)):
            having = {n: list(d.human_noise.labels) for n, d in DATASETS.items() if d.human_noise is not None}
            fail(f"human label set {short(label)} belongs to none of the datasets {datasets}; label sets: {having}")
    combos = []
    for dataset in datasets:
        info = dataset_info(dataset)
        human = info.human_noise.labels if info.human_noise is not None else {}
        fitting = [n for n in noise if (n[0] == REAL_NOISE) == info.real_noise and (n[0] != HUMAN or n[2] in human)]
        if not fitting:
            fail(f"dataset {dataset} has no fitting noise entry; add "
                 f"{'{type: real}' if info.real_noise else '{type: symmetric, rates: [...]}'} to 'noise'")
        runs = [m for m in methods if METHODS[m].supports(info)]
        if not runs:
            fail(f"none of the methods {methods} runs on {dataset}; add one of "
                 f"{sorted(m for m, spec in METHODS.items() if spec.supports(info))}")
        combos += [(dataset, n, seed, m) for n in fitting for seed in seeds for m in runs]
    for m in methods:
        if not any(METHODS[m].supports(dataset_info(d)) for d in datasets):
            fail(f"method {m} runs on none of the datasets {datasets}; remove it or add a data set it runs on")
    cells, seen = [], set()
    for dataset, (noise_type, rate, label), seed, method in combos:
        own = field_types(method)  # shared settings for everyone; options only for the methods that have them
        shared = {k: v for k, v in {**config, **dataset_config.get(dataset, {})}.items() if k in own}
        values = {**shared, **method_config.get(method, {}), "dataset": dataset, "noise_type": noise_type,
                  "noise_rate": rate, "seed": seed, "method": method}
        if label:
            values["noise_label"] = label
        if root:
            values["data_root"] = root
        try:
            cfg = TrialConfig.from_dict(values)
        except ConfigError as exc:
            fail(f"config: {exc}")
        cell = Cell(cfg, *resources[dataset])
        if cfg.device.startswith("cuda") and cell.gpu == 0:
            fail(f"config device={cfg.device!r} but resources give {dataset} trials no GPU; set "
                 f"resources.{dataset}.gpu (e.g. 1, or 0.25 to share) or use device: auto")
        if cell.key in seen:
            fail(f"cell {cell.name} appears twice; remove the repeated seed or rate")
        seen.add(cell.key)
        cells.append(cell)
    spec = None
    if raw.get("tune") is not None:
        from sweeps import tuning

        first = {c.config.method: c.config for c in reversed(cells)}

        def base(method, values):
            TrialConfig.from_dict({**first[method].to_dict(), **values})

        spec = tuning.parse_tune(raw["tune"], [m for m in methods if m in first], seeds, base, fail)
    return Grid(name, str(raw.get("description", "")), tuple(cells), store, root, source, raw, spec)


def identity(raw: dict) -> dict:
    """What makes two grids of one name the same sweep: the settings every trial shares. Axes may
    grow (more seeds, rates, data sets) and resources may change; execution-only fields don't count."""
    from memomentum.config import EXECUTION_ONLY

    def strip(values):
        return {k: v for k, v in (values or {}).items() if k not in EXECUTION_ONLY}

    return {"config": strip(raw.get("config")),
            **{part: {name: strip(v) for name, v in (raw.get(part) or {}).items()}
               for part in ("dataset_config", "method_config")}}


OWN_KEYS = ("name", "path", "labels")  # an entry of `datasets` that gives a data set by its path; any config field too


def _datasets(raw: dict, fail) -> Tuple[List[str], Dict[str, dict]]:
    """(the data set names, {name: the settings of each data set given by a path}). An entry is a built-in data set's
    name, or {name: NAME, path: PATH, labels: noisy|clean, <config field>: value, ...} (path relative to where the
    command runs)."""
    entries = raw.get("datasets")
    if not isinstance(entries, list) or not entries:
        fail("'datasets' must be a non-empty list of data set names, or {name: NAME, path: PATH} entries")
    names, own = [], {}
    for entry in entries:
        if isinstance(entry, str):
            names.append(entry)
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not isinstance(entry.get("path"), str):
            fail(f"datasets entry {short(entry)} must be a data set name, or a mapping with a name and a path, e.g. "
                 f"{{name: pets, path: /data/pets}}")
        name = entry["name"]
        settings = {}
        for key, value in entry.items():
            if key == "labels":
                if value not in ("noisy", "clean"):
                    fail(f"datasets entry {name}: labels {short(value)} must be noisy (the labels are the noise) or "
                         f"clean (synthetic noise goes on top)")
                settings["labels_clean"] = value == "clean"
            elif key == "path":
                settings["data_path"] = os.path.abspath(os.path.expanduser(value))
            elif key != "name":
                if key not in field_types() or key in AXIS_FIELDS:
                    fail(f"datasets entry {name}: {unknown('setting', key, OWN_KEYS + tuple(field_types()))}")
                settings[key] = value
        own[name] = settings
        names.append(name)
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        fail(f"'datasets' holds {repeated[0]!r} more than once; list each data set once")
    return names, own


def _axis(raw: dict, key: str, kind: type, fail) -> list:
    values = raw.get(key)
    if values is None:
        fail(f"missing {key!r}; give a non-empty list")
    if not isinstance(values, list) or not values:
        fail(f"{key!r} must be a non-empty list, got {short(values)}")
    for v in values:
        if not isinstance(v, kind) or isinstance(v, bool):
            fail(f"{key!r} holds {short(v)}; every entry must be {'a whole number' if kind is int else 'a name'}")
    repeated = sorted({short(v) for v in values if values.count(v) > 1})
    if repeated:
        fail(f"{key!r} holds {repeated[0]} more than once; list each value once")
    return values


def _noise(entries: Any, fail) -> List[Tuple[str, float, str]]:
    """(type, rate, human label set or '') per noise setting of the grid."""
    if not isinstance(entries, list) or not entries:
        fail("'noise' must be a non-empty list of {type: T, rates: [...]} entries")
    out = []
    for entry in entries:
        if not isinstance(entry, dict) or "type" not in entry or set(entry) - {"type", "rates", "labels"}:
            fail(f"noise entry {short(entry)} must be {{type: symmetric|pairflip|instance, rates: [...]}}, "
                 f"{{type: {HUMAN}, labels: [...]}} or {{type: {REAL_NOISE}}}")
        kind = entry["type"]
        if kind == REAL_NOISE:  # labels noisy as collected (Clothing1M): no rate to set
            out.append((kind, 0.0, ""))
            continue
        if kind == HUMAN:  # CIFAR-N label sets: a name instead of a rate
            labels = entry.get("labels")
            if "rates" in entry or not isinstance(labels, list) or not labels or \
                    not all(isinstance(x, str) for x in labels):
                fail(f"noise type {HUMAN}: give 'labels', a non-empty list of label-set names such as "
                     f"[aggre, worst], and no rates")
            for label in labels:
                if (kind, 0.0, label) in out:
                    fail(f"noise type {HUMAN}: label set {short(label)} is listed twice; list each once")
                out.append((kind, 0.0, label))
            continue
        if kind not in NOISE_TYPES:
            fail(unknown("noise type", kind, NOISE_TYPES + (HUMAN, REAL_NOISE)))
        rates = entry.get("rates")
        if "labels" in entry or not isinstance(rates, list) or not rates:
            fail(f"noise type {kind}: 'rates' must be a non-empty list of numbers in [0, 1)")
        for r in rates:
            if isinstance(r, bool) or not isinstance(r, (int, float)):
                fail(f"noise type {kind}: rate {short(r)} is not a number; write e.g. 0.2 for 20%")
            if not 0 <= r < 1:  # NaN fails this too
                fail(f"noise type {kind}: rate {short(r)} is outside [0, 1); write e.g. 0.2 for 20%")
            if (kind, float(r), "") in out:
                fail(f"noise type {kind}: rate {short(r)} is listed twice; list each rate once")
            out.append((kind, float(r), ""))
    return out


def _part_config(raw: dict, key: str, names: List[str], fail) -> Dict[str, dict]:
    """`dataset_config` / `method_config`: per data set / method, config fields on top of `config`."""
    part = _mapping(raw, key, fail)
    for name, extra in part.items():
        if name not in names:
            fail(f"{key} names {short(name)}, which is not in {key.split('_')[0]}s {names}")
        if not isinstance(extra, dict):
            fail(f"{key}.{name} must be a mapping of config fields")
        for axis in AXIS_FIELDS:
            if axis in extra:
                fail(f"{key}.{name} sets {axis!r}, which is a grid axis")
    return part


def _mapping(raw: dict, key: str, fail) -> Dict[str, Any]:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        fail(f"{key!r} must be a mapping, got {short(value)}")
    return value


def _resources(raw: dict, datasets: List[str], fail) -> Dict[str, Tuple[float, float]]:
    spec = _mapping(raw, "resources", fail)
    for key, value in spec.items():
        if key != "default" and key not in datasets:
            fail(f"resources names {short(key)}, which is neither 'default' nor one of the datasets {datasets}")
        if not isinstance(value, dict) or set(value) - {"cpu", "gpu"}:
            fail(f"resources.{key} must be a mapping with cpu and/or gpu, got {short(value)}")
        for k, v in value.items():
            if (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0
                    or (k == "cpu" and v == 0) or v > 1024):
                fail(f"resources.{key}.{k} = {short(v)}; use a positive number (fractions share a device)")
    base = {**DEFAULT_RESOURCES, **spec.get("default", {})}
    out = {}
    for d in datasets:
        merged = {**base, **spec.get(d, {})}
        out[d] = (float(merged["cpu"]), float(merged["gpu"]))
    return out
