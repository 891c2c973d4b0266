"""Real human label noise: the CIFAR-10N / CIFAR-100N label files (Wei et al., ICLR 2022; SPEC §7).

The files hold labels only (50,000 each, in torchvision's CIFAR training order): `clean_label` and one
array per label set. They are numpy arrays pickled inside torch's zip format, so they are read with
`torch.load(weights_only=True)` and an allow-list of exactly numpy's array reconstruction: no pickled
code can run, and a file that needs anything else is refused. The user's CIFAR training labels must
equal `clean_label`, or images and noisy labels would be misaligned: that is checked before use.

    labels = read_labels(HumanNoise(...), data_root, "worst", train_labels, 10)   # int64 (50000,)
"""
import os
import pickle
import zipfile
from dataclasses import dataclass
from typing import Mapping, Tuple

import numpy as np

from memomentum.errors import DataError

HUMAN = "human"  # the noise type whose labels come from such a file
FOLDER = "CIFAR-N"  # under the data root, as the release's data/ folder


@dataclass(frozen=True)
class HumanNoise:
    """The label file of one data set: its name under <data root>/CIFAR-N and label set -> key."""
    file: str
    labels: Mapping[str, str]  # label-set name (as in grids) -> the file's key


LABELS = 50_000  # labels per array in a CIFAR-N file (CIFAR's training set)
MAX_BYTES = LABELS * 8 * 20  # what a file of up to 20 int64 label arrays needs: 8 MB (the releases: 1.0 and 2.4 MB)
INTEGER_DTYPES = ("Int8DType", "Int16DType", "Int32DType", "Int64DType", "UInt8DType", "UInt16DType", "UInt32DType",
                  "UInt64DType")


def _allowed():
    """What the restricted loader may rebuild: numpy arrays of integers, pickled by numpy 1 (numpy.core) or numpy 2
    (numpy._core), and nothing else."""
    from numpy._core import multiarray

    return [(multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
            (multiarray._reconstruct, "numpy._core.multiarray._reconstruct"), np.ndarray, (np.dtype, "numpy.dtype"),
            *(getattr(np.dtypes, name) for name in INTEGER_DTYPES)]


def path_of(spec: HumanNoise, root: str) -> str:
    return os.path.join(root, FOLDER, spec.file)


def read_file(path: str) -> Mapping[str, object]:
    """The label file as a mapping, loaded without running pickled code; DataError in one line otherwise."""
    if not os.path.isfile(path):
        raise DataError(f"the CIFAR-N label file {path} is missing; put the release's {os.path.basename(path)} "
                        f"(github.com/UCSC-REAL/cifar-10-100n, data/) under <data root>/{FOLDER}/")
    import torch  # here, not at the top: `import memomentum` (whose config names HUMAN) must not load torch

    _check_size(path)
    try:
        with torch.serialization.safe_globals(_allowed()):
            content = torch.load(path, weights_only=True)
    except pickle.UnpicklingError:  # torch's weights-only loader met something it may not rebuild
        raise DataError(f"{path} is not a readable CIFAR-N label file (it holds something other than arrays of "
                        f"whole-number labels; refused without running it); download it again") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path} is not a readable CIFAR-N label file ({first}); download it again") from None
    if not isinstance(content, dict):
        raise DataError(f"{path} is not a CIFAR-N label file (a {type(content).__name__}, not a mapping)")
    return content


def _check_size(path: str) -> None:
    """Refuse a file that could make the loader allocate more than a label file needs: a large file, or a zip
    archive whose members claim more (a few compressed bytes can expand to gigabytes)."""
    size = os.path.getsize(path)
    if size > MAX_BYTES:
        raise DataError(f"{path} holds {size:,} bytes, more than a CIFAR-N label file needs ({MAX_BYTES:,}); "
                        f"use the release's file")
    try:
        with zipfile.ZipFile(path) as archive:
            claimed = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError):
        raise DataError(f"{path} is not a readable CIFAR-N label file (not torch's zip format); download it "
                        f"again") from None
    if claimed > MAX_BYTES:
        raise DataError(f"{path} unpacks to {claimed:,} bytes, more than a CIFAR-N label file needs ({MAX_BYTES:,}); "
                        f"use the release's file")


def read_labels(spec: HumanNoise, root: str, label: str, train_labels, num_classes: int) -> Tuple[np.ndarray, str]:
    """(noisy labels of label set `label` as int64, the file's path), after checking that both the clean and the
    noisy array are whole numbers in [0, num_classes), one per training image, and that the clean labels are the
    user's CIFAR training labels."""
    path = path_of(spec, root)
    content = read_file(path)
    clean, noisy = content.get("clean_label"), content.get(spec.labels[label])
    n = len(train_labels)
    for name, array in (("clean_label", clean), (spec.labels[label], noisy)):
        if not isinstance(array, np.ndarray) or array.dtype.kind not in "iu":
            raise DataError(f"{path} has no array of whole-number labels named {name}; download the file again")
        if array.shape != (n,):
            raise DataError(f"{path}: {name} holds {array.size:,} labels in shape {array.shape}, not one per training "
                            f"image ({n:,}); download the file again")
        low, high = (int(array.min()), int(array.max())) if n else (0, 0)
        if low < 0 or high >= num_classes:
            raise DataError(f"{path}: {name} holds labels from {low} to {high}, outside 0 .. {num_classes - 1}; "
                            f"download the file again")
    if not np.array_equal(clean, train_labels.numpy()):
        wrong = int((clean != train_labels.numpy()).sum())
        raise DataError(f"{path}: clean_label differs from the CIFAR training labels found in {root} at {wrong:,} of "
                        f"{n:,} examples, so images and noisy labels would be misaligned; use the original "
                        f"python-version CIFAR files (torchvision's order)")
    return noisy.astype(np.int64), path


__all__ = ["HUMAN", "FOLDER", "HumanNoise", "path_of", "read_file", "read_labels"]
