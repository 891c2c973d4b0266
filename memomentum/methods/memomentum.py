"""Me-Momentum (Bai & Liu, ICCV 2021), SPEC §3: the official main.py, loop for loop.

    for outer in 1..max_outer:
        stage A: fresh model, constant lr, early stopped by the slack rule; its best state is `keep`
        stage B, at most max_inner - 1 rounds: model <- keep; confident <- {i in train split:
            argmax model(x_i) == noisy_i}; train a new SGD (lr x0.1 at epochs 40, 80) on confident;
            stop the outer loop once a round does not raise the stage's best validation score
    The confident set carries into the next outer loop (its stage A trains a fresh model on it).
    Only stage-B improvements of the trial's best validation score update the reported test accuracy
    (so a trial whose stage B never beats stage A reports 0, as the official code does; the result's
    `best_stage` is then None). `select_stage_a=True` lets stage-A gains count too.
"""
from dataclasses import dataclass
from typing import Iterator, Optional

import torch

from memomentum import limits
from memomentum.engine import lr_at, state_copy
from memomentum.errors import ConfigError
from memomentum.methods.method import Method, Options
from memomentum.trial import LoopState, Trial

SLACK_STEP = 0.1  # stage A: the improvement threshold grows by this after every non-improving epoch
SLACK_LIMIT = 2  # ... and stage A stops once it exceeds this (after 20 such epochs, in floating point)


@dataclass(frozen=True)
class Loops(Options):
    """The outer and inner loops of Me-Momentum and its class-wise variant."""
    max_outer: int = 3  # outer loops, each starting a fresh model on the current confident set
    max_inner: int = 20  # Me-Momentum: stage-B rounds per outer loop are at most max_inner - 1 (class-wise: inner loops)

    def check(self) -> None:
        for name in ("max_outer", "max_inner"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be at least 1")
            limits.at_most(name, getattr(self, name), limits.LOOPS, "loops")


@dataclass(frozen=True)
class MeMomentumOptions(Loops):
    extract_augment: bool = True  # extract confident examples under the training transform, as the official code
    select_stage_a: bool = False  # let stage-A gains also set the reported test accuracy (off: official, where a
    #                               trial whose stage B never beats stage A reports 0)


def extract_confident(feed, model, idx: torch.Tensor, augment: bool) -> torch.Tensor:
    """The confident examples among training examples `idx`: those whose prediction equals their noisy
    label (one tensor expression, as cleanlab's `argmax(pred_probs) == labels`)."""
    preds = feed.predict(model, idx, augment)
    return idx[preds == feed.data.noisy_labels[idx]]


@dataclass
class MeMomentumState(LoopState):
    stage_best: float = 0.0  # best validation score of the current stage (A, or B since stage A)
    slack: float = 0.0  # stage A's growing improvement threshold
    last_round: float = 0.0  # stage_best at the end of the last stage-B round that improved it
    keep: Optional[dict] = None  # the model state with stage_best: where the next round starts


class MeMomentumTrial(Trial):
    State = MeMomentumState
    selects = True

    def _round(self) -> Iterator[dict]:
        cfg, s = self.cfg, self.s
        scheduled = s.inner > 0  # stage A runs at a constant lr
        if self._networks(self._sgd_network):
            self._start_round()
        while True:
            lr = lr_at(s.epoch, cfg.lr, cfg.lr_milestones, cfg.lr_gamma) if scheduled else cfg.lr
            self._set_lr(lr)
            loss, acc = self.feed.train_epoch(self._model, self._optimizer, s.confident_idx)
            score = float(self.scorer(self._model))
            improved, test_acc = self._select(score)
            over = yield from self._end_epoch(score, improved, test_acc, length=cfg.epochs_per_stage,
                                              stop=not scheduled and s.slack > SLACK_LIMIT,
                                              late=scheduled,  # stage A: its length is not known in advance
                                              lr=lr, train_loss=loss, train_acc=acc)
            if over:
                return

    def _start_round(self) -> None:
        s = self.s
        if s.inner == 0:
            s.stage_best, s.slack = 0.0, 0.0
            return
        if s.keep is not None:  # None only if stage A never scored above 0
            self._model.load_state_dict(s.keep)
        s.confident_idx = extract_confident(self.feed, self._model, self.data.train_idx, self.options.extract_augment)
        if s.first_idx is None:  # the first classifier's extraction: the reference for "hard"
            s.first_idx = s.confident_idx

    def _select(self, score: float):
        """Model selection after one epoch; returns (improved, test accuracy if measured now)."""
        s = self.s
        stage_a = s.inner == 0
        if stage_a:  # slack rule; officially no test accuracy is taken in stage A
            if score <= s.stage_best + s.slack:
                s.slack += SLACK_STEP
                return False, None
            s.stage_best, s.slack, s.keep = score, 0.0, state_copy(self._model)
            if not self.options.select_stage_a:
                return True, None
        else:
            if score <= s.stage_best:
                return False, None
            s.stage_best, s.keep = score, state_copy(self._model)
        if score <= s.best_val:
            return True, None
        return True, self._improve(score, "A" if stage_a else "B")

    def _end_round(self) -> dict:
        s, loops = self.s, self.options
        record = self._round_record("A" if s.inner == 0 else "B", s.round_best, s.stage_best)
        if s.inner == 0:
            s.last_round = 0.0
            self._next(inner=1 if loops.max_inner > 1 else None)
        else:
            improved = s.stage_best > s.last_round
            if improved:
                s.last_round = s.stage_best
            self._next(inner=s.inner + 1 if improved and s.inner < loops.max_inner - 1 else None)
        self._drop_networks()
        return record

    def _next(self, inner: Optional[int]) -> None:
        """Move to the next stage-B round, or (inner=None) to the next outer loop's stage A."""
        s = self.s
        s.epoch, s.slack = 0, 0.0
        if inner is not None:
            s.inner = inner
            return
        s.outer, s.inner = s.outer + 1, 0
        s.done = s.outer > self.options.max_outer

    @staticmethod
    def expected_epochs(cfg):
        """Typical: stage A stops after ~50 epochs and about 2.5 stage-B rounds run per outer loop."""
        loops = cfg.options
        rounds = min(loops.max_inner - 1, 2.5)
        typical = loops.max_outer * (min(cfg.epochs_per_stage, 50) + rounds * cfg.epochs_per_stage)
        return typical, loops.max_outer * loops.max_inner * cfg.epochs_per_stage


METHOD = Method("memomentum", "Me-Momentum (ICCV 2021, SPEC §3): extract confident examples and retrain on "
                "them, alternately", MeMomentumTrial, published="Me-Momentum", rounds=True,
                options=MeMomentumOptions)
