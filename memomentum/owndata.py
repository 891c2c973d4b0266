"""Data sets given by a path: a folder or a manifest of the user's own images (memomentum/own_index.py), decoded
once (memomentum/own_images.py), registered under the user's name beside the built-in data sets, so that every
method, the split, the noise, the tables and the sweep treat them as any other in-memory data set.

    from memomentum import TrialConfig, run
    run(TrialConfig.from_dict({"dataset": "pets", "data_path": "/data/pets", "method": "memomentum"}))

Settings (TrialConfig fields, written flat like every other; a grid's `datasets:` entry {name, path, ...} sets them
for that data set), with their rule when left unset:

  labels_clean     false: the labels given ARE the noisy labels (noise_type real); true: they are clean, and the
                   synthetic noise types (symmetric, pair-flip, instance) add noise to them
  image_size       0: from the median longer side m of the images: grey m <= 12: 8; grey m <= 40: 28;
                   m <= 48: 32; m <= 96: 64; else 224
  channels         0: 1 if every image is grey, else 3 (RGB)
  model            "": digitsnet (grey, 8 px), lenet (grey, 28 px), resnet18, CIFAR variant (up to 96 px),
                   resnet50 (larger; `pretrained: true` loads ImageNet weights)
  augment          auto: none for grey images up to 32 px (as MNIST), else crop (padding image_size / 8) + flip (as
                   CIFAR); or none, flip, crop, crop+flip
  norm_mean/std    (): the training images' per-channel mean and std (ImageNet's for a pretrained resnet50)
  skip_bad_images  false: a file that is not an image stops the run in one line; true: it is left out and counted

Each method takes the settings of a built-in data set (its "recipe", the project's choice, marked (P) in
--list-methods): MNIST's for grey images up to 32 px, CIFAR-10's otherwise. Test accuracy is measured only on test
images whose label is trusted (a `clean_label`, or every test label when labels_clean is true); without any, the
trial's test accuracies are null and the tables rank methods by the noisy-validation score.
"""
import hashlib
import math
import re
import sys
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import numpy as np
import torch

from memomentum import limits, own_images
from memomentum.dataset import Arrays
from memomentum.errors import ConfigError, DataError, short
from memomentum.own_index import OwnIndex, check_counts, read_index

AUGMENTS = ("auto", "none", "flip", "crop", "crop+flip")
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,59}")
# the config fields that describe a data set given by a path (its decode and presentation), beside `model`
FIELDS = ("data_path", "labels_clean", "image_size", "channels", "augment", "norm_mean", "norm_std", "skip_bad_images")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
NETWORK_SIDES = {"digitsnet": 8, "lenet": 28}  # networks built for one input size


def say(line: str) -> None:
    """Progress of a long scan or decode, on stderr (print looked up at call time)."""
    print(line, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class OwnOptions:
    path: str
    labels_clean: bool = False
    image_size: int = 0
    channels: int = 0
    augment: str = "auto"
    norm_mean: tuple = ()
    norm_std: tuple = ()
    skip_bad_images: bool = False
    model: str = ""
    pretrained: bool = False
    train_fraction: float = 0.9


@dataclass(frozen=True)
class OwnData:
    """A registered data set given by a path: its index, resolved settings and decoded images."""
    name: str
    options: OwnOptions
    index: OwnIndex
    image_size: int
    channels: int
    model: str
    recipe: str  # the built-in data set whose method settings it takes
    crop_padding: int
    flip: bool
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    fingerprint: str  # of the files, the labels and the decode settings: part of every trial's key
    decoded: own_images.Decoded = field(repr=False, compare=False, default=None)

    @property
    def trusted_test(self) -> np.ndarray:
        """Positions (in the index) of the test images with a trusted label."""
        test = self.decoded.kept[self.index.is_test[self.decoded.kept]]
        return test if self.options.labels_clean else test[self.index.clean[test] >= 0]

    @property
    def train_positions(self) -> np.ndarray:
        """Positions (in the index) of the training images, in the order of the trial's training set."""
        kept = self.decoded.kept
        return kept[~self.index.is_test[kept]]


_REGISTERED: Dict[str, OwnData] = {}


def registered(name: str) -> Optional[OwnData]:
    return _REGISTERED.get(name)


def check_name(name: str, builtin) -> None:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ConfigError(f"data set name {short(name)} must be a word of 1 to 60 letters, digits, '.', '_' or '-' "
                          f"(it names the trials)")
    if name in builtin:
        raise ConfigError(f"data set name {name!r} is a built-in data set; give the data set at your path another name")


def register(name: str, options: OwnOptions, refresh: bool = False) -> OwnData:
    """Read, check and decode the data set at options.path (cached on disk) and register it under `name`. The same
    name and options again in this process: the registered one, unless `refresh` (the files are looked at again:
    a trial checks that its data set is still the one its key names)."""
    known = _REGISTERED.get(name)
    if known is not None and known.options == options:
        if not refresh or read_index(options.path, 1).fingerprint == known.index.fingerprint:
            return known
    _check_options(options)
    min_per_class = max(2, math.ceil(1.0 / (1.0 - options.train_fraction))) if 0 < options.train_fraction < 1 else 2
    index = read_index(options.path, min_per_class)
    probe = own_images.probe(index, options.skip_bad_images, say)
    usable = probe.sides > 0
    grey = bool(probe.grey[usable].all()) if usable.any() else True
    channels = options.channels or (1 if grey else 3)
    size = options.image_size or default_size(int(np.median(probe.sides[usable])) if usable.any() else 32, channels == 1)
    model = options.model or default_model(size, channels)
    if NETWORK_SIDES.get(model, size) != size:
        raise ConfigError(f"model {model} is built for {NETWORK_SIDES[model]} x {NETWORK_SIDES[model]} images, but "
                          f"image_size is {size}; set image_size: {NETWORK_SIDES[model]} or another model")
    need = len(index.names) * channels * size * size
    if need > limits.OWN_DATA_BYTES:
        raise DataError(f"{options.path}: {len(index.names):,} images of {channels} x {size} x {size} need "
                        f"{need / 2 ** 30:.1f} GiB decoded, beyond the limit of {limits.OWN_DATA_BYTES / 2 ** 30:.0f} GiB "
                        f"in memory; set a smaller image_size")
    decoded = own_images.decode(index, size, channels, options.skip_bad_images, say)
    if len(decoded.skipped):
        say(f"{name}: {len(decoded.skipped)} file(s) that are not images Pillow can read were skipped "
            f"(first: {index.names[decoded.skipped[0]]})")
        kept_index = _subset(index, decoded.kept)
        check_counts(kept_index, min_per_class, " once the unreadable files are skipped")
    augment = options.augment if options.augment != "auto" else ("none" if channels == 1 and size <= 32 else "crop+flip")
    mean, std = _normalisation(options, decoded, index, channels, model)
    fingerprint = hashlib.blake2b(f"{index.fingerprint}-{size}-{channels}-{int(options.skip_bad_images)}".encode(),
                                  digest_size=8).hexdigest()
    own = OwnData(name, options, index, size, channels, model, recipe(channels, size),
                  size // 8 if "crop" in augment else 0, "flip" in augment, mean, std, fingerprint, decoded)
    _REGISTERED[name] = own
    return own


def register_config(dataset: str, values, builtin, refresh: bool = False) -> str:
    """Register the data set a trial config's (flat, typed) `values` give by values["data_path"] under the name
    `dataset` (not one of the `builtin` names); its fingerprint. A config that names another fingerprint was made
    from the files before they changed: ConfigError. `refresh`: look at the files again even if this process
    registered them already."""
    check_name(dataset, builtin)
    options = OwnOptions(
        path=values["data_path"], labels_clean=values.get("labels_clean", False), image_size=values.get("image_size", 0),
        channels=values.get("channels", 0), augment=values.get("augment", "auto"),
        norm_mean=tuple(values.get("norm_mean", ())), norm_std=tuple(values.get("norm_std", ())),
        skip_bad_images=values.get("skip_bad_images", False), model=values.get("model", ""),
        pretrained=values.get("pretrained", False), train_fraction=values.get("train_fraction", 0.9))
    given = values.get("data_fingerprint")
    own = register(dataset, options, refresh=refresh)
    if given and given != own.fingerprint:
        raise ConfigError(f"the files of data set {dataset} ({own.options.path}) changed since this trial's cell was "
                          f"made (fingerprint {given}, now {own.fingerprint}); run the sweep again: the changed data set "
                          f"makes new cells, and the finished ones stay as they were")
    return own.fingerprint


def default_size(side: int, grey: bool) -> int:
    """The image size of a data set whose images' median longer side is `side` (the rule of the docstring)."""
    if grey and side <= 12:
        return 8
    if grey and side <= 40:
        return 28
    return 32 if side <= 48 else 64 if side <= 96 else 224


def default_model(size: int, channels: int) -> str:
    if channels == 1 and size in (8, 28):
        return "digitsnet" if size == 8 else "lenet"
    return "resnet18" if size <= 96 else "resnet50"


def recipe(channels: int, size: int) -> str:
    """The built-in data set whose method settings a data set given by a path takes ((P): MNIST's for grey images up
    to 32 px, CIFAR-10's otherwise)."""
    return "mnist" if channels == 1 and size <= 32 else "cifar10"


def _check_options(o: OwnOptions) -> None:
    if o.augment not in AUGMENTS:
        raise ConfigError(f"augment={short(o.augment)} is not one of {', '.join(AUGMENTS)}")
    if o.channels not in (0, 1, 3):
        raise ConfigError(f"channels={o.channels} must be 1 (grey), 3 (RGB) or 0 (from the images)")
    if o.image_size and not 4 <= o.image_size <= limits.IMAGE_SIZE:
        raise ConfigError(f"image_size={o.image_size} must lie in 4 .. {limits.IMAGE_SIZE} (0: the rule)")
    for name, values in (("norm_mean", o.norm_mean), ("norm_std", o.norm_std)):
        if values and not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            raise ConfigError(f"{name}={short(list(values))} must be numbers")
    if o.norm_std and min(o.norm_std) <= 0:
        raise ConfigError(f"norm_std={short(list(o.norm_std))} must be positive")
    if bool(o.norm_mean) != bool(o.norm_std):
        raise ConfigError("give norm_mean and norm_std together (or neither: the training images' own)")


def _normalisation(o: OwnOptions, decoded, index: OwnIndex, channels: int, model: str):
    """(mean, std) per channel on the 0..1 scale: as given; ImageNet's for a pretrained resnet50; else the training
    images' own (label-free, so no decision reads anything it should not)."""
    if o.norm_mean:
        if len(o.norm_mean) != channels or len(o.norm_std) != channels:
            raise ConfigError(f"norm_mean / norm_std have {len(o.norm_mean)} / {len(o.norm_std)} values for "
                              f"{channels} channel(s); give one per channel")
        return tuple(float(v) for v in o.norm_mean), tuple(float(v) for v in o.norm_std)
    if o.pretrained and model == "resnet50" and channels == 3:
        return IMAGENET_MEAN, IMAGENET_STD
    train = decoded.images[~index.is_test[decoded.kept]]
    mean, std = [], []
    for c in range(channels):
        values = train[:, c].astype(np.float64) / 255.0
        mean.append(round(float(values.mean()), 4))
        std.append(round(max(float(values.std()), 1e-3), 4))
    return tuple(mean), tuple(std)


def _subset(index: OwnIndex, keep: np.ndarray) -> OwnIndex:
    from dataclasses import replace

    return replace(index, names=index.names[keep], sources=index.sources[keep], rows=index.rows[keep],
                   is_test=index.is_test[keep], labels=index.labels[keep], clean=index.clean[keep])


def arrays(own: OwnData):
    """The data set as memomentum.data.Arrays: training images with their trusted labels (-1 unknown) and, in
    `train_given`, the labels given; the test images whose label is trusted."""
    images, index = own.decoded.images, own.index
    position = {int(p): i for i, p in enumerate(own.decoded.kept)}
    train, test = own.train_positions, own.trusted_test
    rows = [position[int(p)] for p in train]
    test_rows = [position[int(p)] for p in test]
    given = torch.from_numpy(index.labels[train].copy())
    clean = given.clone() if own.options.labels_clean else torch.from_numpy(index.clean[train].copy())
    test_labels = index.labels[test] if own.options.labels_clean else index.clean[test]
    return Arrays(_layout(torch.from_numpy(images[rows])), clean, _layout(torch.from_numpy(images[test_rows])),
                  torch.from_numpy(test_labels.copy()), train_given=None if own.options.labels_clean else given)


def _layout(images: torch.Tensor) -> torch.Tensor:
    """One-channel images with the strides numpy gives the embedded digits (their channel axis added by `[:, None]`):
    the same memory, but a convolution picks its kernel, and so its order of summation, by the input's strides, so
    a data set exported from digits trains bit for bit as digits does."""
    if images.ndim != 4 or images.shape[1] != 1:
        return images
    n, _, h, w = images.shape
    return images.as_strided((n, 1, h, w), (h * w, 1, w, 1))


def example_names(own: OwnData) -> Tuple[np.ndarray, np.ndarray]:
    """(each training example's name: its path relative to the data set, or "row N" of the manifest; the class
    names), in the order of the trial's training set (the positions selections and label issues use)."""
    return own.index.names[own.train_positions], np.array(own.index.classes, dtype=str)


def examples_parquet(own: OwnData) -> bytes:
    """The data set's examples table as Parquet bytes: `index` (the position in its training set, as selections and
    label issues name examples), `example` (its path relative to the data set, or "row N" of the manifest) and
    `given_label`; the class names in the schema's metadata ("classes", JSON)."""
    import io
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    names, classes = example_names(own)
    train = own.train_positions
    table = pa.table({"index": np.arange(len(train), dtype=np.int64), "example": names,
                      "given_label": own.index.labels[train]})
    table = table.replace_schema_metadata({"classes": json.dumps(list(classes))})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


__all__ = ["OwnOptions", "OwnData", "register", "register_config", "registered", "examples_parquet", "check_name", "arrays", "example_names", "recipe",
           "default_size", "default_model", "FIELDS", "AUGMENTS"]
