"""Typed, frozen configuration of one trial, with the official defaults (SPEC.md §1-3).

`TrialConfig.from_dict` is the only way user input becomes a config: it rejects unknown keys and
wrongly typed values with one clear message, fills in the data set's official network, and checks
ranges, so a bad grid fails before anything runs.
"""
import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from memomentum.cifar_n import HUMAN
from memomentum.errors import ConfigError, short, unknown

# Fields that say where / how fast a trial runs but never what it computes: left out of the config hash
EXECUTION_ONLY = ("device", "data_root", "download", "eval_batch_size", "checkpoint_every", "num_workers",
                  "gpu_memory_fraction")
REAL_NOISE = "real"  # the noise type of data sets whose labels are noisy as collected (Clothing1M)
PRECISIONS = ("fp32", "bf16")
MATMUL_PRECISIONS = ("fp32", "tf32")
SEED_MAX = 2 ** 32 - 1  # numpy's and torch's generators take any seed in 0 .. 2**32 - 1 the same way
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:[0-9]{1,3})?")
AUTO_WORKERS = -1  # num_workers: as many DataLoader processes as this process may use CPUs (at most 8)


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
    # --- the procedure (SPEC §2-3) -----------------------------------------------------------
    epochs_per_stage: int = 100  # epochs: cap of stage A, and length of every stage-B round
    max_outer: int = 3  # outer loops, each starting a fresh model on the current confident set
    max_inner: int = 20  # stage-B rounds per outer loop are at most max_inner - 1
    train_fraction: float = 0.9  # share of the noisy training set used for training; rest = noisy validation
    val_augment: bool = True  # score validation under the training transform, as the official code
    extract_augment: bool = True  # extract confident examples under the training transform, as official
    select_stage_a: bool = False  # let stage-A gains also set the reported test accuracy (off: official,
    #                               where a trial whose stage B never beats stage A reports 0)
    # --- optimisation (SPEC §2) --------------------------------------------------------------
    lr: float = 0.01  # SGD learning rate at the start of every stage
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 1e-4  # SGD L2 weight decay
    batch_size: int = 128  # training mini-batch, examples
    eval_batch_size: int = 1024  # evaluation and extraction batch, examples (no effect on results)
    lr_milestones: tuple = (40, 80)  # stage-B epochs (and ce epochs) where lr is multiplied by lr_gamma
    lr_gamma: float = 0.1  # lr factor at each milestone
    class_weighted: bool = False  # class-weighted cross-entropy as the official Clothing.py (default there)
    # --- Clothing1M (SPEC §4) -----------------------------------------------------------------
    image_size: int = 256  # images are resized to image_size x image_size (crop padding = image_size / 8)
    beta: float = 0.45  # per-class model score = beta * val recall + (1 - beta) * val precision
    pretrained: bool = False  # start from ImageNet weights (default true for clothing1m)
    pretrained_weights: str = ""  # local file of torchvision's ResNet-50 ImageNet state dict; "" = download
    num_workers: int = AUTO_WORKERS  # DataLoader processes decoding JPEGs; -1 = auto: the CPUs this process
    #                                  may use (a sweep trial's `cpu` resources), at most 8 (no effect on results)
    # --- the small-loss baselines coteaching / jocor (SPEC §6; they train epochs 1 .. epochs_per_stage - 1
    #     with Adam, as the reference main.py's range(1, n_epoch)) -------------------------------------------
    forget_rate: float = -1.0  # share of each batch left out once ramped up; -1 = the noise rate (jocor: half
    #                            of it for pairflip, as the reference)
    num_gradual: int = 10  # Tk: epochs over which the forget rate ramps up from 0 (linspace over epochs 0 .. Tk-1)
    exponent: float = 1.0  # c: the ramp ends at forget_rate ** c
    decay_start: int = 80  # epoch from which Adam's lr falls linearly to 0 and its beta1 is 0.1 (cifar100: 100)
    co_lambda: float = 0.9  # jocor: weight of the two networks' agreement (symmetric KL) term (cifar100: 0.85)
    coteaching_double_mean: bool = False  # coteaching: divide the mean loss by the kept count again, as the
    #                                       reference loss.py does (a much smaller step; off = the plain mean)
    # --- execution (never changes what is computed, except precision) --------------------------
    device: str = "auto"  # auto (cuda if present) | cpu | cuda | cuda:N
    precision: str = "fp32"  # fp32, or bf16 (autocast; channels_last on CUDA); recorded in results
    matmul_precision: str = "fp32"  # float32 matmuls and convolutions: fp32 (true fp32, as the official runs) or
    #                                 tf32 (faster on Ampere and later GPUs; recorded in results, a table variant)
    compile: bool = False  # torch.compile the network (faster on GPUs after a warm-up; recorded in results)
    gpu_memory_fraction: float = 0.0  # cap this process's share of its GPU's memory (0: no cap); a sweep sets it
    #                                   from a fractional `gpu` resource
    deterministic: bool = False  # torch deterministic algorithms; cudnn.benchmark is on when False
    checkpoint_every: int = 0  # also offer a resumable state every N epochs inside rounds (0 = rounds only)

    # ------------------------------------------------------------------------------------------
    def __post_init__(self):
        self._check_ranges()

    def _check_ranges(self):
        from memomentum.data import DATASETS
        from memomentum.methods import METHODS
        from memomentum.models import MODELS
        from memomentum.noise import NOISE_TYPES

        _one_of("dataset", self.dataset, DATASETS)
        _one_of("noise_type", self.noise_type, NOISE_TYPES + (REAL_NOISE, HUMAN))
        info = DATASETS[self.dataset]
        real_noise = info.real_noise
        if real_noise and self.noise_type != REAL_NOISE:
            raise ConfigError(f"{self.dataset} has real label noise: leave noise_type unset (or use '{REAL_NOISE}')")
        if not real_noise and self.noise_type == REAL_NOISE:
            raise ConfigError(f"noise_type '{REAL_NOISE}' is only for data sets collected with noisy labels "
                              f"(clothing1m); use symmetric, pairflip or instance for {self.dataset}")
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
                raise ConfigError(f"human noise has the rate of its label set: leave noise_rate unset")
        elif self.noise_label:
            raise ConfigError(f"noise_label is for noise_type {HUMAN} (CIFAR-N) only; remove it, or set "
                              f"noise_type {HUMAN}")
        _one_of("method", self.method, METHODS)
        if not METHODS[self.method].supports(info):
            fitting = sorted(name for name, m in METHODS.items() if m.supports(info))
            raise ConfigError(f"method {self.method} does not run on {self.dataset} "
                              f"({'streamed from disk, with a clean validation set' if info.streams else 'held in memory'}); "
                              f"methods for {self.dataset}: {', '.join(fitting)}")
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
        if not 0.0 <= self.beta <= 1.0:
            raise ConfigError(f"beta={self.beta} must lie in [0, 1]")
        if self.forget_rate != -1.0 and not 0.0 <= self.forget_rate < 1.0:
            raise ConfigError(f"forget_rate={self.forget_rate} must lie in [0, 1), or be -1 (the noise rate)")
        if not 0.0 <= self.co_lambda <= 1.0:
            raise ConfigError(f"co_lambda={self.co_lambda} must lie in [0, 1]")
        if self.exponent <= 0:
            raise ConfigError(f"exponent={self.exponent} must be positive")
        for name in ("epochs_per_stage", "max_outer", "max_inner", "batch_size", "eval_batch_size", "image_size",
                     "num_gradual"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be at least 1")
        if self.epochs_per_stage < METHODS[self.method].min_epochs:
            raise ConfigError(f"epochs_per_stage={self.epochs_per_stage} is too short for {self.method}: it must be at "
                              f"least {METHODS[self.method].min_epochs}")
        for name in ("lr", "momentum", "weight_decay", "lr_gamma", "checkpoint_every", "decay_start"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)} must not be negative")
        if self.num_workers < AUTO_WORKERS:
            raise ConfigError(f"num_workers={self.num_workers} must be -1 (auto) or at least 0")
        if any(not isinstance(m, int) or m < 1 for m in self.lr_milestones):
            raise ConfigError(f"lr_milestones={list(self.lr_milestones)} must be positive whole epochs")
        if not DEVICE_PATTERN.fullmatch(self.device):
            raise ConfigError(f"device={short(self.device)} is not one of auto, cpu, cuda, cuda:N (N = 0, 1, ...)")

    # ------------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrialConfig":
        """Strict construction: unknown keys and wrong types raise ConfigError naming the key."""
        if not isinstance(values, Mapping):
            raise ConfigError(f"a trial config must be a mapping of field: value, got {type(values).__name__}")
        kinds = field_types()
        checked = {}
        for key, value in values.items():
            if key not in kinds:
                raise ConfigError(unknown("config field", key, kinds))
            checked[key] = _check_type(key, value, kinds[key])
        dataset = checked.get("dataset", cls.dataset)
        method = checked.get("method") or official_defaults(dataset)["method"]  # the data set's own default
        defaults = cell_defaults(dataset, method, checked.get("noise_type"), checked.get("noise_rate"))
        return cls(**{**defaults, "method": method, **checked})

    def replace(self, **changes) -> "TrialConfig":
        return TrialConfig.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["lr_milestones"] = list(self.lr_milestones)
        return out

    def trial_name(self) -> str:
        """Readable trial name: data set, noise, rate (or human label set), seed, method."""
        setting = self.noise_label if self.noise_type == HUMAN else f"{self.noise_rate:g}"
        return f"{self.dataset}-{self.noise_type}-{setting}-s{self.seed}-{self.method}"

    def trial_key(self) -> str:
        """Stable identity of the trial across runs: its name plus the hash of what it computes."""
        return f"{self.trial_name()}-{self.config_hash()[:8]}"

    def config_hash(self) -> str:
        """Stable short hash of what the trial computes: the data set plus every setting that differs
        from that data set's official defaults (execution-only fields left out). A field added later
        with a default therefore leaves the hashes, and the keys of finished sweep cells, unchanged."""
        base = official_defaults(self.dataset)
        keyed = {k: v for k, v in self.to_dict().items() if k not in EXECUTION_ONLY and v != base[k]}
        keyed["dataset"] = self.dataset
        return hashlib.sha1(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:12]

    def differences(self) -> dict:
        """The fields whose value differs from the official settings of this cell (its data set, method
        and noise), execution-only fields left out: what makes a trial a variant of the published setup."""
        base = official_defaults(self.dataset, self.method, self.noise_type, self.noise_rate)
        return {k: v for k, v in self.to_dict().items() if k not in EXECUTION_ONLY and k not in ("seed", "noise_label")
                and v != base[k]}


def cell_defaults(dataset: str, method: str, noise_type=None, noise_rate=None) -> dict:
    """The official settings of a (data set, method, noise) cell that differ from the dataclass defaults:
    the data set's (SPEC §4), the method's own (e.g. a baseline's optimiser, SPEC §6), and the data
    set's for that method. Unknown names give {} (validation then says what is wrong)."""
    from memomentum.data import DATASETS
    from memomentum.methods import METHODS

    info = DATASETS.get(dataset)
    out = dict(info.defaults) if info is not None else {}
    if info is not None:
        out["model"] = info.model
    noise_type = noise_type if noise_type is not None else out.get("noise_type", TrialConfig.noise_type)
    if noise_type == HUMAN:  # the label set has its own rate
        out["noise_rate"] = 0.0
    noise_rate = noise_rate if noise_rate is not None else out.get("noise_rate", TrialConfig.noise_rate)
    if method in METHODS:
        out.update(METHODS[method].defaults(dataset, noise_type, noise_rate))
    if info is not None:
        out.update(info.method_defaults.get(method, {}))
    return out


def official_defaults(dataset: str, method: Optional[str] = None, noise_type=None, noise_rate=None) -> dict:
    """Every field's official value: of the data set alone (method None: the dataclass defaults plus the
    data set's), or of a whole cell (plus the method's, with the cell's method and noise filled in)."""
    out = {f.name: f.default for f in dataclasses.fields(TrialConfig)}
    if method is None:
        from memomentum.data import DATASETS

        info = DATASETS.get(dataset)
        out.update(info.defaults if info is not None else {}, model=info.model if info is not None else "")
    else:
        out.update(cell_defaults(dataset, method, noise_type, noise_rate), method=method)
        out.update({k: v for k, v in (("noise_type", noise_type), ("noise_rate", noise_rate)) if v is not None})
    out["dataset"] = dataset
    out["lr_milestones"] = list(out["lr_milestones"])
    return out


def field_types() -> dict:
    return {f.name: f.type for f in dataclasses.fields(TrialConfig)}


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
        if kind is tuple:
            return tuple(int(part) for part in text.replace(" ", "").strip("[]()").split(",") if part)
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
            tuple: "a list of whole numbers"}[kind]


def _one_of(what: str, value: str, valid) -> None:
    if value not in valid:
        raise ConfigError(unknown(what, value, valid))


__all__ = ["TrialConfig", "ConfigError", "EXECUTION_ONLY", "REAL_NOISE", "PRECISIONS", "SEED_MAX", "parse_value",
           "parse_assignments", "field_types", "official_defaults", "cell_defaults"]
