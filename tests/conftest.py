"""Shared fixtures.

Real MNIST / FashionMNIST are found through MEMOMENTUM_DATA (a folder in torchvision's layout, e.g.
../shared/data); tests that need them skip with the reason when it is unset or lacks the files.
CIFAR tests write small stand-in files in the real on-disk formats, so the real readers run.
"""
import gzip
import os
import pickle
import re
import struct

import numpy as np
import pytest

from memomentum.data import DATA_ENV


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Label and index caches go to a per-session temporary folder, never to ~/.cache; set for the
    whole session so that Ray workers started by the tests inherit it."""
    previous = os.environ.get("MEMOMENTUM_CACHE")
    os.environ["MEMOMENTUM_CACHE"] = str(tmp_path_factory.getbasetemp() / "cache")
    yield
    if previous is None:
        os.environ.pop("MEMOMENTUM_CACHE", None)
    else:
        os.environ["MEMOMENTUM_CACHE"] = previous


# MEMOMENTUM_TEST_DEVICE=cuda runs every engine, model, procedure and method test on that device (tests
# that need Ray or CPU-only behaviour keep the CPU); unset, everything runs on the CPU.
TEST_DEVICE = os.environ.get("MEMOMENTUM_TEST_DEVICE", "cpu")
if not re.fullmatch(r"cpu|cuda(:[0-9]+)?", TEST_DEVICE):
    raise pytest.UsageError(f"MEMOMENTUM_TEST_DEVICE={TEST_DEVICE!r}: use cpu, cuda or cuda:N")
if TEST_DEVICE != "cpu":
    import torch as _torch

    if not _torch.cuda.is_available():
        raise pytest.UsageError(f"MEMOMENTUM_TEST_DEVICE={TEST_DEVICE} but this machine has no CUDA device")
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS for the resume tests
# what a test trial config adds: the device, and determinism where the records must repeat exactly
DEVICE_CONFIG = {"device": TEST_DEVICE, "deterministic": TEST_DEVICE != "cpu"}


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
                seed: int = 0, train_labels=None):
    """Stand-in CIFAR release files (python pickle format) with random images; returns (train, test) arrays.
    `train_labels`: the training labels in order (e.g. a CIFAR-N file's clean_label); the images are then
    constant, so that a 50,000-image stand-in stays cheap."""
    rng = np.random.default_rng(seed)
    num_classes = num_classes or (10 if kind == "cifar10" else 100)
    given = None if train_labels is None else [int(v) for v in train_labels]
    if given is not None:
        n_train = len(given)
    if kind == "cifar10":
        folder, key = os.path.join(root, "cifar-10-batches-py"), "labels"
        parts = [(f"data_batch_{i}", n_train // 5) for i in range(1, 6)] + [("test_batch", n_test)]
    else:
        folder, key = os.path.join(root, "cifar-100-python"), "fine_labels"
        parts = [("train", n_train), ("test", n_test)]
    os.makedirs(folder, exist_ok=True)
    out = {}
    for name, n in parts:
        is_train = not name.startswith("test")
        if is_train and given is not None:
            data = np.full((n, 3072), 128, dtype=np.uint8)
            labels, given = given[:n], given[n:]
        else:
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


def write_clothing(root, train_per_class: int = 4, eval_per_class: int = 2, size: int = 40, noise_every: int = 3,
                   seed: int = 0, clean_train: bool = True):
    """A stand-in Clothing1M release in the official layout: JPEGs under images/<c>/<cc>/ and the five
    annotation files. Every `noise_every`-th training image gets a wrong noisy label; half of the
    training images have a clean label too (as in the release, where only some do), or none of them
    with clean_train=False (a release whose clean labels cover no training key)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = str(root)
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    splits = {"train": [], "val": [], "test": []}
    noisy_kv, clean_kv = [], []
    n = 0
    for split, per_class in (("train", train_per_class), ("val", eval_per_class), ("test", eval_per_class)):
        for c in range(14):
            for _ in range(per_class):
                key = f"images/{n % 10}/{n % 100:02d}/{split}{n}.jpg"
                os.makedirs(os.path.join(root, os.path.dirname(key)), exist_ok=True)
                base = np.array([(c * 18) % 256, (c * 57) % 256, (c * 101) % 256], dtype=np.float64)
                pixels = np.clip(base + rng.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(os.path.join(root, key), quality=90)
                splits[split].append(key)
                if split == "train":
                    noisy = (c + 1) % 14 if n % noise_every == 0 else c
                    noisy_kv.append(f"{key} {noisy}")
                    if clean_train and n % 2 == 0:
                        clean_kv.append(f"{key} {c}")
                else:
                    clean_kv.append(f"{key} {c}")
                n += 1
    files = {"noisy_train_key_list.txt": splits["train"], "noisy_label_kv.txt": noisy_kv,
             "clean_label_kv.txt": clean_kv, "clean_val_key_list.txt": splits["val"],
             "clean_test_key_list.txt": splits["test"]}
    for name, lines in files.items():
        with open(os.path.join(root, "annotations", name), "w") as fh:
            fh.write("\n".join(lines) + "\n")
    return splits


CLOTHING_TINY = {"pretrained": False, "image_size": 32, "batch_size": 8, "eval_batch_size": 32,
                 "epochs_per_stage": 1, "max_outer": 2, "max_inner": 2, "num_workers": 0, "device": "cpu"}
