"""Trial data held in memory on the trial's device (every data set but the streamed ones), and the feed
through which a method trains and evaluates on it.

`prepare(cfg, device)` loads the data set, draws the noisy labels and the 90/10 split (SPEC §1) and
moves everything to the device once; the result is read-only and can be shared by several trials.
A `MemoryFeed` belongs to one trial: it holds the trial's Engine (batch sizes, precision, and the
random generator whose state goes into checkpoints) and runs every pass over index tensors into the
shared data, so a subset (a confident set) is never a copy of images.
"""
from dataclasses import dataclass
from typing import Iterator, Optional, Tuple

import torch

from memomentum import cifar_n
from memomentum import data as data_mod
from memomentum import noise
from memomentum.data import DatasetInfo
from memomentum.engine import Engine


@dataclass(frozen=True)
class TrialData:
    """Everything a trial on an in-memory data set reads, already on its device."""
    images: torch.Tensor  # uint8 (N, C, H, W): all official training images
    noisy_labels: torch.Tensor  # int64 (N,): the only labels training, selection and stopping see
    clean_labels: torch.Tensor  # int64 (N,): diagnostics only
    train_idx: torch.Tensor  # the split's training examples (the only ones extraction scans)
    val_idx: torch.Tensor  # the split's noisy validation examples
    test_images: torch.Tensor
    test_labels: torch.Tensor
    info: DatasetInfo
    realized_noise_rate: Optional[float]  # None where no clean label is known (a data set given by a path)
    label_hash: str


def prepare(cfg, device: torch.device) -> TrialData:
    """Load, add noise, split, and move to `device` (SPEC §1)."""
    info = data_mod.info(cfg.dataset)
    if info.given_by_path:  # its files may have changed since the config was made: never train on other data
        from memomentum import owndata

        owndata.register_config(cfg.dataset, cfg.to_dict(), data_mod.DATASETS, refresh=True)
    arrays = data_mod.load(cfg.dataset, cfg.data_root, cfg.download)
    if arrays.train_given is not None:  # labels given noisy (a data set given by a path): its split, as CIFAR-N's
        ns = noise.given_noise_split(arrays.train_given.numpy(), arrays.train_labels, cfg.seed, cfg.train_fraction,
                                     cfg.dataset)
    elif cfg.noise_type == cifar_n.HUMAN:  # the label file's noisy labels, checked against the CIFAR files
        noisy, _ = cifar_n.read_labels(info.human_noise, data_mod.resolve_root(cfg.data_root), cfg.noise_label,
                                       arrays.train_labels, info.num_classes)
        ns = noise.given_noise_split(noisy, arrays.train_labels, cfg.seed, cfg.train_fraction, cfg.dataset)
    else:
        ns = noise.noisy_split(cfg.dataset, cfg.noise_type, cfg.noise_rate, cfg.seed, cfg.train_fraction,
                               arrays.train_labels, arrays.train_images, info.num_classes)
    return TrialData(arrays.train_images.to(device), ns.noisy_labels.to(device), arrays.train_labels.to(device),
                     ns.train_idx.to(device), ns.val_idx.to(device), arrays.test_images.to(device),
                     arrays.test_labels.to(device), info, ns.realized_noise_rate, ns.label_hash)


class MemoryFeed:
    """One trial's passes over in-memory data: training epochs, predictions, validation and test."""

    def __init__(self, data: TrialData, engine: Engine, val_augment: bool):
        self.data, self.engine, self.val_augment = data, engine, val_augment
        self.generator = engine.generator  # shuffling, crops and flips: part of every checkpoint
        self.state_device = engine.device  # where the loop state's tensors live
        self.in_channels = data.images.shape[1]

    def sizes(self) -> Tuple[int, int, int]:
        d = self.data
        return len(d.train_idx), len(d.val_idx), len(d.test_labels)

    def train_epoch(self, model, optimizer, idx: torch.Tensor, weight=None, **options) -> Tuple[float, float]:
        """One epoch over training examples `idx` with their noisy labels, in a fresh random order (`options`:
        Engine.train_epoch's drop_last, batch_size, loss_fn, before_step)."""
        return self.engine.train_epoch(model, optimizer, self.data.images, self.data.noisy_labels, idx, weight,
                                       **options)

    def batches(self, idx: torch.Tensor, drop_last: bool = False) -> Iterator[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(inputs, noisy labels, example indices) of one epoch over `idx`, shuffled and augmented."""
        return self.engine.batches(self.data.images, self.data.noisy_labels, idx, drop_last)

    def predict(self, model, idx: torch.Tensor, augment: bool) -> torch.Tensor:
        """argmax predictions for training-set examples `idx`, in idx order."""
        return self.engine.predict(model, self.data.images, idx, augment)

    def logits(self, model, idx: torch.Tensor, augment: bool) -> torch.Tensor:
        """float32 logits (len(idx), C) for training-set examples `idx`, in idx order (eval mode)."""
        return self.engine.logits(model, self.data.images, idx, augment)

    def val_score(self, model) -> float:
        """Class-balanced accuracy (%) on the NOISY validation labels (SPEC §3)."""
        d = self.data
        return self.engine.val_score(model, d.images, d.noisy_labels, d.val_idx, self.val_augment)

    def val_counts(self) -> torch.Tensor:
        """Examples per class in the validation split, by their (noisy) labels."""
        d = self.data
        return torch.bincount(d.noisy_labels[d.val_idx], minlength=d.info.num_classes).cpu()

    @property
    def has_test(self) -> bool:
        """Whether there is a test set with trusted labels (a data set given by a path may have none)."""
        return len(self.data.test_labels) > 0

    def test_accuracy(self, model) -> Optional[float]:
        """Accuracy (%) on the clean test set; None without one."""
        if not self.has_test:
            return None
        return self.engine.accuracy(model, self.data.test_images, self.data.test_labels)
