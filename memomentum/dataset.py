"""The two records every data set is made of: `Arrays` (its images and labels as tensors) and `DatasetInfo` (its
registry entry: what it is, where its files are, what it can do). The built-in data sets' entries are in
memomentum/data.py; those of data sets given by a path are made from their files (memomentum/owndata.py).
Imports nothing of the package but CIFAR-N's record of a label file.
"""
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, Tuple

import torch

from memomentum.cifar_n import HumanNoise


@dataclass(frozen=True)
class Arrays:
    train_images: torch.Tensor  # uint8 (N, C, H, W), the whole official training set
    train_labels: torch.Tensor  # int64 (N,), its clean labels (-1 where unknown: a data set given by a path)
    test_images: torch.Tensor  # uint8 (M, C, H, W)
    test_labels: torch.Tensor  # int64 (M,)
    train_given: Optional[torch.Tensor] = None  # int64 (N,): labels given noisy as collected (a data set given by a
    #                                             path whose labels are its noise); None: synthetic noise is drawn


@dataclass(frozen=True)
class DatasetInfo:
    """A data set's registry entry: what it is, where its files are, and what it can do."""
    num_classes: int
    model: str  # the official network (SPEC §1 table)
    mean: Tuple[float, ...]  # per-channel normalisation, on the 0..1 scale
    std: Tuple[float, ...]
    crop_padding: int  # random crop with this much zero padding (0: no crop)
    flip: bool  # random horizontal flip
    files: Tuple[str, ...]  # files the loader needs, relative to the data root
    read: Callable[[str, bool], object]  # (root, download) -> Arrays, or the index of a streamed data set
    streams: bool = False  # images stay on disk and stream through DataLoader workers (else: all in memory)
    real_noise: bool = False  # labels are noisy as collected: no synthetic noise (noise_type "real")
    clean_val: bool = False  # ships a clean validation set, used for selection instead of a noisy split
    human_noise: Optional[HumanNoise] = None  # real human noisy labels for its training set (CIFAR-N, SPEC §7)
    defaults: Mapping[str, object] = field(default_factory=dict)  # official settings that differ here (SPEC §4),
    #                                   for every method that has the field; a method's own per data set: Method.defaults
    recipe: str = ""  # a data set given by a path: the built-in data set whose method settings it takes
    given_by_path: bool = False  # a data set of the user's own images (memomentum/owndata.py), not a built-in one


__all__ = ["Arrays", "DatasetInfo"]
