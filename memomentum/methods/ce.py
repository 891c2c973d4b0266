"""`ce`: plain cross-entropy on all noisy training labels, the "standard" baseline. One stage of
`epochs_per_stage` epochs with Me-Momentum's stage-B learning-rate schedule (SGD, x lr_gamma at
lr_milestones) and the same model selection: the test accuracy at the best validation score.
On data sets with `class_weighted` (Clothing1M) the loss is weighted as the class-wise variant's."""
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from memomentum.engine import lr_at, sgd
from memomentum.methods.method import Method
from memomentum.trial import LoopState, Trial, class_weights


@dataclass
class CEState(LoopState):
    round_best: float = 0.0  # best validation score of the (single) round


class CETrial(Trial):
    State = CEState

    def _round(self) -> Iterator[dict]:
        cfg, s = self.cfg, self.s
        self._model = self.fresh_model(s.outer)
        self._optimizer = sgd(self._model, cfg.lr, cfg.momentum, cfg.weight_decay)
        if s.epoch == 0:
            s.round_best = 0.0
        else:  # resuming inside the round
            self._model.load_state_dict(s.model)
            self._optimizer.load_state_dict(s.optimizer)
            s.model = s.optimizer = None
        weight = self.class_weight(s.confident_idx) if cfg.class_weighted else None
        while True:
            lr = lr_at(s.epoch, cfg.lr, cfg.lr_milestones, cfg.lr_gamma)
            for group in self._optimizer.param_groups:
                group["lr"] = lr
            loss, acc = self.feed.train_epoch(self._model, self._optimizer, s.confident_idx, weight)
            score = float(self.scorer(self._model))
            s.epoch += 1
            s.step += 1
            s.round_best = max(s.round_best, score)
            improved = score > s.best_val
            test_acc = self._improve(score, "ce") if improved else None
            late = self._late_test(cfg.epochs_per_stage, self._model, measured=test_acc)
            over = s.epoch >= cfg.epochs_per_stage
            yield from self._epoch_records(over, lr=lr, train_loss=loss, train_acc=acc, val_score=score,
                                           improved=improved, test_acc=test_acc, epoch_test_acc=late)
            if over:
                return

    def class_weight(self, idx: torch.Tensor) -> torch.Tensor:
        counts = np.bincount(self.data.noisy_labels[idx].cpu().numpy(), minlength=self.data.info.num_classes)
        weights = class_weights(counts, self.feed.val_counts().numpy().astype(np.float64))
        return torch.tensor(weights, dtype=torch.float32, device=self.device)

    def _end_round(self) -> dict:
        s = self.s
        record = self._round_record("ce", s.round_best, s.best_val)
        s.done = True
        self._model = self._optimizer = None
        record["resumable"] = True
        return record

    @staticmethod
    def expected_epochs(cfg):
        return float(cfg.epochs_per_stage), cfg.epochs_per_stage


METHOD = Method("ce", "plain cross-entropy on all noisy labels, same schedule and model selection (the standard "
                "baseline)", CETrial, published="CE", data=("memory", "stream"))
