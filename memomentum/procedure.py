"""One trial of Me-Momentum (SPEC §3) or of the `ce` baseline, as a resumable iterator of records.

    trial = Trial(cfg)                      # loads data, noisy labels, split; nothing trains yet
    for record in trial.records():          # {"kind": "epoch" | "round" | "result", ...}
        if record.get("resumable"):
            torch.save(trial.state_dict(), path)   # loadable with torch.load(..., weights_only=True)
    Trial(cfg, state=torch.load(path, weights_only=True)).records()   # continues with the same records

Method `memomentum` follows the official main.py loop for loop:
    for outer in 1..max_outer:
        stage A: fresh model, constant lr, early stopped by the slack rule; its best state is `keep`
        stage B, at most max_inner - 1 rounds: model <- keep; confident <- {i in train split:
            argmax model(x_i) == noisy_i}; train a new SGD (lr x0.1 at epochs 40, 80) on confident;
            stop the outer loop once a round does not raise the stage's best validation score
    The confident set carries into the next outer loop (its stage A trains a fresh model on it).
    Only stage-B improvements of the trial's best validation score update the reported test accuracy
    (so a trial whose stage B never beats stage A reports 0, as the official code does; the result's
    `best_stage` is then None). `select_stage_a=True` lets stage-A gains count too.
Method `ce`: one stage of `epochs_per_stage` epochs on all noisy training labels, the stage-B learning
rate schedule, and the same model selection (test accuracy at the best noisy-validation score).

Clean labels are read only by `_diagnostics` (precision / recall of the confident set).
"""
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import numpy as np
import torch

from memomentum import data as data_mod
from memomentum import noise
from memomentum.config import ConfigError, TrialConfig
from memomentum.data import DatasetInfo
from memomentum.engine import Engine, lr_at, resolve_device, sgd, state_copy
from memomentum.models import create_model
from memomentum.progress import fmt

STATE_VERSION = 1
SLACK_STEP = 0.1  # stage A: the improvement threshold grows by this after every non-improving epoch
SLACK_LIMIT = 2  # ... and stage A stops once it exceeds this (after 20 such epochs, in floating point)


@dataclass(frozen=True)
class TrialData:
    """Everything a trial reads, already on its device."""
    images: torch.Tensor  # uint8 (N, C, H, W): all official training images
    noisy_labels: torch.Tensor  # int64 (N,): the only labels training, selection and stopping see
    clean_labels: torch.Tensor  # int64 (N,): diagnostics only
    train_idx: torch.Tensor  # training split (the only examples extraction scans)
    val_idx: torch.Tensor  # noisy validation split
    test_images: torch.Tensor
    test_labels: torch.Tensor
    info: DatasetInfo
    realized_noise_rate: float
    label_hash: str


def prepare(cfg: TrialConfig, device: torch.device) -> TrialData:
    info = data_mod.DATASETS[cfg.dataset]
    arrays = data_mod.load(cfg.dataset, cfg.data_root, cfg.download)
    ns = noise.noisy_split(cfg.dataset, cfg.noise_type, cfg.noise_rate, cfg.seed, cfg.train_fraction,
                           arrays.train_labels, arrays.train_images, info.num_classes)
    return TrialData(arrays.train_images.to(device), ns.noisy_labels.to(device), arrays.train_labels.to(device),
                     ns.train_idx.to(device), ns.val_idx.to(device), arrays.test_images.to(device),
                     arrays.test_labels.to(device), info, ns.realized_noise_rate, ns.label_hash)


def extract_confident(engine: Engine, model, images, noisy_labels, train_idx, augment: bool) -> torch.Tensor:
    """Indices (into the full set) of training-split examples whose prediction equals their noisy label."""
    preds = engine.predict(model, images, train_idx, augment)
    return train_idx[preds == noisy_labels[train_idx]]


def derive_seed(seed: int, purpose: int) -> int:
    return int(np.random.SeedSequence([seed, purpose]).generate_state(1)[0])


class TrialBase:
    """What every procedure shares: config and device set-up, the record loop, the clock, the
    checkpoint state (`self.s` plus the live model and optimizer inside a round) and the result."""

    data = None  # set by subclasses: an object with train_idx, realized_noise_rate, label_hash
    _model = _optimizer = None

    def __init__(self, cfg: TrialConfig):
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = not cfg.deterministic
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)

    def _initial_state(self, **fields) -> dict:
        return {"version": STATE_VERSION, "config_hash": self.cfg.config_hash(), "outer": 1, "inner": 0,
                "epoch": 0, "step": 0, "done": False, "elapsed": 0.0, "best_val": 0.0, "best_test": 0.0,
                "best_stage": None, "train_idx": self.data.train_idx, "first_idx": None, "model": None,
                "optimizer": None, "rounds": [], **fields}

    def records(self) -> Iterator[dict]:
        self._clock = (time.perf_counter(), self.s["elapsed"])
        while not self.s["done"]:
            yield from self._round()
        self._tick()
        yield self.result()

    def _round(self) -> Iterator[dict]:
        raise NotImplementedError

    def _epoch_records(self, round_over: bool, **values) -> Iterator[dict]:
        """The record of the epoch just trained and, when it ends its round, the round's record."""
        s = self.s
        self._tick()
        record = {"kind": "epoch", "outer": s["outer"], "inner": s["inner"], "epoch": s["epoch"], "step": s["step"],
                  "n_train": len(s["train_idx"]), **values, "best_val_score": s["best_val"],
                  "best_test_acc": s["best_test"], "seconds": s["elapsed"]}
        if round_over:
            round_record = self._end_round()
            yield {**record, "resumable": False}
            yield round_record
            return
        record["resumable"] = bool(self.cfg.checkpoint_every) and s["epoch"] % self.cfg.checkpoint_every == 0
        yield record

    def _end_round(self) -> dict:
        raise NotImplementedError

    def _tick(self) -> None:
        start, base = self._clock
        self.s["elapsed"] = base + time.perf_counter() - start

    def describe(self) -> str:
        train, val, test = self._sizes()
        return f"realised noise {fmt(self.data.realized_noise_rate, '.4f')}; train {train}, val {val}, test {test}"

    def _sizes(self):
        d = self.data
        return len(d.train_idx), len(d.val_idx), len(d.test_labels)

    def _diagnostics(self, idx: torch.Tensor) -> dict:
        """Confident-set quality from CLEAN labels (never used for a decision), in %. Examples whose
        clean label is unknown (-1, as for most of Clothing1M) are left out of both shares."""
        d, first = self.data, self.s["first_idx"]
        known = d.clean_labels >= 0
        right = (d.noisy_labels == d.clean_labels) & known
        n_right_train = int(right[d.train_idx].sum())
        chosen_known, chosen_right = known[idx], right[idx]
        n_chosen_right = int(chosen_right.sum())
        out = {"n_confident": len(idx),
               "precision": _pct(n_chosen_right, int(chosen_known.sum())),
               "recall": _pct(n_chosen_right, n_right_train),
               "n_hard": 0, "hard_precision": None}
        if first is not None:
            hard = ~torch.isin(idx, first)
            out["n_hard"] = int(hard.sum())
            out["hard_precision"] = _pct(int(chosen_right[hard].sum()), int(chosen_known[hard].sum()))
        return out

    def result(self) -> dict:
        cfg, s, d = self.cfg, self.s, self.data
        last = s["rounds"][-1] if s["rounds"] else {}
        return {"kind": "result", "dataset": cfg.dataset, "noise_type": cfg.noise_type,
                "noise_rate": cfg.noise_rate, "seed": cfg.seed, "method": cfg.method, "model": cfg.model,
                "precision_mode": cfg.precision,
                "test_acc": s["best_test"], "best_val_score": s["best_val"], "best_stage": s["best_stage"],
                "realized_noise_rate": d.realized_noise_rate, "epochs": s["step"],
                "seconds": round(s["elapsed"], 3), "n_rounds": len(s["rounds"]),
                "final_n_confident": last.get("n_confident"), "final_precision": last.get("precision"),
                "final_recall": last.get("recall"), "label_hash": d.label_hash,
                "config_hash": cfg.config_hash(), "device": str(self.device), "rounds": list(s["rounds"])}

    # --- checkpoints ------------------------------------------------------------------------
    def _generator(self) -> torch.Generator:
        raise NotImplementedError

    def state_dict(self) -> dict:
        """Everything needed to continue exactly; tensors on the CPU; safe for weights_only loading."""
        state = dict(self.s)
        state["generator"] = self._generator().get_state()
        if self._model is not None:  # inside a round
            state["model"] = state_copy(self._model)
            state["optimizer"] = self._optimizer.state_dict()
        return _to_device(state, torch.device("cpu"))

    def load_state_dict(self, state: dict) -> None:
        if state.get("version") != STATE_VERSION or state.get("config_hash") != self.cfg.config_hash():
            raise ConfigError("the checkpoint belongs to a different trial configuration (or version); "
                              "start this trial afresh or restore the matching config")
        state = dict(state)
        self._generator().set_state(state.pop("generator"))
        self.s = _to_device(state, self._state_device())

    def _state_device(self) -> torch.device:
        """Where the trial keeps its index tensors and saved models."""
        return self.device


class Trial(TrialBase):
    """Me-Momentum (SPEC §3) or `ce` on a data set held in memory (everything but Clothing1M)."""

    def __init__(self, cfg: TrialConfig, data: Optional[TrialData] = None, state: Optional[dict] = None,
                 scorer: Optional[Callable] = None):
        """`scorer(model) -> float` replaces the validation score (tests script it); None = the real one."""
        super().__init__(cfg)
        self.data = data if data is not None else prepare(cfg, self.device)
        info = self.data.info
        self.engine = Engine(self.device, info.mean, info.std, info.crop_padding, info.flip, info.num_classes,
                             cfg.batch_size, cfg.eval_batch_size, cfg.precision, derive_seed(cfg.seed, 3))
        self.scorer = scorer or self._val_score
        self.s = self._initial_state(stage_best=0.0, slack=0.0, last_round=0.0, round_best=0.0, keep=None)
        if state is not None:
            self.load_state_dict(state)

    def _generator(self) -> torch.Generator:
        return self.engine.generator

    def _round(self) -> Iterator[dict]:
        cfg, s, d = self.cfg, self.s, self.data
        scheduled = cfg.method == "ce" or s["inner"] > 0  # stage A runs at a constant lr
        if s["epoch"] == 0:
            self._start_round()
        else:
            self._resume_round()
        while True:
            lr = lr_at(s["epoch"], cfg.lr, cfg.lr_milestones, cfg.lr_gamma) if scheduled else cfg.lr
            for group in self._optimizer.param_groups:
                group["lr"] = lr
            loss, acc = self.engine.train_epoch(self._model, self._optimizer, d.images, d.noisy_labels,
                                                s["train_idx"])
            score = float(self.scorer(self._model))
            s["epoch"] += 1
            s["step"] += 1
            s["round_best"] = max(s["round_best"], score)
            improved, test_acc = self._select(score)
            over = s["epoch"] >= cfg.epochs_per_stage or (not scheduled and s["slack"] > SLACK_LIMIT)
            yield from self._epoch_records(over, lr=lr, train_loss=loss, train_acc=acc, val_score=score,
                                           improved=improved, test_acc=test_acc)
            if over:
                return

    def _start_round(self) -> None:
        cfg, s, d = self.cfg, self.s, self.data
        s["round_best"] = 0.0
        if cfg.method == "ce" or s["inner"] == 0:
            self._model = self._fresh_model(s["outer"])
            s["stage_best"], s["slack"] = 0.0, 0.0
        else:
            self._model = self._fresh_model(s["outer"])
            if s["keep"] is not None:  # None only if stage A never scored above 0
                self._model.load_state_dict(s["keep"])
            confident = extract_confident(self.engine, self._model, d.images, d.noisy_labels, d.train_idx,
                                          cfg.extract_augment)
            s["train_idx"] = confident
            if s["first_idx"] is None:  # the first classifier's extraction: the reference for "hard"
                s["first_idx"] = confident
        self._optimizer = sgd(self._model, cfg.lr, cfg.momentum, cfg.weight_decay)

    def _resume_round(self) -> None:
        self._model = self._fresh_model(self.s["outer"])
        self._model.load_state_dict(self.s["model"])
        self._optimizer = sgd(self._model, self.cfg.lr, self.cfg.momentum, self.cfg.weight_decay)
        self._optimizer.load_state_dict(self.s["optimizer"])
        self.s["model"] = self.s["optimizer"] = None

    def _select(self, score: float):
        """Model selection after one epoch; returns (improved, test accuracy if measured now)."""
        s = self.s
        stage_a = self.cfg.method == "memomentum" and s["inner"] == 0
        if stage_a:  # slack rule; officially no test accuracy is taken in stage A
            if score <= s["stage_best"] + s["slack"]:
                s["slack"] += SLACK_STEP
                return False, None
            s["stage_best"], s["slack"], s["keep"] = score, 0.0, state_copy(self._model)
            if not self.cfg.select_stage_a:
                return True, None
        else:
            if score <= s["stage_best"]:
                return False, None
            s["stage_best"], s["keep"] = score, state_copy(self._model)
        if score <= s["best_val"]:
            return True, None
        s["best_val"], s["best_stage"] = score, "A" if stage_a else ("ce" if self.cfg.method == "ce" else "B")
        s["best_test"] = self.engine.accuracy(self._model, self.data.test_images, self.data.test_labels)
        return True, s["best_test"]

    def _end_round(self) -> dict:
        cfg, s = self.cfg, self.s
        record = {"kind": "round", "outer": s["outer"], "inner": s["inner"],
                  "stage": "ce" if cfg.method == "ce" else ("A" if s["inner"] == 0 else "B"),
                  "epochs": s["epoch"], "step": s["step"], **self._diagnostics(s["train_idx"]),
                  "val_score": s["round_best"], "stage_best": s["stage_best"],
                  "best_val_score": s["best_val"], "test_acc": s["best_test"]}
        s["rounds"].append({k: v for k, v in record.items() if k != "kind"})
        if cfg.method == "ce":
            s["done"] = True
        elif s["inner"] == 0:
            s["last_round"] = 0.0
            self._next(inner=1 if cfg.max_inner > 1 else None)
        else:
            improved = s["stage_best"] > s["last_round"]
            if improved:
                s["last_round"] = s["stage_best"]
            self._next(inner=s["inner"] + 1 if improved and s["inner"] < cfg.max_inner - 1 else None)
        self._model = self._optimizer = None
        record["resumable"] = True
        return record

    def _next(self, inner: Optional[int]) -> None:
        """Move to the next stage-B round, or (inner=None) to the next outer loop's stage A."""
        s = self.s
        s["epoch"], s["slack"] = 0, 0.0
        if inner is not None:
            s["inner"] = inner
            return
        s["outer"], s["inner"] = s["outer"] + 1, 0
        s["done"] = s["outer"] > self.cfg.max_outer

    # --- helpers ----------------------------------------------------------------------------
    def _val_score(self, model) -> float:
        d = self.data
        return self.engine.val_score(model, d.images, d.noisy_labels, d.val_idx, self.cfg.val_augment)

    def _fresh_model(self, outer: int):
        """A new network whose initial weights depend only on (seed, outer), whatever ran before."""
        info, images = self.data.info, self.data.images
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.cfg.seed, 100 + outer))
            model = create_model(self.cfg.model, info.num_classes, images.shape[1])
        model = self.engine.prepare_model(model)
        if self.cfg.compile:
            model.compile()  # in place: state_dict keys stay those of the plain module
        return model

def _to_device(obj, device: torch.device):
    if isinstance(obj, torch.Tensor):
        return obj.detach().to(device, copy=True)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(v, device) for v in obj)
    return obj


def _pct(part: int, whole: int) -> Optional[float]:
    return round(100.0 * part / whole, 4) if whole else None


def trial_document(trial: TrialBase, records: list, status: str = "running", result: Optional[dict] = None,
                   **extra) -> dict:
    """The per-trial file a sweep collects (trials/<key>/trial.json): identity, resolved config,
    noisy-label hash, status, records so far and the result. Written by the Tune trainable and by
    `python -m memomentum --sweep-dir`, so both feed the same tables."""
    cfg = trial.cfg
    return {"key": cfg.trial_key(), "name": cfg.trial_name(), "config": cfg.to_dict(), "status": status,
            "device": str(trial.device), "label_hash": trial.data.label_hash,
            "realized_noise_rate": trial.data.realized_noise_rate, "records": records, "result": result, **extra}


def make_trial(cfg: TrialConfig, state: Optional[dict] = None) -> TrialBase:
    """The right procedure for the data set: Clothing1M's class-wise variant, else SPEC §3."""
    if data_mod.DATASETS[cfg.dataset].kind == "files":
        from memomentum.clothing import ClothingTrial

        return ClothingTrial(cfg, state=state)
    return Trial(cfg, state=state)


def run(cfg: TrialConfig, state: Optional[dict] = None) -> dict:
    """Run one trial to the end (or from a checkpoint state) and return its result record."""
    result = None
    for record in make_trial(cfg, state).records():
        result = record
    return result
