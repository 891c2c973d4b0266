"""What every method shares: the trial's data on its device, the record stream, the clock, the loop
state that checkpoints hold, the live networks and their resuming, the epoch bookkeeping, the result,
and the per-trial document a sweep collects.

    trial = make_trial(cfg)                 # memomentum.methods: loads data, noisy labels, split
    for record in trial.records():          # {"kind": "epoch" | "round" | "result", ...}
        if record.get("resumable"):
            torch.save(trial.state_dict(), path)   # loadable with torch.load(..., weights_only=True)
    make_trial(cfg, state=torch.load(path, weights_only=True)).records()   # continues with the same records

A method is a `Trial` subclass (one module under memomentum/methods/) that defines its loop state
(a `LoopState` subclass), `_round` and `_end_round`. Its round reads like its paper section:

    def _round(self):
        if self._networks(lambda: ((model,), (optimizer,))):   # made fresh (else restored or still live)
            ...start-of-round work (extraction, selection)...
        while True:
            self._set_lr(lr); loss, acc = train; score = validation; improved, test_acc = select
            over = yield from self._end_epoch(score, improved, test_acc, length=..., lr=lr, ...)
            if over:
                return

`_end_epoch` does the bookkeeping every method shares: the counters, the round's best score, the
test accuracy of the last 10 epochs of a round, the epoch's record and, when the round ends, its round
record (`_end_round`) and a resumable point. Clean labels are read only by `diagnostics`, never by a
decision.
"""
import dataclasses
import os
import platform
import time
from dataclasses import dataclass, field
from typing import Callable, Generator, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from memomentum import exports, memory, stream
from memomentum.data import info as dataset_info
from memomentum.engine import Engine, lr_at, resolve_device, sgd, state_copy
from memomentum.errors import ConfigError
from memomentum.models import create_model, load_backbone, load_pretrained
from memomentum.noise import NOISE_TYPES
from memomentum.progress import fmt
from memomentum.threads import trial_threads, use_threads
from memomentum.version import code_version

STATE_VERSION = 2  # 2: typed loop state (confident_idx), methods as modules
RESEED_PURPOSE = 10_000  # derive_seed purpose of a re-seeded random stream (+ the epoch it restarts at)
PROGRESS_EVERY_S = 10.0  # seconds between progress lines of a phase that yields no record
LAST_K = 10  # last_test_acc / last10_test_acc: test accuracy over the last LAST_K epochs of a trial (JoCoR's habit)
MODEL_KEYS = ("model", "model2")  # the loop-state fields of the live networks in a checkpoint, in order ...
OPTIMIZER_KEYS = ("optimizer", "optimizer2")  # ... and of their optimizers (a method uses as many as it has)


@dataclass
class LoopState:
    """Where a trial stands. Everything here goes into checkpoints (tensors on the CPU there)."""
    config_hash: str  # the config the state belongs to: a checkpoint of another config is refused
    confident_idx: torch.Tensor  # the examples the current round trains on: at first the split's training
    #                              examples, then each extraction's confident set
    outer: int = 1
    inner: int = 0
    epoch: int = 0  # epochs trained in the current round
    step: int = 0  # epochs trained in the whole trial
    done: bool = False
    elapsed: float = 0.0  # seconds of training so far, over every attempt
    best_val: float = 0.0  # the trial's best validation score that set the reported test accuracy
    best_test: float = 0.0  # the test accuracy at best_val
    best_stage: Optional[str] = None  # the stage that set it (None: none did)
    round_best: float = 0.0  # best validation score within the current round
    first_idx: Optional[torch.Tensor] = None  # the first classifier's extraction: reference for "hard" examples
    model: Optional[dict] = None  # the live model and optimizer inside a round (in checkpoints only)
    optimizer: Optional[dict] = None
    rounds: List[dict] = field(default_factory=list)
    late: List[float] = field(default_factory=list)  # test accuracies over the current round's last LAST_K epochs
    max_test: Optional[float] = None  # the highest test accuracy of any epoch so far (optimistic: selected on test)
    reseeded_at: List[int] = field(default_factory=list)  # epochs (step) where a checkpoint of another device
    #                                                      was continued with a re-seeded random stream
    best_model: Optional[dict] = None  # the selected model's state (the best validation score's), kept with `export`
    kept_rounds: Optional[torch.Tensor] = None  # with `export`, a method that selects: per example of the data set,
    #                                             the rounds whose selection held it
    final_selection: Optional[torch.Tensor] = None  # ... and the last round's selection
    version: int = STATE_VERSION


def assumed_noise_rate(noise_type: str, noise_rate: float, realized: Optional[float]) -> float:
    """The noise rate a method that takes it as a setting assumes (a forget rate, CDR's tau, SELFIE's epsilon):
    the configured rate of synthetic noise; for labels noisy as given (CIFAR-N), the label set's realised rate."""
    return noise_rate if noise_type in NOISE_TYPES or realized is None else realized


def derive_seed(seed: int, purpose: int) -> int:
    """An independent seed for one purpose (noise, split, engine, each outer loop's init) of a trial seed."""
    return int(np.random.SeedSequence([seed, purpose]).generate_state(1)[0])


def prepare(cfg, device: torch.device):
    """The trial data of cfg's data set: in memory on `device`, or streamed from disk."""
    return stream.prepare(cfg) if dataset_info(cfg.dataset).streams else memory.prepare(cfg, device)


class Trial:
    """The shared machinery of every method; subclasses hold only their own loop."""

    State = LoopState
    selects = False  # the method selects training examples: each round's selection is exported (selections.py)

    def __init__(self, cfg, data=None, state: Optional[dict] = None, scorer: Optional[Callable] = None,
                 progress: Optional[Callable[[str], None]] = None):
        """`data`: prepared trial data to share between trials (tests); `scorer(model) -> float`
        replaces the validation score (tests script it); None = the real one. `progress(line)`: where a long
        phase that yields no record (PES's refinement) says how far it is, at most every PROGRESS_EVERY_S."""
        self.cfg = cfg
        self._progress_out = progress
        self._progress_at = time.monotonic()
        self.device = resolve_device(cfg.device)
        configure_device(cfg, self.device)
        self.pretrained = load_pretrained(cfg.pretrained, cfg.pretrained_weights, cfg.model)  # fails before training
        self.data = data if data is not None else prepare(cfg, self.device)
        info = self.data.info
        seed = derive_seed(cfg.seed, 3)
        if info.streams:
            engine = Engine.for_data(info, cfg, self.device, seed=0, augment=False)  # autocast, placement
            self.feed = stream.StreamFeed(self.data, engine, cfg, seed)
        else:
            self.feed = memory.MemoryFeed(self.data, Engine.for_data(info, cfg, self.device, seed), cfg.val_augment)
        self.engine = self.feed.engine
        self.scorer = scorer or self.feed.val_score
        self.options = cfg.options  # the method's own settings
        self._models: Tuple[torch.nn.Module, ...] = ()  # the live networks and their optimizers (inside rounds)
        self._optimizers: Tuple[torch.optim.Optimizer, ...] = ()
        self._compiled = {}  # purpose -> the one compiled network of that slot (compile: true)
        self._kept: Optional[List[torch.Tensor]] = None  # a per-batch selector's kept examples this epoch
        self._selection: Optional[dict] = None  # the last round's selection, until `selection()` takes it
        self.s = self.initial_state()
        if state is not None:
            self.load_state_dict(state)

    def initial_state(self) -> LoopState:
        return self.State(config_hash=self.cfg.config_hash(), confident_idx=self.data.train_idx)

    @property
    def _model(self):
        """The first live network (the only one of most methods), None between rounds."""
        return self._models[0] if self._models else None

    @property
    def _optimizer(self):
        return self._optimizers[0] if self._optimizers else None

    # --- the record stream ------------------------------------------------------------------
    def records(self) -> Iterator[dict]:
        self._clock = (time.perf_counter(), self.s.elapsed)
        while not self.s.done:
            if self.s.epoch == 0:  # a round starts (or resumes at its start)
                self.s.round_best = 0.0
            yield from self._round()
        self._exports = exports.make(self) if self.cfg.export else None  # before the result: written before it is
        self._tick()
        yield self.result()

    def exports(self) -> Optional[dict]:
        """After the result record: the selected model's file and the label-issues table (memomentum/exports.py) of a
        trial with `export`; None otherwise. Taken once."""
        made, self._exports = getattr(self, "_exports", None), None
        return made

    def _round(self) -> Iterator[dict]:
        raise NotImplementedError

    def _end_round(self) -> dict:
        """The round's record, after deciding what comes next (the next round, or s.done)."""
        raise NotImplementedError

    def _scheduled_epochs(self, stage: str, weight=None, **options) -> Generator[dict, None, None]:
        """The live network's epochs on the round's training set with the stage-B schedule (SGD lr, x lr_gamma at
        lr_milestones) and model selection on the validation score, until the round's `epochs_per_stage` end
        (`weight`: per-class loss weights; `options`: the feed's, e.g. before_step)."""
        cfg, s = self.cfg, self.s
        while True:
            lr = lr_at(s.epoch, cfg.lr, cfg.lr_milestones, cfg.lr_gamma)
            self._set_lr(lr)
            loss, acc = self.feed.train_epoch(self._model, self._optimizer, s.confident_idx, weight, **options)
            score = float(self.scorer(self._model))
            improved = score > s.best_val
            test_acc = self._improve(score, stage) if improved else None
            over = yield from self._end_epoch(score, improved, test_acc, length=cfg.epochs_per_stage, lr=lr,
                                              train_loss=loss, train_acc=acc)
            if over:
                return

    def _end_epoch(self, score: float, improved: bool, test_acc: Optional[float], *, length: int, stop: bool = False,
                   late: bool = True, **values) -> Generator[dict, None, bool]:
        """The bookkeeping of the epoch just trained and scored: count it, keep the round's best score, take the
        test accuracy of the live networks (kept for the last LAST_K epochs of a round of `length` epochs,
        `late`: the length is known in advance; its maximum is the optimistic `best_test_acc`), and yield the
        epoch's record and, when the round ends (after `length` epochs, or `stop`), the round's record. Returns
        whether the round ended:

            over = yield from self._end_epoch(score, improved, test_acc, length=E, lr=lr, ...)"""
        s = self.s
        s.epoch += 1
        s.step += 1
        s.round_best = max(s.round_best, score)
        measured = self._epoch_test(test_acc)
        if measured is not None:  # None: no test set with trusted labels (a data set given by a path)
            s.max_test = measured if s.max_test is None else max(s.max_test, measured)
            if late and s.epoch > length - LAST_K:
                s.late.append(measured)
        over = stop or s.epoch >= length
        yield from self._epoch_records(over, **values, val_score=score, improved=improved, test_acc=test_acc,
                                       epoch_test_acc=measured)
        return over

    def _epoch_test(self, measured: Optional[float]) -> float:
        """The test accuracy of the live network(s) at this epoch (two networks: their mean): for the rounds'
        last-epoch figures and the optimistic `best_test_acc`; never used for a decision. `measured`: the one
        live network's accuracy already taken this epoch (not measured twice)."""
        if not self.feed.has_test:
            return None
        if measured is not None and len(self._models) == 1:
            return measured
        return sum(self.feed.test_accuracy(m) for m in self._models) / len(self._models)

    def _epoch_records(self, round_over: bool, **values) -> Iterator[dict]:
        """The record of the epoch just trained and, when it ends its round, the round's record."""
        s = self.s
        self._tick()
        record = {"kind": "epoch", "outer": s.outer, "inner": s.inner, "epoch": s.epoch, "step": s.step,
                  "n_train": len(s.confident_idx), **values, "best_val_score": s.best_val,
                  "best_test_acc": self._reported_test(), "seconds": s.elapsed}
        if round_over:
            round_record = self._end_round()
            round_record["resumable"] = True
            yield {**record, "resumable": False}
            yield round_record
            return
        record["resumable"] = bool(self.cfg.checkpoint_every) and s.epoch % self.cfg.checkpoint_every == 0
        yield record

    def _finish(self, stage: str) -> dict:
        """`_end_round` of a method that trains one round: its record, and the trial is done."""
        s = self.s
        record = self._round_record(stage, s.round_best, s.best_val)
        s.done = True
        self._drop_networks()
        return record

    # --- the live networks ------------------------------------------------------------------
    def _networks(self, build: Callable[[], Tuple[Sequence, Sequence]]) -> bool:
        """Make the live networks and their optimizers, `build() -> (networks, optimizers)`, unless they are live
        already (a method that keeps them across rounds); a checkpoint taken while they were live restores their
        states. Returns True when they were just made fresh: the method then does its start-of-round work."""
        if self._models:
            return False
        models, optimizers = build()
        self._models, self._optimizers = tuple(models), tuple(optimizers)
        s = self.s
        if s.model is None:
            return True
        for module, key in zip(self._models, MODEL_KEYS):
            module.load_state_dict(getattr(s, key))
            setattr(s, key, None)
        for optimizer, key in zip(self._optimizers, OPTIMIZER_KEYS):
            optimizer.load_state_dict(getattr(s, key))
            setattr(s, key, None)
        return False

    def _sgd_network(self):
        """`_networks`' build for a method that trains one network with SGD (the config's lr, momentum, decay)."""
        return self._one_network("sgd")

    def _one_network(self, optimizer: str):
        """`_networks`' build for one network trained with `optimizer` (`_new_optimizer`)."""
        model = self.fresh_model(self.s.outer)
        return (model,), (self._new_optimizer(model, optimizer),)

    def _new_optimizer(self, model, kind: str) -> torch.optim.Optimizer:
        """A fresh optimizer of `model`: "sgd" (the config's lr, momentum, decay) or "adam" (the config's lr and
        decay)."""
        if kind == "adam":
            return torch.optim.Adam(model.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        return sgd(model, self.cfg.lr, self.cfg.momentum, self.cfg.weight_decay)

    def _drop_networks(self) -> None:
        self._models = self._optimizers = ()

    def _set_lr(self, lr: float, **group) -> None:
        """The learning rate (and any other param-group setting, e.g. Adam's betas) of every live optimizer."""
        for optimizer in self._optimizers:
            for g in optimizer.param_groups:
                g["lr"] = lr
                g.update(group)

    def _round_record(self, stage: str, val_score: float, stage_best: float) -> dict:
        """The record that ends a round (also kept in the state's `rounds`), with the diagnostics of the
        examples the round trained on."""
        s = self.s
        record = {"kind": "round", "outer": s.outer, "inner": s.inner, "stage": stage, "epochs": s.epoch,
                  "step": s.step, **self.diagnostics(s.confident_idx), "val_score": val_score,
                  "stage_best": stage_best, "best_val_score": s.best_val, "test_acc": self._reported_test(),
                  "last_test_acc": s.late[-1] if s.late else None,
                  "last10_test_acc": sum(s.late) / len(s.late) if s.late else None}
        s.rounds.append({k: v for k, v in record.items() if k != "kind"})
        s.late = []
        if self.selects:
            chosen = torch.cat(self._kept) if self._kept is not None else s.confident_idx
            self._selection = {"round": len(s.rounds) - 1, "outer": s.outer, "inner": s.inner, "step": s.step,
                               "index": chosen}
            if self.cfg.export:  # for the label-issues table: how many rounds kept each example, and the last
                unique = torch.unique(chosen)
                if s.kept_rounds is None:
                    s.kept_rounds = torch.zeros(len(self.data.noisy_labels), dtype=torch.long, device=unique.device)
                s.kept_rounds[unique] += 1
                s.final_selection = unique
        self._kept = None
        return record

    def _keep(self, idx: torch.Tensor) -> None:
        """A per-batch selector's batch: the examples it kept (trained on), gathered over the epoch for the round's
        selection (`selection()`); the method sets `_kept = None` when an epoch starts."""
        if self._kept is None:
            self._kept = []
        self._kept.append(idx)

    def selection(self) -> Optional[dict]:
        """The examples the round that just ended selected (memomentum.selections): their indices, noisy labels and
        whether those are clean (-1 unknown); None for a method that does not select, or before a round ends.
        Taken once: a second call returns None."""
        picked, self._selection = self._selection, None
        if picked is None:
            return None
        d = self.data
        idx = torch.unique(picked["index"])  # sorted; a per-batch selector may keep an example twice
        clean = d.clean_labels[idx]
        noisy = d.noisy_labels[idx]
        mark = torch.where(clean < 0, torch.full_like(clean, -1), (noisy == clean).long())
        return {**{k: picked[k] for k in ("round", "outer", "inner", "step")}, "index": idx.cpu().numpy(),
                "noisy": noisy.cpu().numpy(), "clean": mark.cpu().numpy()}

    def _progress(self, text: str) -> None:
        """A progress line from inside a long phase that yields no record, at most every PROGRESS_EVERY_S seconds
        (reporting only: never fails the trial)."""
        now = time.monotonic()
        if self._progress_out is None or now - self._progress_at < PROGRESS_EVERY_S:
            return
        self._progress_at = now
        try:
            self._progress_out(text)
        except Exception:
            pass

    def _reported_test(self) -> Optional[float]:
        """The test accuracy at the best validation score so far; None without a test set of trusted labels."""
        return self.s.best_test if self.feed.has_test else None

    def _tick(self) -> None:
        start, base = self._clock
        self.s.elapsed = base + time.perf_counter() - start

    def _improve(self, score: float, stage: str, model=None) -> Optional[float]:
        """A new best validation score of the trial: measure and keep the test accuracy of the live model
        (or of `model`, e.g. the better of two networks)."""
        s = self.s
        s.best_val, s.best_stage = score, stage
        chosen = model if model is not None else self._model
        s.best_test = self.feed.test_accuracy(chosen)
        if self.cfg.export:  # the selected model: exported with the trial (its file, its label issues)
            s.best_model = state_copy(chosen)
        return s.best_test

    # --- reporting --------------------------------------------------------------------------
    def describe(self) -> str:
        train, val, test = self.feed.sizes()
        return f"realised noise {fmt(self.data.realized_noise_rate, '.4f')}; train {train}, val {val}, test {test}"

    def diagnostics(self, idx: torch.Tensor) -> dict:
        """Confident-set quality from CLEAN labels (never used for a decision), in %. Examples whose
        clean label is unknown (-1, as for most of Clothing1M) are left out of both shares."""
        d, first = self.data, self.s.first_idx
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

    def clean_share(self, idx: torch.Tensor) -> Optional[float]:
        """Share (%) of correctly labelled examples among training examples `idx` whose clean label is known
        (a diagnostic from clean labels, never used for a decision); None if none is known."""
        d = self.data
        clean = d.clean_labels[idx]
        known = clean >= 0
        return _pct(int(((d.noisy_labels[idx] == clean) & known).sum()), int(known.sum()))

    def result(self) -> dict:
        cfg, s, d = self.cfg, self.s, self.data
        last = s.rounds[-1] if s.rounds else {}
        return {"kind": "result", "dataset": cfg.dataset, "noise_type": cfg.noise_type,
                "noise_rate": cfg.noise_rate, "seed": cfg.seed, "method": cfg.method, "model": cfg.model,
                "precision_mode": cfg.precision,
                "test_acc": self._reported_test(), "last_test_acc": last.get("last_test_acc"),
                "best_test_acc": s.max_test,
                "last10_test_acc": last.get("last10_test_acc"), "best_val_score": s.best_val, "best_stage": s.best_stage,
                "realized_noise_rate": d.realized_noise_rate, "epochs": s.step,
                "seconds": round(s.elapsed, 3), "n_rounds": len(s.rounds),
                "final_n_confident": last.get("n_confident"), "final_precision": last.get("precision"),
                "final_recall": last.get("recall"), "label_hash": d.label_hash,
                "config_hash": cfg.config_hash(), "device": str(self.device), "device_name": device_name(self.device),
                "threads": torch.get_num_threads(),
                "peak_gpu_memory_mb": peak_memory_mb(self.device), "matmul_precision": cfg.matmul_precision,
                "code_version": code_version(), "method_version": cfg.method_version(), "note": self.note(),
                "generator_reseeded_at": list(s.reseeded_at), "rounds": list(s.rounds)}

    def label_issues(self, given: torch.Tensor, in_final: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """The training examples (data.train_idx order) this method itself names as mislabelled, given their labels
        and whether the last round selected each (None: it selects nothing); None: the generic rule of
        memomentum/exports.py (left out of the final selection, else a prediction that disagrees)."""
        return None

    def note(self) -> Optional[str]:
        """What a reader of this trial's result must know to read it right (e.g. a DMI round that could not move the
        network, so the result is its warm-up's), in one sentence; None when nothing. Printed with the result and
        gathered under the paper table."""
        return None

    # --- models -----------------------------------------------------------------------------
    def fresh_model(self, outer: int, purpose: int = 100):
        """A new network whose initial weights depend only on (seed, purpose + outer), whatever ran before;
        ImageNet backbone weights on top where the config asks for them."""
        model = self.engine.prepare_model(self.initial_weights(purpose + outer))
        if not self.cfg.compile:
            return model
        # compiled once per network slot and trial: a new module every round would recompile each time
        # (and fall back to eager once dynamo's cache limit is hit); later rounds load the fresh weights
        compiled = self._compiled.get(purpose)
        if compiled is None:
            model.compile()  # in place: state_dict keys stay those of the plain module
            self._compiled[purpose] = model
            return model
        compiled.load_state_dict(model.state_dict())
        return compiled

    def initial_weights(self, purpose: int) -> torch.nn.Module:
        """A network of the trial's architecture on the CPU, its initial weights drawn from a generator seeded by
        (trial seed, purpose) (the global random state is left as it was); ImageNet backbone weights on top where
        the config asks for them."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.cfg.seed, purpose))
            model = create_model(self.cfg.model, self.data.info.num_classes, self.feed.in_channels)
        if self.pretrained is not None:
            load_backbone(model, self.pretrained, self.cfg.model)
        return model

    # --- checkpoints ------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to continue exactly; tensors on the CPU; safe for weights_only loading."""
        state = {f.name: getattr(self.s, f.name) for f in dataclasses.fields(self.s)}
        state["generator"] = self.feed.generator.get_state()
        state["generator_device"] = self.feed.generator.device.type
        state.update(self._live_state())
        return _to_device(state, torch.device("cpu"))

    def _live_state(self) -> dict:
        """The live networks and optimizers inside a round (none between rounds)."""
        out = {key: state_copy(m) for m, key in zip(self._models, MODEL_KEYS)}
        out.update({key: o.state_dict() for o, key in zip(self._optimizers, OPTIMIZER_KEYS)})
        return out

    def load_state_dict(self, state: dict) -> None:
        if state.get("version") != STATE_VERSION or state.get("config_hash") != self.cfg.config_hash():
            raise ConfigError("the checkpoint belongs to a different trial configuration (or version); "
                              "start this trial afresh or restore the matching config")
        state = dict(state)
        generator = state.pop("generator")
        saved_on = state.pop("generator_device", None)
        # optimizer states are copied on the CPU: Optimizer.load_state_dict places them by their parameters and
        # keeps Adam's `step` counters on the CPU, as it expects (moved to a GPU, every step would read them
        # back: one host sync per batch); a copy, since the optimizer updates what it loaded in place
        cpu = torch.device("cpu")
        placed = {k: _to_device(v, cpu if k in OPTIMIZER_KEYS else self.feed.state_device) for k, v in state.items()}
        try:
            s = self.State(**placed)
        except TypeError as exc:  # fields of another method
            raise ConfigError(f"the checkpoint does not fit method {self.cfg.method} ({exc})") from None
        here = self.feed.generator.device.type
        try:
            if saved_on not in (None, here):
                raise RuntimeError(f"generator state of a {saved_on} generator")
            self.feed.generator.set_state(generator)
        except (RuntimeError, TypeError, ValueError):
            # a checkpoint written on another kind of device (a CPU state is 5,056 bytes, a CUDA one 16):
            # everything else continues exactly; the random stream (shuffling, crops, flips) restarts from
            # a seed of (trial seed, epoch), recorded in the result's `generator_reseeded_at`
            self.feed.generator.manual_seed(derive_seed(self.cfg.seed, RESEED_PURPOSE + s.step))
            s.reseeded_at = list(s.reseeded_at) + [s.step]
        self.s = s


def configure_device(cfg, device: torch.device) -> None:
    """The process-wide switches a trial's config names, each set whatever an earlier trial of the process set:
    torch's CPU threads (memomentum/threads.py), float32 matmul / convolution precision (true fp32 unless
    `matmul_precision: tf32`; torch 2.14 runs cuDNN convolutions in TF32 by default), cuDNN autotuning,
    determinism, and the trial's share of its GPU's memory (`gpu_memory_fraction`: a trial packed at a fraction
    of a GPU cannot take the memory of the others)."""
    use_threads(trial_threads(cfg))
    precision = "tf32" if cfg.matmul_precision == "tf32" else "ieee"
    torch.backends.cuda.matmul.fp32_precision = precision
    torch.backends.cudnn.conv.fp32_precision = precision
    if cfg.deterministic:
        # cuBLAS needs this before its first call to be deterministic; ops without a deterministic kernel
        # warn (PyTorch names them) rather than stop a trial
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # set either way: a sweep's worker process runs one trial after another (reused actors)
    if torch.are_deterministic_algorithms_enabled() != cfg.deterministic:
        torch.use_deterministic_algorithms(cfg.deterministic, warn_only=True)
    torch.backends.cudnn.deterministic = cfg.deterministic
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not cfg.deterministic
        if 0 < cfg.gpu_memory_fraction < 1:
            torch.cuda.set_per_process_memory_fraction(cfg.gpu_memory_fraction, device)
        torch.cuda.reset_peak_memory_stats(device)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or "cpu"


def peak_memory_mb(device: torch.device) -> Optional[float]:
    """Peak GPU memory this process allocated (MiB), None on a CPU."""
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2 ** 20, 1)


def class_weights(train_counts: np.ndarray, val_counts: np.ndarray) -> np.ndarray:
    """Class weights of the official Clothing.py: mean(train) / train * val / mean(val); a class absent
    from training gets weight 0 (officially inf, which never meets an example, so the loss is the same)."""
    train = train_counts.astype(np.float64)
    with np.errstate(divide="ignore"):
        w = np.where(train > 0, train.mean() / np.maximum(train, 1), 0.0) * val_counts / val_counts.mean()
    return w


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


def trial_document(trial: Trial, records: list, status: str = "running", result: Optional[dict] = None,
                   **extra) -> dict:
    """The per-trial file a sweep collects (trials/<key>/trial.json): identity, resolved config, the code
    and method versions that made it, noisy-label hash, status, records so far and the result. Written by the Tune trainable and by
    `python -m memomentum --sweep-dir`, so both feed the same tables."""
    cfg = trial.cfg
    return {"key": cfg.trial_key(), "name": cfg.trial_name(), "config": cfg.to_dict(), "status": status,
            "code_version": code_version(), "method_version": cfg.method_version(),
            "device": str(trial.device), "label_hash": trial.data.label_hash,
            "realized_noise_rate": trial.data.realized_noise_rate, "records": records, "result": result, **extra}
