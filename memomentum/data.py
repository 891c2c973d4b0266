"""Data set registry: every entry turns files on disk into uint8 image tensors (N, C, H, W) and labels.

The tensors are the whole data set, once per process (`load` is cached); the procedure moves them to
the trial's device and only ever indexes into them. Images stay uint8 until a batch is normalised on
the device, and the instance-noise generator reads these raw 0..255 values (SPEC §1).

Files are read in torchvision's on-disk layouts under a data root:
  <root>/MNIST/raw/*-ubyte, <root>/FashionMNIST/raw/*-ubyte   (IDX files, plain or .gz)
  <root>/cifar-10-batches-py/{data_batch_1..5,test_batch}      (the python pickle release)
  <root>/cifar-100-python/{train,test}
  <root>/annotations/{noisy_train_key_list,noisy_label_kv,clean_label_kv,clean_val_key_list,
                      clean_test_key_list}.txt + the image folders they name   (Clothing1M release)
The data root is the config's `data_root`, else the environment variable MEMOMENTUM_DATA, else ./data.
`digits` needs no files: it is scikit-learn's load_digits, shipped inside the package.
"""
import functools
import gzip
import os
import pickle
import struct
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, Tuple

import numpy as np
import torch

from memomentum import clothing1m
from memomentum.cifar_n import HumanNoise
from memomentum.dataset import Arrays, DatasetInfo
from memomentum.errors import ConfigError, DataError, unknown

DATA_ENV = "MEMOMENTUM_DATA"


def info(name: str) -> Optional[DatasetInfo]:
    """The registry entry of data set `name`: a built-in one, or one given by a path and registered in this process
    (memomentum/owndata.py); None for neither."""
    known = DATASETS.get(name)
    if known is not None:
        return known
    from memomentum import owndata

    own = owndata.registered(name)
    if own is None:
        return None
    return DatasetInfo(num_classes=len(own.index.classes), model=own.model, mean=own.mean, std=own.std,
                       crop_padding=own.crop_padding, flip=own.flip, files=(), read=None,
                       real_noise=not own.options.labels_clean, recipe=own.recipe, given_by_path=True,
                       defaults={**({} if own.options.labels_clean else {"noise_type": "real", "noise_rate": 0.0}),
                                 "image_size": own.image_size, "channels": own.channels, "export": True,
                                 "augment": own.options.augment if own.options.augment != "auto" else
                                 ("crop+flip" if own.crop_padding and own.flip else "crop" if own.crop_padding else
                                  "flip" if own.flip else "none"),
                                 "norm_mean": own.mean, "norm_std": own.std})


def resolve_root(data_root: str = "") -> str:
    return data_root or os.environ.get(DATA_ENV) or "data"


def load(name: str, data_root: str = "", download: bool = False):
    """The data set's tensors (cached per process); for a streamed data set, its checked index."""
    if name not in DATASETS:
        from memomentum import owndata

        own = owndata.registered(name)
        if own is not None:
            return owndata.arrays(own)
        raise ConfigError(unknown("dataset", name, DATASETS))
    return _load_cached(name, os.path.abspath(resolve_root(data_root)) if DATASETS[name].files else "", download)


@functools.lru_cache(maxsize=4)
def _load_cached(name: str, root: str, download: bool) -> Arrays:
    info = DATASETS[name]
    if not download:
        check_files(name, root)
    try:
        arrays = info.read(root, download)
    except DataError:
        raise
    except Exception as exc:  # a truncated or foreign file: say which data set and where
        raise DataError(f"could not read the {name} files under {root}: {type(exc).__name__}: {exc}; "
                        f"replace them with the original release files") from exc
    if not info.streams:
        _check_arrays(name, arrays)
    return arrays


def check_files(name: str, data_root: str = "") -> None:
    """Raise DataError if any file the data set needs is missing under the data root."""
    entry = info(name)
    if entry is None or not entry.files:
        return
    root = resolve_root(data_root)
    missing = [f for f in entry.files if not os.path.isfile(_present(os.path.join(root, f)))]
    if missing:
        raise DataError(
            f"{name}: {len(missing)} file(s) missing under data root {os.path.abspath(root)} "
            f"(first: {missing[0]}); place the release files there in torchvision's layout, or point "
            f"--data-root / ${DATA_ENV} at the folder that holds them")


def _check_arrays(name: str, a: Arrays) -> None:
    info = DATASETS[name]
    for split, images, labels in (("train", a.train_images, a.train_labels), ("test", a.test_images, a.test_labels)):
        if images.dtype != torch.uint8 or images.ndim != 4 or len(images) != len(labels) or len(labels) == 0:
            raise DataError(f"{name} {split} split is malformed: images {tuple(images.shape)} {images.dtype}, "
                            f"{len(labels)} labels; replace the files with the original release")
        if int(labels.min()) < 0 or int(labels.max()) >= info.num_classes:
            raise DataError(f"{name} {split} labels fall outside 0..{info.num_classes - 1}; the files are corrupt")


# --- readers ----------------------------------------------------------------------------------
IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def read_idx(path: str) -> np.ndarray:
    """An IDX file of unsigned bytes (MNIST's format: magic 0x0000 08 <ndim>, big-endian dimensions, data), plain
    or gzip-compressed, as a numpy array of its shape; DataError if it is not one."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08" or not 1 <= raw[3] <= 4:
        raise DataError(f"{path} is not an IDX file of unsigned bytes (header {raw[:4].hex()})")
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise DataError(f"{path} holds {body.size} bytes for a shape {shape}: the file is cut short or padded")
    return body.reshape(shape)


def _read_idx_release(folder: str, tv_class: str) -> Callable[[str, bool], Arrays]:
    """MNIST-format files under <root>/<folder>/raw/, each plain or as <name>.gz (torchvision's layout; the
    .gz files alone are enough). download=True lets torchvision fetch missing files first."""
    def read(root: str, download: bool) -> Arrays:
        if download:
            import torchvision.datasets as tvd

            getattr(tvd, tv_class)(root, train=True, download=True)
        arrays = [read_idx(_present(os.path.join(root, folder, "raw", name))) for name in IDX_NAMES]
        train_x, train_y, test_x, test_y = (torch.from_numpy(a.copy()) for a in arrays)
        return Arrays(train_x.unsqueeze(1).contiguous(), train_y.long(), test_x.unsqueeze(1).contiguous(), test_y.long())

    return read


def _present(path: str) -> str:
    """`path`, or its gzip-compressed twin `path.gz` where only that exists."""
    return path if os.path.isfile(path) or not os.path.isfile(path + ".gz") else path + ".gz"


class ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain data and numpy arrays only: a CIFAR batch file that names any other callable (which
    a plain pickle.load would run) is refused before anything of it executes."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"), ("numpy", "ndarray"),
               ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR file never holds (refused unrun)")


def _read_cifar(folder: str, train_files, test_files, label_key: str, tv_class: str):
    """CIFAR's python release: pickled dicts with 'data' (N, 3072 uint8, CHW order) and labels.

    Read directly instead of through torchvision's classes, whose md5 check would reject any file
    but the exact release; download=True still goes through torchvision and its checks."""

    def read(root: str, download: bool) -> Arrays:
        if download:
            import torchvision.datasets as tvd

            getattr(tvd, tv_class)(root, train=True, download=True)

        def part(files):
            images, labels = [], []
            for f in files:
                with open(os.path.join(root, folder, f), "rb") as fh:
                    entry = ArrayUnpickler(fh, encoding="latin1").load()
                if not isinstance(entry, dict):
                    raise DataError(f"{os.path.join(root, folder, f)} is not a CIFAR batch (a {type(entry).__name__})")
                images.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
                labels.extend(entry[label_key])
            return torch.from_numpy(np.concatenate(images)), torch.tensor(labels, dtype=torch.long)

        return Arrays(*part(train_files), *part(test_files))

    return read


DIGITS_TEST_SIZE = 360  # 20% of scikit-learn's 1,797 digits


def _read_digits(root: str, download: bool) -> Arrays:
    """scikit-learn's load_digits (8x8, values 0..16) scaled to uint8 0..255.

    Fixed split, independent of the trial seed: a permutation from numpy's default_rng(0); its first
    360 examples are the test set, the other 1,437 the training set (noise and the train/validation
    split are then drawn per seed like any other data set)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(labels))
    test, train = order[:DIGITS_TEST_SIZE], order[DIGITS_TEST_SIZE:]
    return Arrays(torch.from_numpy(images[train]), torch.from_numpy(labels[train]),
                  torch.from_numpy(images[test]), torch.from_numpy(labels[test]))


def _idx_files(folder: str) -> Tuple[str, ...]:
    return tuple(f"{folder}/raw/{n}" for n in IDX_NAMES)


_CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# Clothing1M's official settings (SPEC §4, the official Clothing.py), for every method that has the field (e.g.
# max_outer / max_inner: the class-wise variant's; class_weighted: ce's); ce's own length there is its own default
CLOTHING_DEFAULTS = {"method": "classwise", "noise_type": "real", "noise_rate": 0.0, "lr": 0.005, "weight_decay": 1e-3,
                     "batch_size": 32, "eval_batch_size": 128, "epochs_per_stage": 5, "max_outer": 3, "max_inner": 6,
                     "lr_milestones": (10, 20), "pretrained": True, "class_weighted": True}

DATASETS = {
    "digits": DatasetInfo(num_classes=10, model="digitsnet", mean=(0.3,), std=(0.38,), crop_padding=0, flip=False,
                          files=(), read=_read_digits),
    "mnist": DatasetInfo(num_classes=10, model="lenet", mean=(0.1307,), std=(0.3081,), crop_padding=0, flip=False,
                         files=_idx_files("MNIST"), read=_read_idx_release("MNIST", "MNIST")),
    "fashionmnist": DatasetInfo(num_classes=10, model="lenet", mean=(0.2860,), std=(0.3530,), crop_padding=0,
                                flip=False, files=_idx_files("FashionMNIST"),
                                read=_read_idx_release("FashionMNIST", "FashionMNIST")),
    "cifar10": DatasetInfo(num_classes=10, model="resnet18", mean=(0.4914, 0.4822, 0.4465),
                           std=(0.2023, 0.1994, 0.2010), crop_padding=4, flip=True,
                           files=tuple(f"cifar-10-batches-py/{f}" for f in _CIFAR10_TRAIN + ("test_batch",)),
                           read=_read_cifar("cifar-10-batches-py", _CIFAR10_TRAIN, ("test_batch",), "labels", "CIFAR10"),
                           human_noise=HumanNoise("CIFAR-10_human.pt", {
                               "aggre": "aggre_label", "random1": "random_label1", "random2": "random_label2",
                               "random3": "random_label3", "worst": "worse_label"})),
    "cifar100": DatasetInfo(num_classes=100, model="resnet34", mean=(0.507, 0.487, 0.441), std=(0.267, 0.256, 0.276),
                            crop_padding=4, flip=True, files=("cifar-100-python/train", "cifar-100-python/test"),
                            read=_read_cifar("cifar-100-python", ("train",), ("test",), "fine_labels", "CIFAR100"),
                            human_noise=HumanNoise("CIFAR-100_human.pt", {"noisy": "noisy_label"})),
    "clothing1m": DatasetInfo(num_classes=clothing1m.NUM_CLASSES, model="resnet50", mean=IMAGENET_MEAN,
                              std=IMAGENET_STD, crop_padding=32, flip=True, files=clothing1m.FILES,
                              read=clothing1m.read_index, streams=True, real_noise=True, clean_val=True,
                              defaults=CLOTHING_DEFAULTS),
}
