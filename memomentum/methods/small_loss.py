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

from memomentum import limits
from memomentum.errors import ConfigError
from memomentum.methods.method import Options
from memomentum.records import KEPT_PRECISION, Column
from memomentum.trial import LoopState, Trial, assumed_noise_rate

MOMENTUM_BETA1 = 0.9  # Adam's beta1 before decay_start ...
DECAY_BETA1 = 0.1  # ... and from it on
BETA2 = 0.999


@dataclass(frozen=True)
class SmallLossOptions(Options):
    """The settings both references share (SPEC §6; they train epochs 1 .. epochs_per_stage - 1 with Adam, as
    their main.py's range(1, n_epoch))."""
    forget_rate: float = -1.0  # share of each batch left out once ramped up; -1 = the noise rate (human noise: the
    #                            label set's realised rate)
    num_gradual: int = 10  # Tk: epochs over which the forget rate ramps up from 0 (linspace over epochs 0 .. Tk-1)
    exponent: float = 1.0  # c: the ramp ends at forget_rate ** c
    decay_start: int = 80  # epoch from which Adam's lr falls linearly to 0 and its beta1 is 0.1 (cifar100: 100)

    def check(self) -> None:
        if self.forget_rate != -1.0 and not 0.0 <= self.forget_rate < 1.0:
            raise ConfigError(f"forget_rate={self.forget_rate} must lie in [0, 1), or be -1 (the noise rate)")
        if self.num_gradual < 1:
            raise ConfigError(f"num_gradual={self.num_gradual} must be at least 1")
        if self.exponent <= 0:
            raise ConfigError(f"exponent={self.exponent} must be positive")
        if self.decay_start < 0:
            raise ConfigError(f"decay_start={self.decay_start} must not be negative")
        limits.at_most("num_gradual", self.num_gradual, limits.EPOCHS, "epochs")
        limits.at_most("decay_start", self.decay_start, limits.EPOCHS, "epochs")


# what both methods' per-epoch records add to the shared fields (null for other methods)
EPOCH_COLUMNS = (
    Column("forget_rate", "float64", "share of each batch left out this epoch (the ramped forget rate)",
           tag="train/forget_rate"),
    KEPT_PRECISION,
    Column("val_score_1", "float64", "network 1's validation score (%)", tag="val/score_net1"),
    Column("val_score_2", "float64", "network 2's validation score (%)", tag="val/score_net2"),
)
# the references' optimiser and length (SPEC §6): Adam at lr 0.001 without weight decay, 200 epochs; CIFAR-100 decays later
DEFAULTS = {"*": {"lr": 0.001, "weight_decay": 0.0, "epochs_per_stage": 200}, "cifar100": {"decay_start": 100}}


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


def resolved_forget_rate(options: SmallLossOptions, noise_type: str, noise_rate: float,
                         realized: Optional[float] = None) -> float:
    """options.forget_rate, or (-1) the configured noise rate, for every noise type this project has (pair-flip
    included, for both methods: JoCoR's algorithm/jocor.py halves it only for its own `asymmetric` class-map noise,
    which this project does not have); for labels noisy as given (CIFAR-N), the label set's realised rate."""
    if options.forget_rate >= 0:
        return options.forget_rate
    return assumed_noise_rate(noise_type, noise_rate, realized)


@dataclass
class SmallLossState(LoopState):
    model2: Optional[dict] = None  # network 2 and its optimizer inside the round (in checkpoints only)
    optimizer2: Optional[dict] = None


class SmallLossTrial(Trial):
    """One round of epochs_per_stage - 1 epochs of two networks. A method sets `stage` and defines
    `optimizers` and `select_and_loss`."""

    State = SmallLossState
    stage = "?"  # the round records' stage: the method's name
    selects = True  # the examples the last epoch kept (by either network)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        d = self.data
        cfg = self.cfg
        self.forget_rate = resolved_forget_rate(self.options, cfg.noise_type, cfg.noise_rate, d.realized_noise_rate)
        self._right = ((d.noisy_labels == d.clean_labels) & (d.clean_labels >= 0)).to(self.device)  # diagnostics
        self._known = (d.clean_labels >= 0).to(self.device)

    # --- what a method defines ----------------------------------------------------------------
    def optimizers(self, model1, model2) -> Tuple[torch.optim.Optimizer, ...]:
        raise NotImplementedError

    def select_and_loss(self, logits1, logits2, labels, n_keep) -> Tuple[torch.Tensor, ...]:
        """(loss to minimise, loss to report (detached), examples kept by network 1, by network 2) of a batch."""
        raise NotImplementedError

    # --- the loop ---------------------------------------------------------------------------------
    def _round(self) -> Iterator[dict]:
        cfg, s, opts = self.cfg, self.s, self.options
        n_epoch = cfg.epochs_per_stage
        self._networks(self._build)
        alpha, beta1 = adam_plan(cfg.lr, n_epoch, opts.decay_start)
        rates = forget_schedule(self.forget_rate, n_epoch, opts.num_gradual, opts.exponent)
        while True:
            e = s.epoch + 1  # the references' epoch index
            self._set_lr(alpha[e], betas=(beta1[e], BETA2))
            loss, acc, kept_precision = self._train_epoch(float(rates[e]))
            scores = [float(self.scorer(m)) for m in self._models]
            better = int(scores[1] > scores[0])  # ties: network 1
            score = scores[better]
            improved = score > s.best_val
            test_acc = self._improve(score, self.stage, self._models[better]) if improved else None
            over = yield from self._end_epoch(score, improved, test_acc, length=n_epoch - 1, lr=alpha[e],
                                              forget_rate=float(rates[e]), train_loss=loss, train_acc=acc,
                                              kept_precision=kept_precision, val_score_1=scores[0],
                                              val_score_2=scores[1])
            if over:
                return

    def _build(self):
        models = self.fresh_model(self.s.outer), self.fresh_model(self.s.outer, purpose=200)
        return models, self.optimizers(*models)

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
        self._kept = None  # this epoch's kept examples, for the round's exported selection
        for x, y, b in self.feed.batches(idx, drop_last=drop_last):
            n_keep = kept_count(forget_rate, len(y))
            with self.engine.autocast():
                logits1, logits2 = models[0](x), models[1](x)
            loss, reported, keep1, keep2 = self.select_and_loss(logits1.float(), logits2.float(), y, n_keep)
            self._keep(b[torch.cat([keep1, keep2])])
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

    def _end_round(self) -> dict:
        return self._finish(self.stage)

    @staticmethod
    def expected_epochs(cfg):
        return float(cfg.epochs_per_stage - 1), cfg.epochs_per_stage - 1


def adam(params, cfg) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=cfg.lr, betas=(MOMENTUM_BETA1, BETA2), weight_decay=cfg.weight_decay)


__all__ = ["SmallLossTrial", "SmallLossState", "SmallLossOptions", "EPOCH_COLUMNS", "DEFAULTS", "forget_schedule",
           "adam_plan", "kept_count", "smallest", "adam", "resolved_forget_rate"]
