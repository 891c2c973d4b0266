"""`ce`: plain cross-entropy on all noisy training labels, the "standard" baseline. One round of
`epochs_per_stage` epochs with Me-Momentum's stage-B learning-rate schedule (SGD, x lr_gamma at
lr_milestones) and the same model selection: the test accuracy at the best validation score.
With `class_weighted` (the default on Clothing1M) the loss is weighted as the class-wise variant's."""
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from memomentum.methods.method import Method, Options
from memomentum.trial import Trial, class_weights


@dataclass(frozen=True)
class CEOptions(Options):
    class_weighted: bool = False  # class-weighted cross-entropy as the official Clothing.py (on by default there)


class CETrial(Trial):
    def _round(self) -> Iterator[dict]:
        s = self.s
        self._networks(self._sgd_network)
        weight = self.class_weight(s.confident_idx) if self.options.class_weighted else None
        yield from self._scheduled_epochs("ce", weight)

    def class_weight(self, idx: torch.Tensor) -> torch.Tensor:
        counts = np.bincount(self.data.noisy_labels[idx].cpu().numpy(), minlength=self.data.info.num_classes)
        weights = class_weights(counts, self.feed.val_counts().numpy().astype(np.float64))
        return torch.tensor(weights, dtype=torch.float32, device=self.device)

    def _end_round(self) -> dict:
        return self._finish("ce")

    @staticmethod
    def expected_epochs(cfg):
        return float(cfg.epochs_per_stage), cfg.epochs_per_stage


METHOD = Method("ce", "plain cross-entropy on all noisy labels, same schedule and model selection (the standard "
                "baseline)", CETrial, published="CE", data=("memory", "stream"), options=CEOptions,
                defaults={"clothing1m": {"epochs_per_stage": 30}})  # as long as one outer loop of the class-wise variant
