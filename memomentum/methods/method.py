"""`Method`: what the registry (memomentum.METHODS) knows about a method. Each method module ends with
one `METHOD = Method(...)`; the rest of the code (config validation, the CLI, the sweep, the tables and
figures) asks these fields instead of testing method names."""
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, Tuple


def _no_defaults(dataset: str, noise_type: str, noise_rate: float) -> Mapping[str, object]:
    return {}


@dataclass(frozen=True)
class Method:
    name: str
    summary: str  # one line: what it is and where it comes from
    trial: type  # its memomentum.trial.Trial subclass
    published: Optional[str] = None  # its row name in the published tables (SPEC §5), if it has one
    rounds: bool = False  # extracts a new training set round by round (confident-set figures)
    data: Tuple[str, ...] = ("memory",)  # data kinds it runs on: "memory" (tensors), "stream" (files)
    needs_clean_val: bool = False  # selects on a clean validation set (data sets that ship one)
    networks: int = 1  # networks trained side by side (cost of an epoch, in single-network epochs)
    min_epochs: int = 1  # the least epochs_per_stage it can run with
    defaults: Callable[[str, str, float], Mapping[str, object]] = field(default=_no_defaults)
    #           (dataset, noise_type, noise_rate) -> its official settings where they differ from SPEC §2

    def supports(self, info) -> bool:
        """Whether the method runs on data set `info` (a memomentum.data.DatasetInfo)."""
        return ("stream" if info.streams else "memory") in self.data and (info.clean_val or not self.needs_clean_val)

    def epochs(self, cfg) -> Tuple[float, int]:
        """(typical, most) epochs of one trial, for the dry run's cost estimate."""
        return self.trial.expected_epochs(cfg)
