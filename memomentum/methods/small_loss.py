"""What the small-loss baselines (coteaching, jocor) share, as their reference main.py files run them
(SPEC §6): two networks of the data set's architecture with independent seeded inits, Adam whose lr
falls linearly to 0 and whose beta1 drops from 0.9 to 0.1 from `decay_start`, and a forget rate that
ramps up over the first `num_gradual` epochs. Every mini-batch keeps its int((1 - R(e)) * B)
smallest-loss examples; the two methods differ only in how they rank and what they update
(`SmallLossTrial.select_and_loss`).

Epochs are indexed as in the references: e = 1 .. epochs_per_stage - 1 are trained (their
`for epoch in range(1, n_epoch)`), and the schedules are arrays over e = 0 .. epochs_per_stage - 1.
The training batches drop the last short batch (their `drop_last=True`). Reported: `test_acc` of the
network with the better noisy-validation score at the trial's best such score (the project's rule,
SPEC §3), and the mean test accuracy of both networks in the last epoch / the last 10 epochs.
Per epoch, `kept_precision` is the share of examples with a correct label among those kept (mean of
the two networks' selections): a diagnostic from clean labels, never used for a decision.
"""
from dataclasses import dataclass
from typing import Iterator, List, Optional, Tuple

import numpy as np
import torch

from memomentum.engine import state_copy
from memomentum.noise import NOISE_TYPES
from memomentum.trial import LoopState, Trial

MOMENTUM_BETA1 = 0.9  # Adam's beta1 before decay_start ...
DECAY_BETA1 = 0.1  # ... and from it on
BETA2 = 0.999


def forget_schedule(forget_rate: float, n_epoch: int, num_gradual: int, exponent: float) -> np.ndarray:
    """R(e) for e = 0 .. n_epoch - 1, as the references: forget_rate everywhere, except the first
    num_gradual epochs, which ramp linearly from 0 to forget_rate ** exponent."""
    rates = np.ones(n_epoch) * forget_rate
    ramp = np.linspace(0, forget_rate ** exponent, num_gradual)
    rates[:num_gradual] = ramp[:n_epoch]
    return rates


def adam_plan(lr: float, n_epoch: int, decay_start: int) -> Tuple[List[float], List[float]]:
    """(lr, beta1) for e = 0 .. n_epoch - 1: constant until decay_start, then lr * (n - e) / (n - decay_start)
    and beta1 0.1."""
    alpha, beta1 = [lr] * n_epoch, [MOMENTUM_BETA1] * n_epoch
    for e in range(decay_start, n_epoch):
        alpha[e] = float(n_epoch - e) / (n_epoch - decay_start) * lr
        beta1[e] = DECAY_BETA1
    return alpha, beta1


def kept_count(forget_rate: float, batch: int) -> int:
    """Examples a batch of `batch` keeps: int((1 - R) * B) as the references, and at least one."""
    return max(int((1 - forget_rate) * batch), 1)


def smallest(losses: torch.Tensor, n_keep: int) -> torch.Tensor:
    """Indices of the n_keep smallest losses (stable order, so ties resolve the same on every device)."""
    return torch.argsort(losses.detach(), stable=True)[:n_keep]


def resolved_forget_rate(cfg, halve_for_pairflip: bool = False, realized: Optional[float] = None) -> float:
    """cfg.forget_rate, or (-1) the configured noise rate (for labels noisy as given, e.g. CIFAR-N, the
    realised rate of the label set); JoCoR's reference halves it for pair-flip noise."""
    if cfg.forget_rate >= 0:
        return cfg.forget_rate
    rate = cfg.noise_rate if cfg.noise_type in NOISE_TYPES or realized is None else realized
    return rate / 2 if halve_for_pairflip and cfg.noise_type == "pairflip" else rate


@dataclass
class SmallLossState(LoopState):
    round_best: float = 0.0  # best validation score of the (single) round, either network
    model2: Optional[dict] = None  # network 2 and its optimizer inside the round (in checkpoints only)
    optimizer2: Optional[dict] = None


class SmallLossTrial(Trial):
    """One round of epochs_per_stage - 1 epochs of two networks. A method sets `stage` and defines
    `optimizers` and `select_and_loss`."""

    State = SmallLossState
    stage = "?"  # the round records' stage: the method's name
    halve_for_pairflip = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        d = self.data
        self.forget_rate = resolved_forget_rate(self.cfg, self.halve_for_pairflip, d.realized_noise_rate)
        self._right = ((d.noisy_labels == d.clean_labels) & (d.clean_labels >= 0)).to(self.device)  # diagnostics
        self._known = (d.clean_labels >= 0).to(self.device)
        self._models: Tuple = ()
        self._optimizers: Tuple = ()

    # --- what a method defines ----------------------------------------------------------------
    def optimizers(self, model1, model2) -> Tuple[torch.optim.Optimizer, ...]:
        raise NotImplementedError

    def select_and_loss(self, logits1, logits2, labels, n_keep) -> Tuple[torch.Tensor, ...]:
        """(loss to minimise, loss to report (detached), examples kept by network 1, by network 2) of a batch."""
        raise NotImplementedError

    # --- the loop ---------------------------------------------------------------------------------
    def _round(self) -> Iterator[dict]:
        cfg, s = self.cfg, self.s
        n_epoch = cfg.epochs_per_stage
        model1, model2 = self.fresh_model(s.outer), self.fresh_model(s.outer, purpose=200)
        self._models, self._model = (model1, model2), model1
        self._optimizers = self.optimizers(model1, model2)
        if s.epoch == 0:
            s.round_best = 0.0
        else:  # resuming inside the round
            model1.load_state_dict(s.model)
            model2.load_state_dict(s.model2)
            for optimizer, state in zip(self._optimizers, (s.optimizer, s.optimizer2)):
                optimizer.load_state_dict(state)
            s.model = s.model2 = s.optimizer = s.optimizer2 = None
        alpha, beta1 = adam_plan(cfg.lr, n_epoch, cfg.decay_start)
        rates = forget_schedule(self.forget_rate, n_epoch, cfg.num_gradual, cfg.exponent)
        while True:
            e = s.epoch + 1  # the references' epoch index
            for optimizer in self._optimizers:
                for group in optimizer.param_groups:
                    group["lr"], group["betas"] = alpha[e], (beta1[e], BETA2)
            loss, acc, kept_precision = self._train_epoch(float(rates[e]))
            scores = [float(self.scorer(m)) for m in self._models]
            better = int(scores[1] > scores[0])  # ties: network 1
            score = scores[better]
            s.epoch += 1
            s.step += 1
            s.round_best = max(s.round_best, score)
            improved = score > s.best_val
            test_acc = self._improve(score, self.stage, self._models[better]) if improved else None
            late = self._late_test(n_epoch - 1, *self._models)
            over = s.epoch >= n_epoch - 1
            yield from self._epoch_records(over, lr=alpha[e], forget_rate=float(rates[e]), train_loss=loss,
                                           train_acc=acc, kept_precision=kept_precision, val_score=score,
                                           val_score_1=scores[0], val_score_2=scores[1], improved=improved,
                                           test_acc=test_acc, epoch_test_acc=late)
            if over:
                return

    def _train_epoch(self, forget_rate: float) -> Tuple[float, float, Optional[float]]:
        """One epoch of both networks; (mean loss, mean accuracy % of the two networks against the noisy
        labels, share % of correctly labelled examples among those kept), read from the device once."""
        s, models = self.s, self._models
        for model in models:
            model.train()
        idx = s.confident_idx
        drop_last = len(idx) >= self.cfg.batch_size  # a split smaller than one batch still trains
        sums = torch.zeros(5, device=self.device)  # loss, correct (both nets), kept right, kept known, batches
        n = 0
        for x, y, b in self.feed.batches(idx, drop_last=drop_last):
            n_keep = kept_count(forget_rate, len(y))
            with self.engine.autocast():
                logits1, logits2 = models[0](x), models[1](x)
            loss, reported, keep1, keep2 = self.select_and_loss(logits1.float(), logits2.float(), y, n_keep)
            for optimizer in self._optimizers:
                optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for optimizer in self._optimizers:
                optimizer.step()
            right, known = self._right[b], self._known[b]
            sums += torch.stack([
                reported.float(),
                ((logits1.detach().argmax(1) == y).sum() + (logits2.detach().argmax(1) == y).sum()).float() / 2,
                (right[keep1].sum() + right[keep2].sum()).float(), (known[keep1].sum() + known[keep2].sum()).float(),
                torch.ones((), device=self.device)])
            n += len(y)
        loss_sum, correct, kept_right, kept_known, batches = sums.tolist()
        kept = round(100.0 * kept_right / kept_known, 4) if kept_known else None
        return loss_sum / max(batches, 1), 100.0 * correct / max(n, 1), kept

    def _live_state(self) -> dict:
        if not self._models:
            return {}
        optimizers = [o.state_dict() for o in self._optimizers] + [None]
        return {"model": state_copy(self._models[0]), "model2": state_copy(self._models[1]),
                "optimizer": optimizers[0], "optimizer2": optimizers[1]}

    def _end_round(self) -> dict:
        s = self.s
        record = self._round_record(self.stage, s.round_best, s.best_val)
        s.done = True
        self._models = self._optimizers = ()
        self._model = None
        record["resumable"] = True
        return record

    @staticmethod
    def expected_epochs(cfg):
        return float(cfg.epochs_per_stage - 1), cfg.epochs_per_stage - 1


def baseline_defaults(dataset: str, noise_type: str, noise_rate: float) -> dict:
    """The references' optimiser and length (SPEC §6): Adam at lr 0.001 without weight decay, 200 epochs."""
    return {"lr": 0.001, "weight_decay": 0.0, "epochs_per_stage": 200}


def adam(params, cfg) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=cfg.lr, betas=(MOMENTUM_BETA1, BETA2), weight_decay=cfg.weight_decay)


__all__ = ["SmallLossTrial", "SmallLossState", "forget_schedule", "adam_plan", "kept_count", "smallest", "adam",
           "baseline_defaults", "resolved_forget_rate"]
