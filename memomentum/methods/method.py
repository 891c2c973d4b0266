"""`Method`: what the registry (memomentum.METHODS) knows about a method, and `Options`, the base of a
method's own settings. Each method module ends with one `METHOD = Method(...)`; the rest of the code
(config validation, the CLI, grids, the sweep, tables, TensorBoard and figures) asks these fields
instead of testing method names.

A method owns:
  - its options: a frozen dataclass derived from `Options`, one line of unit / meaning per field and
    its range check in `check()`; `TrialConfig.options` holds the trial's values, and grid files and
    `--set` write them flat beside the shared settings (`forget_rate: 0.3`);
  - its official settings per data set (`defaults`: data set name, or "*" for all -> settings, shared
    ones such as lr as well as its options), on top of the data set's own (SPEC §4);
  - the extra fields of its records (`columns`: "epoch" / "round" / "result" -> memomentum.records.Column),
    which become table columns and TensorBoard tags;
  - its `version`: raise it whenever a change alters what the method computes (any record, any result).
    It is part of every trial's key, so the next run of a sweep re-runs exactly that method's finished
    cells; version 1 leaves the keys of sweeps made before versions existed unchanged.
"""
import dataclasses
from dataclasses import dataclass, field
from typing import Mapping, Optional, Tuple

from memomentum.records import KINDS, Column

ALL_DATASETS = "*"  # `defaults` key: settings for every data set


@dataclass(frozen=True)
class Options:
    """A method's own settings (none here). Subclasses add fields and extend `check`."""

    def __post_init__(self):
        self.check()

    def check(self) -> None:
        """Raise memomentum.errors.ConfigError for a value out of range."""

    def check_config(self, cfg) -> None:
        """Raise ConfigError where the options do not fit the trial's shared settings (e.g. its epochs)."""

    @classmethod
    def field_types(cls) -> Mapping[str, type]:
        return {f.name: f.type for f in dataclasses.fields(cls)}

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass(frozen=True)
class Method:
    name: str
    summary: str  # one line: what it is and where it comes from
    trial: type  # its memomentum.trial.Trial subclass
    published: Optional[str] = None  # its row name in the published tables (SPEC §5), if it has one
    rounds: bool = False  # extracts a new training set round by round (confident-set figures)
    data: Tuple[str, ...] = ("memory",)  # data kinds it runs on: "memory" (tensors), "stream" (files)
    needs_clean_val: bool = False  # selects on a clean validation set (data sets that ship one)
    networks: int = 1  # networks trained side by side
    epoch_cost: float = 0.0  # cost of one of its epochs in plain CE epochs, for the dry run (0: `networks`)
    min_epochs: int = 1  # the least epochs_per_stage it can run with
    options: type = Options  # its settings: a frozen Options subclass
    defaults: Mapping[str, Mapping[str, object]] = field(default_factory=dict)  # data set or "*" -> official settings
    provenance: Mapping[str, str] = field(default_factory=dict)  # data set or "*" -> where its settings come from;
    #                                                             "(P) ..." marks the project's own choices
    quick: Mapping[str, object] = field(default_factory=dict)  # settings for a run of a few epochs (tests, smoke runs)
    columns: Mapping[str, Tuple[Column, ...]] = field(default_factory=dict)  # record kind -> its extra fields
    version: int = 1  # raised whenever a change alters what the method computes

    def __post_init__(self):
        unknown = set(self.columns) - set(KINDS)
        if unknown or not issubclass(self.options, Options) or self.version < 1:
            raise ValueError(f"method {self.name}: columns keyed by {sorted(unknown)} (use {KINDS}), options "
                             f"{self.options} or version {self.version} are not valid")

    def supports(self, info) -> bool:
        """Whether the method runs on data set `info` (a memomentum.data.DatasetInfo)."""
        return ("stream" if info.streams else "memory") in self.data and (info.clean_val or not self.needs_clean_val)

    def defaults_for(self, dataset: str) -> dict:
        """Its official settings on `dataset` (shared fields and options alike)."""
        return {**self.defaults.get(ALL_DATASETS, {}), **self.defaults.get(dataset, {})}

    def epochs(self, cfg) -> Tuple[float, int]:
        """(typical, most) epochs of one trial, for the dry run's cost estimate."""
        return self.trial.expected_epochs(cfg)

    def cost(self) -> float:
        """One of its epochs in plain cross-entropy epochs (forward + backward of every example = 1)."""
        return self.epoch_cost or float(self.networks)
