"""Shared fixtures.

Real MNIST / FashionMNIST are found through MEMOMENTUM_DATA (a folder in torchvision's layout, e.g.
../shared/data); tests that need them skip with the reason when it is unset or lacks the files.
CIFAR tests write small stand-in files in the real on-disk formats, so the real readers run.
"""
import gzip
import os
import pickle
import struct

import numpy as np
import pytest

from memomentum.data import DATA_ENV


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Noisy-label caches go to a per-session temporary folder, never to ~/.cache."""
    monkeypatch.setenv("MEMOMENTUM_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def real_data_root(name: str = "MNIST") -> str:
    root = os.environ.get(DATA_ENV, "")
    if not root or not os.path.isfile(os.path.join(root, name, "raw", "train-images-idx3-ubyte")):
        pytest.skip(f"real {name} not available: set {DATA_ENV} to a folder holding {name}/raw/*-ubyte "
                    f"(e.g. ../shared/data)")
    return root


@pytest.fixture
def mnist_root():
    return real_data_root("MNIST")


def write_cifar(root, kind: str = "cifar10", n_train: int = 50, n_test: int = 20, num_classes: int = None,
                seed: int = 0):
    """Stand-in CIFAR release files (python pickle format) with random images; returns (train, test) arrays."""
    rng = np.random.default_rng(seed)
    num_classes = num_classes or (10 if kind == "cifar10" else 100)
    if kind == "cifar10":
        folder, key = os.path.join(root, "cifar-10-batches-py"), "labels"
        parts = [(f"data_batch_{i}", n_train // 5) for i in range(1, 6)] + [("test_batch", n_test)]
    else:
        folder, key = os.path.join(root, "cifar-100-python"), "fine_labels"
        parts = [("train", n_train), ("test", n_test)]
    os.makedirs(folder, exist_ok=True)
    out = {}
    for name, n in parts:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, num_classes, n)]
        with open(os.path.join(folder, name), "wb") as fh:
            pickle.dump({"batch_label": name, key: labels, "data": data, "filenames": [f"{i}.png" for i in range(n)]},
                        fh, protocol=2)
        out[name] = (data, labels)
    return out


def write_idx(root, folder: str = "MNIST", n_train: int = 40, n_test: int = 10, seed: int = 0, gz: bool = False):
    """Stand-in MNIST-format IDX files in torchvision's layout <root>/<folder>/raw/."""
    rng = np.random.default_rng(seed)
    raw = os.path.join(root, folder, "raw")
    os.makedirs(raw, exist_ok=True)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n).astype(np.uint8)
        for suffix, header, payload in (
                ("images-idx3-ubyte", struct.pack(">IIII", 0x803, n, 28, 28), images.tobytes()),
                ("labels-idx1-ubyte", struct.pack(">II", 0x801, n), labels.tobytes())):
            path = os.path.join(raw, f"{prefix}-{suffix}")
            with open(path, "wb") as fh:
                fh.write(header + payload)
            if gz:
                with gzip.open(path + ".gz", "wb") as fh:
                    fh.write(header + payload)
        arrays[prefix] = (images, labels)
    return arrays
