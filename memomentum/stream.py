"""Trial data streamed from disk (data sets too large for memory, e.g. Clothing1M's million JPEGs), and
the feed through which a method trains and evaluates on it, with the same interface as memory.py.

`prepare(cfg)` reads the data set's index (file keys, noisy labels, clean labels where known, a clean
validation and test set); the feed decodes images with PIL in DataLoader worker processes and applies
the official transforms (`transforms_for`). Every shuffle and augmentation draws from the feed's own
generator (one seed per epoch), whose state goes into checkpoints.
"""
import hashlib
import os
from dataclasses import dataclass
from typing import Iterator, Optional, Tuple

import numpy as np
import torch

from memomentum import data as data_mod
from memomentum.data import DatasetInfo
from memomentum.engine import Engine


@dataclass(frozen=True)
class StreamData:
    """A streamed data set's index and labels (on the CPU: indices address files)."""
    index: object  # root, train_keys / train_noisy / train_clean, val_keys / val_labels, test_keys / test_labels
    noisy_labels: torch.Tensor  # (N,) the training labels as collected
    clean_labels: torch.Tensor  # (N,), -1 where unknown: diagnostics only
    train_idx: torch.Tensor  # all N examples: the validation set is separate (and clean)
    val_labels: torch.Tensor
    test_labels: torch.Tensor
    info: DatasetInfo
    realized_noise_rate: Optional[float]  # on the training examples whose clean label is known; None if none
    label_hash: str


def prepare(cfg) -> StreamData:
    info = data_mod.DATASETS[cfg.dataset]
    index = data_mod.load(cfg.dataset, cfg.data_root, cfg.download)
    noisy, clean = torch.from_numpy(index.train_noisy), torch.from_numpy(index.train_clean)
    known = clean >= 0
    rate = float((noisy[known] != clean[known]).double().mean()) if known.any() else None
    digest = hashlib.blake2b(index.train_noisy.tobytes() + index.train_keys.tobytes(), digest_size=8)
    return StreamData(index, noisy, clean, torch.arange(len(noisy)), torch.from_numpy(index.val_labels),
                      torch.from_numpy(index.test_labels), info, rate, digest.hexdigest())


class JpegFolder(torch.utils.data.Dataset):
    """Images named by keys relative to a root, decoded on demand: (image tensor, label, position)."""

    def __init__(self, root: str, keys: np.ndarray, labels: np.ndarray, transform):
        self.root, self.keys, self.labels, self.transform = root, keys, labels, transform

    def __len__(self):
        return len(self.keys)

    def __getitem__(self, i):
        from PIL import Image

        path = os.path.join(self.root, self.keys[i].decode())
        with Image.open(path) as image:
            return self.transform(image.convert("RGB")), int(self.labels[i]), i


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a container's or taskset's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def auto_workers(cpus: float) -> int:
    """DataLoader worker processes for `cpus` CPUs: none for one CPU (decoding in the training
    process is faster than one worker), else one per CPU, at most 8 (the official setting)."""
    return 0 if cpus < 2 else min(8, int(cpus))


def transforms_for(size: int, augment: bool, mean, std):
    from torchvision import transforms as T

    steps = [T.Resize((size, size))]
    if augment:
        steps += [T.RandomCrop(size, padding=size // 8), T.RandomHorizontalFlip()]
    return T.Compose(steps + [T.ToTensor(), T.Normalize(mean, std)])


class StreamFeed:
    """One trial's passes over streamed data. Predictions come back on the CPU, where the indices live."""

    def __init__(self, data: StreamData, engine: Engine, cfg, seed: int):
        self.data, self.engine = data, engine
        self.generator = torch.Generator().manual_seed(seed)
        self.state_device = torch.device("cpu")
        self.in_channels = 3
        self.batch_size, self.eval_batch_size = cfg.batch_size, cfg.eval_batch_size
        self.workers = cfg.num_workers if cfg.num_workers >= 0 else auto_workers(available_cpus())
        info = data.info
        self.train_tf = transforms_for(cfg.image_size, True, info.mean, info.std)
        self.eval_tf = transforms_for(cfg.image_size, False, info.mean, info.std)

    def sizes(self) -> Tuple[int, int, int]:
        return len(self.data.train_idx), len(self.data.val_labels), len(self.data.test_labels)

    def _loader(self, keys, labels, transform, batch_size: int, shuffle: bool, seed: int):
        g = torch.Generator().manual_seed(seed)
        return torch.utils.data.DataLoader(
            JpegFolder(self.data.index.root, keys, labels, transform), batch_size=batch_size, shuffle=shuffle,
            num_workers=self.workers, generator=g, pin_memory=self.engine.device.type == "cuda",
            persistent_workers=False)

    def batches(self, idx: torch.Tensor) -> Iterator[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(inputs, noisy labels, example indices) of one epoch over `idx`, shuffled and augmented on
        decoding; with 0 workers the transforms draw from the global RNG, seeded from this epoch's seed."""
        index = self.data.index
        seed = int(torch.randint(0, 2 ** 62, (1,), generator=self.generator))
        sel = idx.numpy()
        loader = self._loader(index.train_keys[sel], index.train_noisy[sel], self.train_tf, self.batch_size, True, seed)
        device = self.engine.device

        def epoch():
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                for x, y, pos in loader:
                    yield self.engine.place(x), y.to(device, non_blocking=True), idx[pos]

        return epoch()

    def train_epoch(self, model, optimizer, idx: torch.Tensor, weight=None) -> Tuple[float, float]:
        batches = ((x, y) for x, y, _ in self.batches(idx))
        return self.engine.fit_batches(model, optimizer, batches, weight)

    @torch.inference_mode()
    def _predict(self, model, keys, labels) -> torch.Tensor:
        model.eval()
        out = []
        for x, _, _ in self._loader(keys, labels, self.eval_tf, self.eval_batch_size, False, 0):
            with self.engine.autocast():
                out.append(model(self.engine.place(x)).argmax(1).cpu())
        return torch.cat(out) if out else torch.empty(0, dtype=torch.long)

    def predict(self, model, idx: torch.Tensor, augment: bool = False) -> torch.Tensor:
        """Predictions for training examples `idx` (always un-augmented, as the official Clothing.py)."""
        index, sel = self.data.index, idx.numpy()
        return self._predict(model, index.train_keys[sel], index.train_noisy[sel])

    def val_predictions(self, model) -> torch.Tensor:
        return self._predict(model, self.data.index.val_keys, self.data.index.val_labels)

    def val_score(self, model) -> float:
        """Accuracy (%) on the CLEAN validation set (Clothing1M has one)."""
        preds = self.val_predictions(model)
        return 100.0 * float((preds == self.data.val_labels).sum()) / max(len(preds), 1)

    def val_counts(self) -> torch.Tensor:
        return torch.bincount(self.data.val_labels, minlength=self.data.info.num_classes)

    has_test = True  # a streamed data set ships a clean test set

    def test_accuracy(self, model) -> float:
        preds = self._predict(model, self.data.index.test_keys, self.data.index.test_labels)
        return 100.0 * float((preds == self.data.test_labels).double().mean())
