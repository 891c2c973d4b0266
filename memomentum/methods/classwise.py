"""`classwise`: the class-wise variant of Me-Momentum for data sets with a clean validation set, as
the official Clothing.py runs it on Clothing1M (SPEC §4).

Per outer loop (a fresh, ImageNet-initialised network, SGD, one MultiStepLR over all its epochs):
    for each inner loop: train `epochs_per_stage` epochs with class-weighted cross-entropy; after every
        epoch score the model per class on the clean validation set, score_c = beta * recall_c +
        (1 - beta) * precision_c, and remember the best-scoring epoch for each class; take the test
        accuracy whenever the clean validation accuracy reaches a new best;
        then the next training set is, for each class c, the examples with noisy label c that the
        best model for class c predicts as c (on the whole noisy training set, no augmentation), and
        the class weights are recomputed: mean(train_counts) / train_counts * val_counts / mean(val_counts).
The training set carries into the next outer loop. Reported: test accuracy at the best validation accuracy.
"""
from dataclasses import dataclass, field
from typing import Iterator, List, Optional

import numpy as np
import torch

from memomentum.engine import lr_at
from memomentum.errors import ConfigError
from memomentum.methods.memomentum import Loops
from memomentum.methods.method import Method
from memomentum.trial import LoopState, Trial, class_weights

STAGE = "C"  # the round records of the class-wise variant
SCRATCH = 300  # fresh_model purpose of the network that predicts with a stored state (not the live one's 100)


@dataclass(frozen=True)
class ClassWiseOptions(Loops):
    beta: float = 0.45  # per-class model score = beta * val recall + (1 - beta) * val precision

    def check(self) -> None:
        super().check()
        if not 0.0 <= self.beta <= 1.0:
            raise ConfigError(f"beta={self.beta} must lie in [0, 1]")


# --- the class-wise pieces (pure, pinned by tests) -------------------------------------------------
def per_class_stats(preds: torch.Tensor, labels: torch.Tensor, num_classes: int):
    """(accuracy %, per-class recall %, per-class precision %) as the official evaluate_val:
    recall and precision rounded to 2 decimals; NaN where a class has no examples / no predictions."""
    total = torch.bincount(labels, minlength=num_classes).double()
    predicted = torch.bincount(preds, minlength=num_classes).double()
    correct = torch.bincount(labels[preds == labels], minlength=num_classes).double()
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.around(100 * correct.cpu().numpy() / total.cpu().numpy(), 2)
        precision = np.around(100 * correct.cpu().numpy() / predicted.cpu().numpy(), 2)
    accuracy = 100.0 * float(correct.sum()) / max(len(labels), 1)
    return accuracy, recall, precision


def class_scores(recall: np.ndarray, precision: np.ndarray, beta: float) -> np.ndarray:
    return beta * recall + (1 - beta) * precision


def update_best(best_scores: np.ndarray, best_ref: List[Optional[str]], scores: np.ndarray, ref: str) -> bool:
    """Classes whose score strictly beats their best so far now point at `ref` (NaN never wins, as
    in the official comparison). Returns whether any class did."""
    won = scores > best_scores  # NaN compares False
    for c in np.flatnonzero(won):
        best_scores[c] = scores[c]
        best_ref[c] = ref
    return bool(won.any())


def select_classwise(noisy: np.ndarray, best_ref: List[Optional[str]], predict) -> np.ndarray:
    """Indices i whose noisy label c = noisy[i] is predicted as c by the best model for class c.

    `predict(ref, idx)` returns that model's predictions for examples idx. Each model predicts only
    the classes it is best for, so every example is predicted once (as the official combinateModels)."""
    chosen = []
    for ref in dict.fromkeys(r for r in best_ref if r is not None):
        classes = [c for c, r in enumerate(best_ref) if r == ref]
        idx = np.flatnonzero(np.isin(noisy, classes))
        preds = predict(ref, idx)
        chosen.append(idx[preds == noisy[idx]])
    return np.sort(np.concatenate(chosen)) if chosen else np.empty(0, dtype=np.int64)


# --- the trial ------------------------------------------------------------------------------------
@dataclass
class ClassWiseState(LoopState):
    inner: int = 1  # inner loops count from 1 here (there is no stage A)
    outer_epoch: int = 0  # epochs of the current outer loop: its lr schedule runs across inner loops
    best_scores: Optional[torch.Tensor] = None  # per class: the best score of this outer loop
    best_ref: Optional[list] = None  # per class: the epoch (step, as text) whose model scored it
    stored: dict = field(default_factory=dict)  # those epochs' model states (at most one per class)


class ClassWiseTrial(Trial):
    State = ClassWiseState
    selects = True

    def _round(self) -> Iterator[dict]:
        cfg, s, num_classes = self.cfg, self.s, self.data.info.num_classes
        if self._networks(self._sgd_network):  # a new outer loop: fresh network, optimizer, schedule and per-class bests
            s.outer_epoch = 0
            s.best_scores = torch.zeros(num_classes, dtype=torch.float64)
            s.best_ref, s.stored = [None] * num_classes, {}
        counts = np.bincount(self.data.noisy_labels[s.confident_idx].numpy(), minlength=num_classes)
        weights = class_weights(counts, self.feed.val_counts().numpy().astype(np.float64))
        weight = torch.tensor(weights, dtype=torch.float32, device=self.device)
        while True:
            lr = lr_at(s.outer_epoch, cfg.lr, cfg.lr_milestones, cfg.lr_gamma)
            self._set_lr(lr)
            loss, acc = self.feed.train_epoch(self._model, self._optimizer, s.confident_idx, weight)
            preds = self.feed.val_predictions(self._model)
            val_acc, recall, precision = per_class_stats(preds, self.data.val_labels, num_classes)
            s.outer_epoch += 1
            self._remember_class_bests(class_scores(recall, precision, self.options.beta), ref=str(s.step + 1))
            test_acc = self._improve(val_acc, STAGE) if val_acc > s.best_val else None
            over = yield from self._end_epoch(val_acc, test_acc is not None, test_acc, length=cfg.epochs_per_stage,
                                              lr=lr, train_loss=loss, train_acc=acc)
            if over:
                return

    def _remember_class_bests(self, scores: np.ndarray, ref: str) -> None:
        """Point each class whose score beats its best of the outer loop at the live model, kept as `ref`
        (the epoch's trial step, as text)."""
        s = self.s
        best = s.best_scores.numpy()
        if update_best(best, s.best_ref, scores, ref):  # kept on the CPU: up to one network per class
            s.stored[ref] = {k: v.detach().to("cpu", copy=True) for k, v in self._model.state_dict().items()}
        s.best_scores = torch.from_numpy(best)
        live = set(r for r in s.best_ref if r is not None)
        s.stored = {k: v for k, v in s.stored.items() if k in live}

    def _end_round(self) -> dict:
        s, loops = self.s, self.options
        record = self._round_record(STAGE, s.round_best, s.round_best)
        chosen = select_classwise(self.data.noisy_labels.numpy(), s.best_ref, self._predict_with)
        s.confident_idx = torch.from_numpy(chosen)
        if s.first_idx is None:
            s.first_idx = s.confident_idx
        s.epoch = 0
        if s.inner < loops.max_inner:
            s.inner += 1
        else:
            s.outer, s.inner = s.outer + 1, 1
            s.done = s.outer > loops.max_outer
            s.stored, s.best_ref = {}, None
            self._drop_networks()
        return record

    def _predict_with(self, ref: str, idx: np.ndarray) -> np.ndarray:
        """Predictions of the stored network `ref` for examples idx, from a scratch network of its own slot
        (with compile: true, the live network's slot would return the live network itself and overwrite it)."""
        scratch = self.fresh_model(self.s.outer, purpose=SCRATCH)
        scratch.load_state_dict(self.s.stored[ref])
        return self.feed.predict(scratch, torch.from_numpy(idx)).numpy()

    @staticmethod
    def expected_epochs(cfg):
        epochs = cfg.options.max_outer * cfg.options.max_inner * cfg.epochs_per_stage
        return float(epochs), epochs


METHOD = Method("classwise", "Me-Momentum's class-wise variant for data with a clean validation set, as the "
                "official Clothing.py (SPEC §4)", ClassWiseTrial, rounds=True, data=("stream",),
                needs_clean_val=True, options=ClassWiseOptions)
