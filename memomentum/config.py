"""Typed, frozen configuration of one trial, with the official defaults (SPEC.md §1-4, §6).

A config is the settings every method shares (the fields of `TrialConfig`) plus the settings of its
method (`TrialConfig.options`, an instance of the method's own `Options` dataclass; see
memomentum/methods/method.py). Users write both flat: `{"lr": 0.02, "forget_rate": 0.3}`, `--set
forget_rate=0.3`; `TrialConfig.from_dict` routes each key to where it belongs, rejects unknown keys,
keys of another method and wrongly typed values with one clear message, fills in the official
settings of the cell (the data set's, then the method's for that data set), and checks ranges, so a bad
grid fails before anything runs.
"""
import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional

from memomentum import limits
from memomentum.cifar_n import HUMAN
from memomentum.errors import ConfigError, short, unknown

# Fields that say where / how fast a trial runs but never what it computes: left out of the config hash
EXECUTION_ONLY = ("device", "data_root", "download", "eval_batch_size", "checkpoint_every", "num_workers",
                  "gpu_memory_fraction", "threads", "data_path", "skip_bad_images", "export")
# settings of a data set given by a path (memomentum/owndata.py) only; left at their defaults for a built-in one
OWN_ONLY = ("data_path", "data_fingerprint", "labels_clean", "channels", "augment", "norm_mean", "norm_std",
            "skip_bad_images")
REAL_NOISE = "real"  # the noise type of data sets whose labels are noisy as collected (Clothing1M)
PRECISIONS = ("fp32", "bf16")
MATMUL_PRECISIONS = ("fp32", "tf32")
SEED_MAX = 2 ** 32 - 1  # numpy's and torch's generators take any seed in 0 .. 2**32 - 1 the same way
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:[0-9]{1,3})?")
MAX_THREADS = 1024  # threads: more is a typo, and torch would try to start them
AUTO_WORKERS = -1  # num_workers: as many DataLoader processes as this process may use CPUs (at most 8)
BASE_METHOD_VERSION = 1  # a method at this version adds nothing to its trials' keys (see config_hash)


@dataclass(frozen=True)
class TrialConfig:
    # --- what to run -------------------------------------------------------------------------
    dataset: str = "digits"  # data set name, one of memomentum.data.DATASETS
    noise_type: str = "symmetric"  # one of memomentum.noise.NOISE_TYPES
    noise_rate: float = 0.2  # target share of flipped training labels, in [0, 1) (unset for real / human noise)
    noise_label: str = ""  # noise_type human: the label set, e.g. aggre, random1..3, worst (cifar10), noisy (cifar100)
    seed: int = 1  # 0 .. 2**32 - 1; seeds the noise, the split, every model init, shuffling and augmentation
    method: str = "memomentum"  # one of memomentum.METHODS (python -m memomentum --list-methods)
    model: str = ""  # network name from memomentum.models.MODELS; "" = the data set's official one
    data_root: str = ""  # folder with the data set files; "" = $MEMOMENTUM_DATA, else ./data
    download: bool = False  # let torchvision download missing files (never needed for digits)
    # --- training, for every method (SPEC §2) ------------------------------------------------
    epochs_per_stage: int = 100  # epochs of a round (Me-Momentum: cap of stage A and length of a stage-B round)
    train_fraction: float = 0.9  # share of the noisy training set used for training; rest = noisy validation
    val_augment: bool = True  # score validation under the training transform, as the official code
    lr: float = 0.01  # learning rate at the start of every round
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 1e-4  # L2 weight decay
    batch_size: int = 128  # training mini-batch, examples
    eval_batch_size: int = 1024  # evaluation and extraction batch, examples (no effect on results)
    lr_milestones: tuple = (40, 80)  # epochs of a round where lr is multiplied by lr_gamma (SGD methods)
    lr_gamma: float = 0.1  # lr factor at each milestone
    # --- images and networks (Clothing1M, SPEC §4) --------------------------------------------
    image_size: int = 256  # streamed images (and those of a data set given by a path, where it defaults to the rule of
    #                        memomentum/owndata.py) are resized to image_size x image_size (crop padding = image_size / 8)
    pretrained: bool = False  # start from ImageNet weights (default true for clothing1m)
    pretrained_weights: str = ""  # local file of torchvision's ResNet-50 ImageNet state dict; "" = download
    num_workers: int = AUTO_WORKERS  # DataLoader processes decoding JPEGs; -1 = auto: the CPUs this process
    #                                  may use (a sweep trial's `cpu` resources), at most 8 (no effect on results)
    # --- execution (never changes what is computed, except precision) --------------------------
    device: str = "auto"  # auto (cuda if present) | cpu | cuda | cuda:N
    precision: str = "fp32"  # fp32, or bf16 (autocast; channels_last on CUDA); recorded in results
    matmul_precision: str = "fp32"  # float32 matmuls and convolutions: fp32 (true fp32, as the official runs) or
    #                                 tf32 (faster on Ampere and later GPUs; recorded in results, a table variant)
    compile: bool = False  # torch.compile the network (faster on GPUs after a warm-up; recorded in results)
    gpu_memory_fraction: float = 0.0  # cap this process's share of its GPU's memory (0: no cap); a sweep sets it
    #                                   from a fractional `gpu` resource
    threads: int = 0  # torch's CPU threads for the trial; 0 = the rule of memomentum/threads.py: a sweep trial's `cpu`
    #                   resource, else 1 for the small networks and the CPUs the process may use for the others
    #                   (DataLoader workers count against both); never in the key, though like the device it
    #                   can change the last bits of sums (recorded in results)
    deterministic: bool = False  # torch deterministic algorithms; cudnn.benchmark is on when False
    checkpoint_every: int = 0  # also offer a resumable state every N epochs inside rounds (0 = rounds only)
    export: bool = False  # write the selected model and the label-issues table of the trial (on by default for a
    #                       data set given by a path; never changes what is computed)
    # --- a data set given by a path: the user's own images (memomentum/owndata.py) --------------
    data_path: str = ""  # a folder (train/<class>/<image>, optional test/) or a manifest (.csv / .parquet)
    data_fingerprint: str = ""  # of its files, labels and decode settings, set when the config is made: in the key
    labels_clean: bool = False  # its labels are clean, and synthetic noise goes on top (false: they are the noise)
    channels: int = 0  # 1 (grey) or 3 (RGB); 0: from the images
    augment: str = "auto"  # none, flip, crop, crop+flip; auto: none for grey images up to 32 px, else crop + flip
    norm_mean: tuple = ()  # per-channel mean on the 0..1 scale; (): the training images' own
    norm_std: tuple = ()  # per-channel std on the 0..1 scale; (): the training images' own
    skip_bad_images: bool = False  # leave out (and count) files that are not readable images instead of stopping
    # --- the method's own settings ------------------------------------------------------------
    options: Any = None  # an instance of METHODS[method].options; None: its defaults

    # ------------------------------------------------------------------------------------------
    def __post_init__(self):
        self._check_ranges()

    def _check_ranges(self):
        from memomentum.data import DATASETS, info as dataset_info
        from memomentum.methods import METHODS
        from memomentum.models import MODELS
        from memomentum.noise import NOISE_TYPES

        info = dataset_info(self.dataset)
        if info is None:
            raise ConfigError(unknown("dataset", self.dataset, DATASETS) + "; or give the path of your own images "
                                                                             "(data_path)")
        _one_of("noise_type", self.noise_type, NOISE_TYPES + (REAL_NOISE, HUMAN))
        if not info.given_by_path:
            fields = {f.name: f.default for f in dataclasses.fields(self)}
            for name in OWN_ONLY:
                if getattr(self, name) != fields[name]:
                    raise ConfigError(f"{name} is a setting of data sets given by a path (data_path), not of "
                                      f"{self.dataset}; remove it")
        real_noise = info.real_noise
        if real_noise and self.noise_type != REAL_NOISE:
            declare = " (or declare its labels clean: labels_clean: true)" if info.given_by_path else ""
            raise ConfigError(f"{self.dataset} has real label noise: leave noise_type unset (or use "
                              f"'{REAL_NOISE}'){declare}")
        if not real_noise and self.noise_type == REAL_NOISE:
            raise ConfigError(f"noise_type '{REAL_NOISE}' is only for data sets collected with noisy labels "
                              f"(clothing1m, or your own images whose labels are not declared clean); use "
                              f"symmetric, pairflip or instance for {self.dataset}")
        if real_noise and self.noise_rate != 0:
            raise ConfigError(f"{self.dataset} has real label noise: leave noise_rate unset")
        if self.noise_type == HUMAN:
            labels = info.human_noise.labels if info.human_noise is not None else {}
            if not labels:
                having = [name for name, d in DATASETS.items() if d.human_noise is not None]
                raise ConfigError(f"noise_type {HUMAN} (CIFAR-N) is for {' and '.join(having)}, not {self.dataset}")
            if self.noise_label not in labels:
                raise ConfigError(f"noise_label={short(self.noise_label)} is not a {self.dataset} human label set; "
                                  f"use one of: {', '.join(labels)}")
            if self.noise_rate != 0:
                raise ConfigError("human noise has the rate of its label set: leave noise_rate unset")
        elif self.noise_label:
            raise ConfigError(f"noise_label is for noise_type {HUMAN} (CIFAR-N) only; remove it, or set "
                              f"noise_type {HUMAN}")
        _one_of("method", self.method, METHODS)
        method = METHODS[self.method]
        if not method.supports(info):
            fitting = sorted(name for name, m in METHODS.items() if m.supports(info))
            raise ConfigError(f"method {self.method} does not run on {self.dataset} "
                              f"({'streamed from disk, with a clean validation set' if info.streams else 'held in memory'}); "
                              f"methods for {self.dataset}: {', '.join(fitting)}")
        if self.options is None:
            object.__setattr__(self, "options", method.options())
        elif type(self.options) is not method.options:
            raise ConfigError(f"options {type(self.options).__name__} are not those of method {self.method} "
                              f"({method.options.__name__})")
        self.options.check_config(self)
        _one_of("precision", self.precision, PRECISIONS)
        _one_of("matmul_precision", self.matmul_precision, MATMUL_PRECISIONS)
        if not 0.0 <= self.gpu_memory_fraction <= 1.0:
            raise ConfigError(f"gpu_memory_fraction={self.gpu_memory_fraction} must lie in [0, 1] (0: no cap)")
        if self.model:
            _one_of("model", self.model, MODELS)
        if not 0 <= self.seed <= SEED_MAX:
            raise ConfigError(f"seed={short(self.seed)} is outside 0 .. {SEED_MAX}; use a whole number in that range")
        if not 0.0 <= self.noise_rate < 1.0:
            raise ConfigError(f"noise_rate={self.noise_rate} is outside [0, 1); use e.g. 0.2 for 20% noise")
        if not 0.0 < self.train_fraction < 1.0:
            raise ConfigError(f"train_fraction={self.train_fraction} must lie strictly between 0 and 1")
        for name, limit, unit in (("epochs_per_stage", limits.EPOCHS, "epochs"), ("batch_size", limits.BATCH, "examples"),
                                  ("eval_batch_size", limits.BATCH, "examples"),
                                  ("image_size", limits.IMAGE_SIZE, "pixels")):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be at least 1")
            limits.at_most(name, getattr(self, name), limit, unit)
        limits.at_most("checkpoint_every", self.checkpoint_every, limits.EPOCHS, "epochs")
        if self.epochs_per_stage < method.min_epochs:
            raise ConfigError(f"epochs_per_stage={self.epochs_per_stage} is too short for {self.method}: it must be at "
                              f"least {method.min_epochs}")
        for name in ("lr", "momentum", "weight_decay", "lr_gamma", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)} must not be negative")
        if not 0 <= self.threads <= MAX_THREADS:
            raise ConfigError(f"threads={self.threads} must be 0 (the rule: memomentum/threads.py) or a count of CPU "
                              f"threads from 1 to {MAX_THREADS}")
        if not AUTO_WORKERS <= self.num_workers <= MAX_THREADS:
            raise ConfigError(f"num_workers={self.num_workers} must be -1 (auto) or a count from 0 to {MAX_THREADS}")
        if any(not isinstance(m, int) or isinstance(m, bool) or not 1 <= m <= limits.EPOCHS for m in self.lr_milestones):
            raise ConfigError(f"lr_milestones={short(list(self.lr_milestones))} must be whole epochs from 1 to "
                              f"{limits.EPOCHS:,}")
        if not DEVICE_PATTERN.fullmatch(self.device):
            raise ConfigError(f"device={short(self.device)} is not one of auto, cpu, cuda, cuda:N (N = 0, 1, ...)")

    # ------------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrialConfig":
        """Strict construction from flat values: unknown keys, keys of another method's options and wrong
        types raise ConfigError naming the key; the cell's official settings fill in the rest."""
        if not isinstance(values, Mapping):
            raise ConfigError(f"a trial config must be a mapping of field: value, got {type(values).__name__}")
        for key in ("dataset", "method"):
            if key in values and values[key] is not None:
                _check_type(key, values[key], str)
        dataset = values.get("dataset") or cls.dataset
        method = values.get("method") or official_defaults(dataset).get("method", cls.method)
        own = field_types(method)  # shared fields and the method's options (all of them if the name is unknown)
        checked = {}
        for key, value in values.items():
            if key not in own:
                raise ConfigError(not_a_field(key, method))
            checked[key] = _check_type(key, value, own[key])
        checked.update(dataset=dataset, method=method)
        if checked.get("data_path"):  # read, checked and decoded once (cached on disk), registered under its name
            from memomentum import owndata
            from memomentum.data import DATASETS

            checked["data_fingerprint"] = owndata.register_config(dataset, checked, DATASETS)
        flat = {**cell_defaults(dataset, method, checked.get("noise_type")), **checked}
        return cls._build(flat)

    @classmethod
    def _build(cls, flat: Mapping[str, Any]) -> "TrialConfig":
        """The config of flat values that are all shared fields or the method's options."""
        options = _options_class(flat.get("method", cls.method))
        shared = shared_types()
        opts = {k: v for k, v in flat.items() if k not in shared}
        try:
            built = options(**opts) if options is not None else None
        except TypeError as exc:  # a key the method does not have: from_dict reports these before
            raise ConfigError(f"method {flat.get('method')}: {exc}") from None
        return cls(**{k: v for k, v in flat.items() if k in shared}, options=built)

    @classmethod
    def from_stored(cls, values: Mapping[str, Any]) -> "TrialConfig":
        """The config of a stored trial file (trial.json), leniently: keys that its method does not have
        (files written before a method owned its settings held every method's) are left out, and fields
        added since take their defaults. Raises ConfigError if what is left is not a valid config."""
        if not isinstance(values, Mapping):
            raise ConfigError("a stored trial config must be a mapping")
        method = values.get("method") if isinstance(values.get("method"), str) else None
        own = field_types(method or cls.method)
        return cls.from_dict({k: v for k, v in values.items() if k in own})

    def replace(self, **changes) -> "TrialConfig":
        """A copy with `changes` (flat); changing the method drops the old method's options."""
        keep = self.to_dict() if changes.get("method", self.method) == self.method else self.shared_dict()
        return TrialConfig.from_dict({**keep, **changes})

    def shared_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "options"}
        out["lr_milestones"] = list(self.lr_milestones)
        return out

    def to_dict(self) -> dict:
        """Flat: the shared fields and the method's options, as a user writes them."""
        return {**self.shared_dict(), **self.options.to_dict()}

    def trial_name(self) -> str:
        """Readable trial name: data set, noise, rate (or human label set), seed, method."""
        setting = self.noise_label if self.noise_type == HUMAN else f"{self.noise_rate:g}"
        return f"{self.dataset}-{self.noise_type}-{setting}-s{self.seed}-{self.method}"

    def trial_key(self) -> str:
        """Stable identity of the trial across runs: its name plus the hash of what it computes."""
        return f"{self.trial_name()}-{self.config_hash()[:8]}"

    def method_version(self) -> int:
        from memomentum.methods import METHODS

        return METHODS[self.method].version

    def config_hash(self) -> str:
        """Stable short hash of what the trial computes: the data set, every setting that differs from
        the defaults of the data set and the method's options' own defaults (execution-only fields left
        out), and the method's version from 2 on. A field added later with a default, and version 1,
        therefore leave the hashes, and the keys of finished sweep cells, unchanged; raising a method's
        version changes the keys of its trials only."""
        base = {**official_defaults(self.dataset), **_dataset_options(self.dataset, type(self.options))}
        keyed = {k: v for k, v in self.to_dict().items() if k not in EXECUTION_ONLY and v != base[k]}
        keyed["dataset"] = self.dataset
        version = self.method_version()
        if version != BASE_METHOD_VERSION:
            keyed["method_version"] = version
        return hashlib.sha1(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:12]

    def differences(self) -> dict:
        """The fields whose value differs from the official settings of this cell (its data set, method
        and noise), execution-only fields left out: what makes a trial a variant of the published setup."""
        base = official_defaults(self.dataset, self.method, self.noise_type, self.noise_rate)
        return {k: v for k, v in self.to_dict().items() if k not in EXECUTION_ONLY
                and k not in ("seed", "noise_label", "data_fingerprint") and v != base[k]}


def _options_class(method: str):
    from memomentum.methods import METHODS

    return METHODS[method].options if method in METHODS else None


def _dataset_options(dataset: str, options) -> dict:
    """The method's option defaults, with the data set's own settings for any of them (SPEC §4)."""
    from memomentum.data import info as dataset_info

    info = dataset_info(dataset) if isinstance(dataset, str) else None
    out = options().to_dict()
    if info is not None:
        out.update({k: v for k, v in info.defaults.items() if k in out})
    return out


def cell_defaults(dataset: str, method: str, noise_type=None) -> dict:
    """The official settings of a (data set, method, noise) cell that differ from the dataclass defaults:
    the data set's (SPEC §4; only the fields the method has), its network, and the method's own for that
    data set (e.g. a baseline's optimiser, SPEC §6). Unknown names give {} (validation then says what is
    wrong)."""
    from memomentum.data import info as dataset_info
    from memomentum.methods import METHODS

    info = dataset_info(dataset) if isinstance(dataset, str) else None
    own = field_types(method) if method in METHODS else shared_types()
    out = {k: v for k, v in (info.defaults if info is not None else {}).items() if k in own}
    if info is not None:
        out["model"] = info.model
    if (noise_type or out.get("noise_type")) == HUMAN:  # the label set has its own rate
        out["noise_rate"] = 0.0
    if method in METHODS:  # a data set given by a path takes the settings of its recipe's data set
        out.update(METHODS[method].defaults_for(info.recipe if info is not None and info.recipe else dataset))
    return out


def official_defaults(dataset: str, method: Optional[str] = None, noise_type=None, noise_rate=None) -> dict:
    """Every field's official value, flat: of the data set alone (method None: the shared fields' defaults
    plus the data set's), or of a whole cell (plus the method's options and its settings for the data
    set, with the cell's method and noise filled in)."""
    out = {f.name: f.default for f in dataclasses.fields(TrialConfig) if f.name != "options"}
    from memomentum.data import info as dataset_info

    info = dataset_info(dataset) if isinstance(dataset, str) else None
    if method is None:
        out.update({k: v for k, v in (info.defaults if info is not None else {}).items() if k in out},
                   model=info.model if info is not None else "")
    else:
        options = _options_class(method)
        if options is not None:
            out.update(options().to_dict())
        out.update(cell_defaults(dataset, method, noise_type), method=method)
        out.update({k: v for k, v in (("noise_type", noise_type), ("noise_rate", noise_rate)) if v is not None})
    out["dataset"] = dataset
    out["lr_milestones"] = list(out["lr_milestones"])
    return out


def stored_config(values: Mapping[str, Any]) -> dict:
    """A stored trial config (trial.json) as flat values for tables, never refused: fields added since it was
    written at their defaults, keys its method does not have (older files held every method's) left out."""
    dataset, method = values.get("dataset"), values.get("method")
    own = field_types(method if isinstance(method, str) else None)
    options = _options_class(method) if isinstance(method, str) else None
    base = {**official_defaults(dataset), **(_dataset_options(dataset, options) if options is not None else {})}
    return {**base, **{k: v for k, v in values.items() if k in own}}


def own_differences(values: Mapping[str, Any]) -> dict:
    """The differences() of a stored config of a data set given by a path, without its files: the training and method
    settings that differ from those of its recipe's data set (the data set's own presentation, image size, network,
    augmentation and normalisation, belongs to its fingerprint, not to a variant)."""
    from memomentum import owndata

    base = official_defaults(owndata.recipe(values["channels"], values["image_size"]), values["method"],
                             values["noise_type"], values["noise_rate"])
    skip = set(EXECUTION_ONLY) | set(OWN_ONLY) | {"seed", "noise_label", "dataset", "image_size", "model"}
    return {k: v for k, v in values.items() if k not in skip and k in base and v != base[k]}


def shared_types() -> Dict[str, type]:
    """The fields every method shares -> their types."""
    return {f.name: f.type for f in dataclasses.fields(TrialConfig) if f.name != "options"}


def field_types(method: Optional[str] = None) -> Dict[str, type]:
    """The settings a user may write -> their types: the shared fields plus `method`'s options (None, or a
    name that is not a method: every method's options)."""
    from memomentum.methods import METHODS

    out = shared_types()
    chosen = [METHODS[method]] if method in METHODS else list(METHODS.values())
    for m in chosen:
        out.update(m.options.field_types())
    return out


def owners(key: str) -> list:
    """The methods whose options include `key`."""
    from memomentum.methods import METHODS

    return [name for name, m in METHODS.items() if key in m.options.field_types()]


def not_a_field(key: Any, method: str) -> str:
    """The message for a key that method `method` does not take: another method's setting, or unknown."""
    having = owners(key) if isinstance(key, str) else []
    if having:
        return (f"config field {key!r} is a setting of {', '.join(having)}, not of {method}; remove it, or set it "
                f"for {'that method' if len(having) == 1 else 'those methods'} only (a grid's method_config)")
    return unknown("config field", key, field_types(method))


def parse_value(key: str, text: str) -> Any:
    """Turn the text of `--set key=value` into the field's type (bool: true/false, tuple: 40,80)."""
    kinds = field_types()
    if key not in kinds:
        raise ConfigError(unknown("config field", key, kinds))
    kind = kinds[key]
    try:
        if kind is bool:
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return text.lower() in ("true", "1", "yes")
        if kind is tuple:  # whole numbers as such (epochs), others as floats (a normalisation)
            parts = [part for part in text.replace(" ", "").strip("[]()").split(",") if part]
            return tuple(int(part) if part.lstrip("-").isdigit() else float(part) for part in parts)
        return kind(text)
    except ValueError:
        raise ConfigError(f"{key}={short(text)} is not a valid {kind.__name__}") from None


def parse_assignments(items) -> dict:
    """['a=1', 'b=true'] -> {'a': 1, 'b': True}, typed by the config fields."""
    out = {}
    for item in items or ():
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {short(item)} must look like key=value, e.g. --set epochs_per_stage=5")
        out[key.strip()] = parse_value(key.strip(), text.strip())
    return out


def _check_type(key: str, value: Any, kind: type) -> Any:
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
        tuple: isinstance(value, (list, tuple)),
    }[kind]
    if not ok:
        raise ConfigError(f"config field {short(key)} must be {_kind_name(kind)}, got {short(value)}")
    if kind is float:
        if not math.isfinite(value):
            raise ConfigError(f"config field {key!r} must be a finite number, got {short(value)}")
        return float(value)
    if kind is tuple:
        return tuple(value)
    return value


def _kind_name(kind: type) -> str:
    return {bool: "true or false", int: "a whole number", float: "a number", str: "a string",
            tuple: "a list of numbers"}[kind]


def _one_of(what: str, value: str, valid) -> None:
    if value not in valid:
        raise ConfigError(unknown(what, value, valid))


__all__ = ["TrialConfig", "ConfigError", "EXECUTION_ONLY", "REAL_NOISE", "PRECISIONS", "SEED_MAX", "parse_value",
           "parse_assignments", "field_types", "shared_types", "owners", "not_a_field", "official_defaults",
           "cell_defaults", "stored_config"]
