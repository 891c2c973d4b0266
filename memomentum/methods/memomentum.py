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

from memomentum.engine import lr_at, sgd, state_copy
from memomentum.methods.method import Method
from memomentum.trial import LoopState, Trial

SLACK_STEP = 0.1  # stage A: the improvement threshold grows by this after every non-improving epoch
SLACK_LIMIT = 2  # ... and stage A stops once it exceeds this (after 20 such epochs, in floating point)


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
    round_best: float = 0.0  # best validation score within the current round
    keep: Optional[dict] = None  # the model state with stage_best: where the next round starts


class MeMomentumTrial(Trial):
    State = MeMomentumState

    def _round(self) -> Iterator[dict]:
        cfg, s = self.cfg, self.s
        scheduled = s.inner > 0  # stage A runs at a constant lr
        if s.epoch == 0:
            self._start_round()
        else:
            self._resume_round()
        while True:
            lr = lr_at(s.epoch, cfg.lr, cfg.lr_milestones, cfg.lr_gamma) if scheduled else cfg.lr
            for group in self._optimizer.param_groups:
                group["lr"] = lr
            loss, acc = self.feed.train_epoch(self._model, self._optimizer, s.confident_idx)
            score = float(self.scorer(self._model))
            s.epoch += 1
            s.step += 1
            s.round_best = max(s.round_best, score)
            improved, test_acc = self._select(score)
            late = self._late_test(cfg.epochs_per_stage, self._model, measured=test_acc) if scheduled else None  # stage A: length unknown
            over = s.epoch >= cfg.epochs_per_stage or (not scheduled and s.slack > SLACK_LIMIT)
            yield from self._epoch_records(over, lr=lr, train_loss=loss, train_acc=acc, val_score=score,
                                           improved=improved, test_acc=test_acc, epoch_test_acc=late)
            if over:
                return

    def _start_round(self) -> None:
        cfg, s = self.cfg, self.s
        s.round_best = 0.0
        self._model = self.fresh_model(s.outer)
        if s.inner == 0:
            s.stage_best, s.slack = 0.0, 0.0
        else:
            if s.keep is not None:  # None only if stage A never scored above 0
                self._model.load_state_dict(s.keep)
            s.confident_idx = extract_confident(self.feed, self._model, self.data.train_idx, cfg.extract_augment)
            if s.first_idx is None:  # the first classifier's extraction: the reference for "hard"
                s.first_idx = s.confident_idx
        self._optimizer = sgd(self._model, cfg.lr, cfg.momentum, cfg.weight_decay)

    def _resume_round(self) -> None:
        s = self.s
        self._model = self.fresh_model(s.outer)
        self._model.load_state_dict(s.model)
        self._optimizer = sgd(self._model, self.cfg.lr, self.cfg.momentum, self.cfg.weight_decay)
        self._optimizer.load_state_dict(s.optimizer)
        s.model = s.optimizer = None

    def _select(self, score: float):
        """Model selection after one epoch; returns (improved, test accuracy if measured now)."""
        s = self.s
        stage_a = s.inner == 0
        if stage_a:  # slack rule; officially no test accuracy is taken in stage A
            if score <= s.stage_best + s.slack:
                s.slack += SLACK_STEP
                return False, None
            s.stage_best, s.slack, s.keep = score, 0.0, state_copy(self._model)
            if not self.cfg.select_stage_a:
                return True, None
        else:
            if score <= s.stage_best:
                return False, None
            s.stage_best, s.keep = score, state_copy(self._model)
        if score <= s.best_val:
            return True, None
        return True, self._improve(score, "A" if stage_a else "B")

    def _end_round(self) -> dict:
        cfg, s = self.cfg, self.s
        record = self._round_record("A" if s.inner == 0 else "B", s.round_best, s.stage_best)
        if s.inner == 0:
            s.last_round = 0.0
            self._next(inner=1 if cfg.max_inner > 1 else None)
        else:
            improved = s.stage_best > s.last_round
            if improved:
                s.last_round = s.stage_best
            self._next(inner=s.inner + 1 if improved and s.inner < cfg.max_inner - 1 else None)
        self._model = self._optimizer = None
        record["resumable"] = True
        return record

    def _next(self, inner: Optional[int]) -> None:
        """Move to the next stage-B round, or (inner=None) to the next outer loop's stage A."""
        s = self.s
        s.epoch, s.slack = 0, 0.0
        if inner is not None:
            s.inner = inner
            return
        s.outer, s.inner = s.outer + 1, 0
        s.done = s.outer > self.cfg.max_outer

    @staticmethod
    def expected_epochs(cfg):
        """Typical: stage A stops after ~50 epochs and about 2.5 stage-B rounds run per outer loop."""
        rounds = min(cfg.max_inner - 1, 2.5)
        typical = cfg.max_outer * (min(cfg.epochs_per_stage, 50) + rounds * cfg.epochs_per_stage)
        return typical, cfg.max_outer * cfg.max_inner * cfg.epochs_per_stage


METHOD = Method("memomentum", "Me-Momentum (ICCV 2021, SPEC §3): extract confident examples and retrain on "
                "them, alternately", MeMomentumTrial, published="Me-Momentum", rounds=True)
