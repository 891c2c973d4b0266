"""Clothing1M's official release: the annotation index and the JPEG files it names.

Under a root, `annotations/` holds the five official files and the keys in them are image paths
relative to the root (e.g. images/0/00/x.jpg). The index (train keys with noisy labels, clean labels
where known, clean validation and test sets) is built once and cached under $MEMOMENTUM_CACHE, which
replaces the official separate `.npy` preparation step. Images do not fit in memory: memomentum/stream.py
decodes them in DataLoader worker processes (JpegFolder) with the official transforms:
    train: Resize((s, s)), RandomCrop(s, padding=s/8), RandomHorizontalFlip, ToTensor, Normalize
    eval:  Resize((s, s)), ToTensor, Normalize                         (s = image_size, 256)
"""
import hashlib
import os
from dataclasses import dataclass
from typing import Dict, List

import numpy as np

from memomentum.atomic import atomic_savez, load_npz
from memomentum.errors import DataError
from memomentum.noise import default_cache_dir

NUM_CLASSES = 14
ANNOTATIONS = ("noisy_train_key_list.txt", "noisy_label_kv.txt", "clean_label_kv.txt", "clean_val_key_list.txt",
               "clean_test_key_list.txt")
FILES = tuple(f"annotations/{f}" for f in ANNOTATIONS)  # what must exist under the data root


# --- the index ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClothingIndex:
    root: str
    train_keys: np.ndarray  # bytes, paths relative to root
    train_noisy: np.ndarray  # int64
    train_clean: np.ndarray  # int64, -1 where no clean label is known
    val_keys: np.ndarray
    val_labels: np.ndarray
    test_keys: np.ndarray
    test_labels: np.ndarray


def _read_kv(path: str) -> Dict[bytes, int]:
    out = {}
    with open(path, "rb") as fh:
        for n, line in enumerate(fh, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or not parts[1].isdigit():
                raise DataError(f"{path} line {n} is not 'key label': {line[:80]!r}; replace it with the "
                                f"release file")
            out[parts[0]] = int(parts[1])
    return out


def _read_keys(path: str) -> List[bytes]:
    with open(path, "rb") as fh:
        return [line.strip() for line in fh if line.strip()]


def _labels_for(keys: List[bytes], kv: Dict[bytes, int], what: str, source: str) -> np.ndarray:
    try:
        labels = np.fromiter((kv[k] for k in keys), dtype=np.int64, count=len(keys))
    except KeyError as exc:
        raise DataError(f"{what} key {exc.args[0].decode(errors='replace')} has no label in {source}; the "
                        f"annotation files do not belong together") from None
    if len(labels) and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DataError(f"{source} holds labels outside 0..{NUM_CLASSES - 1}")
    return labels


def read_index(root: str, download: bool = False) -> ClothingIndex:
    """Parse the five annotation files (or load the cached index built from exactly these files)."""
    ann = os.path.join(root, "annotations")
    paths = [os.path.join(ann, f) for f in ANNOTATIONS]
    stamp = hashlib.blake2b(os.path.abspath(root).encode(), digest_size=8)
    for p in paths:
        st = os.stat(p)
        stamp.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    cache = os.path.join(default_cache_dir(), "clothing1m", stamp.hexdigest() + ".npz")
    fields = ("train_keys", "train_noisy", "train_clean", "val_keys", "val_labels", "test_keys", "test_labels")
    cached = load_npz(cache, fields, lambda z: len(z["train_keys"]) == len(z["train_noisy"]) == len(z["train_clean"])
                      and len(z["val_keys"]) == len(z["val_labels"]) and len(z["test_keys"]) == len(z["test_labels"]))
    if cached is not None:  # a damaged cache file is rebuilt from the annotation files below
        return ClothingIndex(root, *(cached[f] for f in fields))
    train_list, noisy_kv, clean_kv, val_list, test_list = paths
    noisy = _read_kv(noisy_kv)
    clean = _read_kv(clean_kv)
    train_keys = _read_keys(train_list)
    index = ClothingIndex(
        root, np.array(train_keys, dtype=bytes), _labels_for(train_keys, noisy, "training", noisy_kv),
        np.fromiter((clean.get(k, -1) for k in train_keys), dtype=np.int64, count=len(train_keys)),
        np.array(_read_keys(val_list), dtype=bytes), _labels_for(_read_keys(val_list), clean, "validation", clean_kv),
        np.array(_read_keys(test_list), dtype=bytes), _labels_for(_read_keys(test_list), clean, "test", clean_kv))
    for split, keys in (("training", index.train_keys), ("validation", index.val_keys), ("test", index.test_keys)):
        if len(keys) == 0:
            raise DataError(f"the Clothing1M {split} list under {ann} is empty")
        for key in (keys[0], keys[-1]):  # cheap check that the keys point at the image folders
            if not os.path.isfile(os.path.join(root, key.decode())):
                raise DataError(f"image {key.decode()} named in the {split} list is missing under {root}; "
                                f"place the image folders beside annotations/")
    atomic_savez(cache, **{f: getattr(index, f) for f in fields})
    return index
