"""A data set given by a path, read into an index: which images, with which labels, in which split, and (where the
user has them) which labels are trusted. Every check a user's files can fail is made here, each a one-line DataError
naming the file and what to do. No pixel is decoded here (memomentum/own_images.py does that).

Two layouts:

    <path>/train/<class>/<image>       torchvision's ImageFolder convention: classes = the sorted folder names,
    <path>/test/<class>/<image>        optional; its classes must be training classes
                                       (examples in class, then file-name order; sub-folders of a class count)

    <path> = a manifest, .csv or .parquet, one row per image (examples in row order):
        path         the image file, relative to the manifest's folder (never absolute, never through '..'), or
        image        its encoded bytes, or the {bytes, path} struct Hugging Face `datasets` writes to Parquet
        label        an integer class, or a class name (then classes = the sorted names of the training rows)
        split        optional: train or test (default: train)
        clean_label  optional: a trusted label where one is known (null where not); read only by diagnostics and
                     the test accuracy, never by a method

The labels given are the labels a method trains on (noisy, unless the user declares them clean). The fingerprint
covers every file's path, size and modification time, the manifest's bytes and the labels, so any change to the
data set changes it (and with it the keys of the trials made from it).
"""
import csv
import hashlib
import os
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

from memomentum.errors import DataError, short

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm", ".pgm")
MANIFEST_EXTENSIONS = (".csv", ".parquet")
SPLITS = ("train", "test")
HASHED_MANIFEST_BYTES = 64 * 2 ** 20  # manifests up to this size are fingerprinted by content, larger by size + time


@dataclass(frozen=True)
class OwnIndex:
    path: str  # the folder or the manifest, absolute
    kind: str  # "folder" or "manifest"
    names: np.ndarray  # str (N,): how the user names each example: its path relative to the root, or "row N"
    sources: np.ndarray  # str (N,): the image file, absolute; "" for an image held in the manifest (`rows`)
    rows: np.ndarray  # int64 (N,): the manifest row of each example (-1 for folders)
    is_test: np.ndarray  # bool (N,)
    labels: np.ndarray  # int64 (N,): the labels given
    clean: np.ndarray  # int64 (N,): trusted labels, -1 where none is known
    classes: Tuple[str, ...]
    fingerprint: str  # of every file, path, size, time and label

    @property
    def root(self) -> str:
        """The folder the example names are relative to."""
        return self.path if self.kind == "folder" else os.path.dirname(self.path)


def is_data_path(text: str) -> bool:
    """Whether a --dataset value names a data set by path (a folder or a manifest) rather than a registered name."""
    return "/" in text or os.sep in text or text.lower().endswith(MANIFEST_EXTENSIONS) or os.path.isdir(text)


def read_index(path: str, min_per_class: int = 2) -> OwnIndex:
    """The index of the data set at `path` (a folder or a manifest); DataError in one line for anything wrong."""
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.exists(path):
        raise DataError(f"data set path {path} does not exist; give a folder with train/<class>/ image folders, or a "
                        f"manifest .csv / .parquet")
    if os.path.isdir(path):
        index = _read_folder(path)
    elif path.lower().endswith(MANIFEST_EXTENSIONS):
        index = _read_manifest(path)
    else:
        raise DataError(f"data set path {path} is neither a folder nor a manifest (.csv or .parquet)")
    check_counts(index, min_per_class)
    return index


def check_counts(index: OwnIndex, min_per_class: int, where: str = "") -> None:
    """At least two classes, and every class with at least `min_per_class` training images."""
    train = index.labels[~index.is_test]
    if len(index.classes) < 2:
        raise DataError(f"{index.path}: {len(index.classes)} class(es) ({', '.join(index.classes) or 'none'}); a "
                        f"classifier needs at least 2")
    counts = np.bincount(train, minlength=len(index.classes))
    low = int(np.argmin(counts))
    if counts[low] < min_per_class:
        raise DataError(f"{index.path}: class {index.classes[low]!r} has {counts[low]} training image(s){where}, too few "
                        f"for the training / validation split (each class needs at least {min_per_class}); add images "
                        f"or remove the class")


# --- the folder layout -------------------------------------------------------------------------------------------
def _read_folder(path: str) -> OwnIndex:
    train_dir = os.path.join(path, "train")
    if not os.path.isdir(train_dir):
        raise DataError(f"{path} has no train/ folder; lay the images out as {path}/train/<class>/<image> (and "
                        f"optionally test/<class>/<image>), or give a manifest .csv / .parquet")
    classes = tuple(sorted(d.name for d in os.scandir(train_dir) if d.is_dir() and not d.name.startswith(".")))
    if not classes:
        raise DataError(f"{train_dir} holds no class folders; put each class's images in train/<class>/")
    names, sources, is_test, labels = [], [], [], []
    for split in SPLITS:
        split_dir = os.path.join(path, split)
        if split == "test" and not os.path.isdir(split_dir):
            continue
        found = sorted(d.name for d in os.scandir(split_dir) if d.is_dir() and not d.name.startswith("."))
        for name in found:
            if name not in classes:
                raise DataError(f"{split_dir}/{name} is a class the training split lacks (training classes: "
                                f"{short(list(classes))}); add train/{name}/ images or remove the folder")
        for c, name in enumerate(classes):
            if split == "test" and name not in found:
                continue
            files = _images_under(os.path.join(split_dir, name))
            if not files and split == "train":
                raise DataError(f"class folder {os.path.join(split_dir, name)} holds no images; add images or remove "
                                f"the folder")
            for f in files:
                names.append(os.path.relpath(f, path))
                sources.append(f)
                is_test.append(split == "test")
                labels.append(c)
    n = len(names)
    stamps = [_stat(f) for f in sources]
    digest = hashlib.blake2b(b"folder", digest_size=10)
    for name, stamp, label, test in zip(names, stamps, labels, is_test):
        digest.update(f"{name}\0{stamp[0]}\0{stamp[1]}\0{label}\0{int(test)}\n".encode())
    return OwnIndex(path, "folder", np.array(names, dtype=str), np.array(sources, dtype=str),
                    np.full(n, -1, dtype=np.int64), np.array(is_test, dtype=bool), np.array(labels, dtype=np.int64),
                    np.full(n, -1, dtype=np.int64), classes, digest.hexdigest())


def _images_under(folder: str) -> List[str]:
    """The image files under `folder` (its sub-folders too; hidden entries skipped; folder symlinks not followed),
    sorted. A file of another extension is an error: it is not an image this data set can hold."""
    out = []
    for base, dirs, files in os.walk(folder, onerror=_walk_error):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            full = os.path.join(base, name)
            if not name.lower().endswith(IMAGE_EXTENSIONS):
                raise DataError(f"{full} is not an image file (extension {os.path.splitext(name)[1] or 'none'}; "
                                f"images: {', '.join(IMAGE_EXTENSIONS)}); move it out of the data set folder")
            out.append(full)
    return out


def _walk_error(exc: OSError) -> None:
    raise DataError(f"cannot read folder {exc.filename}: {exc.strerror or exc}")


def _stat(path: str) -> Tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError as exc:
        raise DataError(_unreadable(path, exc)) from None
    return st.st_size, st.st_mtime_ns


def _unreadable(path: str, exc: OSError) -> str:
    if getattr(exc, "errno", None) == 40:  # ELOOP
        return f"{path} is a symlink loop; replace it with the image file"
    return f"cannot read {path}: {exc.strerror or exc}"


# --- the manifest layout -----------------------------------------------------------------------------------------
def _read_manifest(path: str) -> OwnIndex:
    columns = _manifest_columns(path)
    where = f"manifest {path}"
    n = len(next(iter(columns.values()))) if columns else 0
    if n == 0:
        raise DataError(f"{where} has no rows; give one row per image")
    has_path, has_image = "path" in columns, "image" in columns
    if not has_path and not has_image:
        raise DataError(f"{where} has no column 'path' or 'image' (columns: {', '.join(sorted(columns))}); give each "
                        f"image's file relative to the manifest, or its encoded bytes")
    if "label" not in columns:
        raise DataError(f"{where} has no column 'label' (columns: {', '.join(sorted(columns))}); give each image's "
                        f"label, an integer or a class name")
    splits = columns.get("split") or ["train"] * n
    for i, s in enumerate(splits):
        if s not in SPLITS:
            raise DataError(f"{where}, row {i}: split {short(s)} is not train or test")
    is_test = np.array([s == "test" for s in splits], dtype=bool)
    root = os.path.dirname(path)
    names, sources = [], []
    if has_image:
        images = columns["image"]
        for i, value in enumerate(images):
            if not isinstance(value, (bytes, bytearray)) or not value:
                raise DataError(f"{where}, row {i}: column 'image' holds {type(value).__name__}, not an image's "
                                f"bytes")
        names = [f"row {i}" for i in range(n)]
        sources = [""] * n
    else:
        seen = {}
        for i, rel in enumerate(columns["path"]):
            if not isinstance(rel, str) or not rel:
                raise DataError(f"{where}, row {i}: column 'path' holds {short(rel)}, not a file path")
            if os.path.isabs(rel) or ".." in rel.replace("\\", "/").split("/"):
                raise DataError(f"{where}, row {i}: path {short(rel)} leaves the manifest's folder; give paths "
                                f"relative to {root}, without '..'")
            norm = os.path.normpath(rel)
            if norm in seen:
                raise DataError(f"{where}: path {short(rel)} appears twice (rows {seen[norm]} and {i}); list each "
                                f"image once")
            seen[norm] = i
            full = os.path.join(root, norm)
            if not os.path.lexists(full):
                raise DataError(f"{where}, row {i}: image file {full} does not exist")
            names.append(norm)
            sources.append(full)
    labels, clean, classes = _labels(columns["label"], columns.get("clean_label"), is_test, where)
    digest = hashlib.blake2b(b"manifest", digest_size=10)
    size, mtime = _stat(path)
    if size <= HASHED_MANIFEST_BYTES:
        with open(path, "rb") as fh:
            digest.update(fh.read())
    else:
        digest.update(f"{size}\0{mtime}".encode())
    for name, source, label, c in zip(names, sources, labels, clean):
        stamp = _stat(source) if source else (0, 0)
        digest.update(f"{name}\0{stamp[0]}\0{stamp[1]}\0{label}\0{c}\n".encode())
    return OwnIndex(path, "manifest", np.array(names, dtype=str), np.array(sources, dtype=str),
                    np.arange(n, dtype=np.int64), is_test, labels, clean, classes, digest.hexdigest())


def _manifest_columns(path: str) -> dict:
    """The manifest's columns as Python lists (an `image` struct reduced to its bytes)."""
    if path.lower().endswith(".csv"):
        try:
            with open(path, newline="", encoding="utf-8-sig") as fh:
                reader = csv.DictReader(fh)
                rows = list(reader)
                fields = reader.fieldnames or []
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise DataError(f"cannot read manifest {path}: {type(exc).__name__}: {exc}") from None
        if "image" in fields:
            raise DataError(f"manifest {path}: a CSV cannot hold image bytes; give a 'path' column, or use Parquet")
        out = {f: [r.get(f) for r in rows] for f in fields if f}
        for key in ("split", "clean_label"):  # empty cells: unset
            if key in out:
                out[key] = [v if v not in ("", None) else (None if key == "clean_label" else "train") for v in out[key]]
        return out
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"cannot read manifest {path} as Parquet: {type(exc).__name__}: {str(exc)[:150]}") from None
    out = {}
    for name in table.column_names:
        column = table.column(name)
        kind = column.type
        if name == "image":
            if pa.types.is_struct(kind):
                if "bytes" not in [kind.field(i).name for i in range(kind.num_fields)]:
                    raise DataError(f"manifest {path}: column 'image' is a struct without 'bytes'; give the encoded "
                                    f"image bytes")
                column = column.combine_chunks().field("bytes")
                kind = column.type
            if not (pa.types.is_binary(kind) or pa.types.is_large_binary(kind)):
                raise DataError(f"manifest {path}: column 'image' is {kind}, not binary image bytes")
        elif name == "path" and not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise DataError(f"manifest {path}: column 'path' is {kind}, not text")
        elif name in ("label", "clean_label") and not (pa.types.is_integer(kind) or pa.types.is_string(kind)
                                                         or pa.types.is_large_string(kind)):
            raise DataError(f"manifest {path}: column {name!r} is {kind}; give integers or class names")
        elif name == "split" and not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise DataError(f"manifest {path}: column 'split' is {kind}, not text (train / test)")
        out[name] = column.to_pylist()
    return out


def _labels(given: list, clean: Optional[list], is_test: np.ndarray, where: str):
    """(labels, clean labels (-1 unknown), class names) from a manifest's label columns: integers as they are
    (classes 0 .. the largest), or class names (classes = the sorted names of the training rows)."""
    def as_int(value):
        if isinstance(value, bool):
            return None
        if isinstance(value, int):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value.strip())
        return None

    if any(v is None or v == "" for v in given):
        row = next(i for i, v in enumerate(given) if v is None or v == "")
        raise DataError(f"{where}, row {row}: no label; give every image a label")
    ints = [as_int(v) for v in given]
    numeric = all(v is not None for v in ints)
    if numeric:
        bad = next((i for i, v in enumerate(ints) if v < 0), None)
        if bad is not None:
            raise DataError(f"{where}, row {bad}: label {ints[bad]} is not a class (classes are 0, 1, ...)")
        classes = tuple(str(c) for c in range(max(ints[i] for i in range(len(ints)) if not is_test[i]) + 1)) \
            if (~is_test).any() else ()
        code = {str(c): c for c in range(len(classes))}
        labels = np.array(ints, dtype=np.int64)
    else:
        classes = tuple(sorted({str(v) for v, t in zip(given, is_test) if not t}))
        code = {c: i for i, c in enumerate(classes)}
        labels = np.array([code.get(str(v), -1) for v in given], dtype=np.int64)
    if not (~is_test).any():
        raise DataError(f"{where} has no training rows (split train); give the images to train on")
    out_of = np.flatnonzero((labels < 0) | (labels >= len(classes)))
    if len(out_of):
        i = int(out_of[0])
        part = "test" if is_test[i] else "training"
        raise DataError(f"{where}, row {i}: {part} label {short(given[i])} is not a class of the training rows "
                        f"({short(list(classes))})")
    trusted = np.full(len(given), -1, dtype=np.int64)
    if clean is not None:
        for i, v in enumerate(clean):
            if v is None or v == "":
                continue
            c = as_int(v) if numeric else code.get(str(v))
            if numeric and c is not None and not 0 <= c < len(classes):
                c = None
            if c is None:
                raise DataError(f"{where}, row {i}: clean_label {short(v)} is not a class ({short(list(classes))})")
            trusted[i] = c
    return labels, trusted, classes


__all__ = ["OwnIndex", "read_index", "check_counts", "is_data_path", "IMAGE_EXTENSIONS", "MANIFEST_EXTENSIONS"]
