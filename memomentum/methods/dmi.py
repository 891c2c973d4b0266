"""`dmi`: L_DMI (Xu et al., NeurIPS 2019), as the reference Newbeeer/L_DMI CIFAR-10/CE.py and DMI.py (HEAD
7d5e4bc) train (SPEC §8.1), on the project's data, noise, split and networks. Two rounds:

  ce   cross-entropy on every noisy label: SGD lr 0.1 (x0.1 at epochs 40 and 80), momentum 0.9, weight decay
       1e-4, batch 256 (a short last batch skipped), 120 epochs; the best-validation checkpoint is kept with
       `>=` (later ties win);
  dmi  from that checkpoint: per batch M = Y^T softmax(f(x)) (C x C, Y the one-hot noisy labels; NOT divided by
       the batch size in the CIFAR and Clothing scripts), loss = -log(|det M| + 0.001), det in float32; SGD lr
       1e-6 constant, momentum 0.9, weight decay 1e-4, batch 256, 100 epochs; selection with `>` from the
       warm-up model's score on: if no DMI epoch beats it, the warm-up model is the result.
Both reference scripts build a NEW optimizer at the start of every epoch of both rounds (CE.py, DMI.py: a new SGD,
momentum reset; fashion/main.py:94, 119: a new Adam, moments and step counter reset): reproduced;
`dmi_keep_optimizer: true` keeps one optimizer per round instead.

A class absent from a batch makes a zero row of M: det 0, a constant loss -log 0.001 and zero gradients (a
property of the loss, not a quirk). With 100 classes a batch of 256 holds all of them with probability ~1e-4,
so on CIFAR-100 the DMI round moves only BatchNorm statistics and DMI is its CE warm-up. Per epoch and per trial,
`dmi_singular_share` counts the DMI-round batches with det M = 0, and `dmi_flat_share` those with |det M| below
the + 0.001 (the loss is then constant in effect: its gradient scaled by |det| / (|det| + 0.001); Adam, which
normalises the step, can still move the weights down to gradients near its epsilon). `dmi_moved` says whether the
round changed any weight at all; when it did not, the trial's `note` says that its result is its warm-up's. The det is computed in float32 outside autocast (torch.det has no bf16 kernel); a batch whose loss is
not finite (det M overflowing float32 when a batch holds every class of 100 and the network is confident) never
reaches the optimizer: it is skipped and counted (`dmi_skipped`, with a note), and a `dmi_batch_size` that
typically holds every class and can overflow requires `dmi_logdet` (float64 slogdet, without the + 0.001).
Options, off: `dmi_batch_size` (1024 covers every class of 100 with p ~ 0.997), `dmi_logdet`, `dmi_mean`.

CIFAR-100: no reference ((P) the CIFAR-10 recipe). MNIST-like: the reference's only such task is a binary
Fashion one ((P) its recipe, 10 classes: Adam lr 1e-4, no weight decay, batch 128, 20 CE + 20 DMI epochs, but with
the CIFAR scripts' M, not the Fashion script's M / B: with 10 classes M / B is a joint distribution, |det(M / B)|
<= 1e-10, the loss the constant -log 0.001 and Adam moves no weight, so the row would silently be the CE warm-up;
`dmi_mean: true` is that variant). Selection is the project's rule throughout (the noisy-validation score). NOT
reproduced: the DMI round's selection on the first 256 validation examples only, ResNet-34 on CIFAR-10,
ImageNet's mean / std, the fixed 40k / 10k split, and (Fashion) the DMI round's selection by validation loss.
"""
import math
from dataclasses import dataclass
from typing import Iterator, Optional, Tuple

import torch
import torch.nn.functional as F

from memomentum import limits
from memomentum.engine import lr_at, state_copy
from memomentum.errors import ConfigError
from memomentum.methods.method import Method, Options
from memomentum.records import Column
from memomentum.trial import LoopState, Trial

CE, DMI = 0, 1  # the rounds (`inner`)
STAGES = ("ce", "dmi")
OPTIMIZERS = ("sgd", "adam")
FLAT = 0.001  # the loss's + 0.001: below it, |det M| leaves -log(|det M| + 0.001) constant in effect
FLOAT32_LOG_MAX = math.log(torch.finfo(torch.float32).max)  # ~88.7


@dataclass(frozen=True)
class DMIOptions(Options):
    dmi_epochs: int = 100  # epochs of the DMI round (the CE warm-up: epochs_per_stage)
    dmi_lr: float = 1e-6  # the DMI round's constant learning rate
    dmi_optimizer: str = "sgd"  # sgd (momentum, the config's weight decay) or adam (MNIST-like), both rounds
    dmi_keep_optimizer: bool = False  # keep one optimizer per round (the references build a new one every epoch)
    dmi_mean: bool = False  # divide M by the batch size (the reference's binary Fashion script; with 10 classes the
    #                         loss is then constant: see the module's docstring)
    dmi_batch_size: int = 0  # the DMI round's batch (0: batch_size)
    dmi_logdet: bool = False  # -log|det M| in float64 (slogdet), without the + 0.001

    def check(self) -> None:
        limits.at_most("dmi_epochs", self.dmi_epochs, limits.EPOCHS, "epochs")
        limits.at_most("dmi_batch_size", self.dmi_batch_size, limits.BATCH, "examples")
        if self.dmi_batch_size < 0 or self.dmi_lr < 0:
            raise ConfigError(f"dmi_batch_size={self.dmi_batch_size} and dmi_lr={self.dmi_lr} must not be negative")
        if self.dmi_epochs < 1:
            raise ConfigError(f"dmi_epochs={self.dmi_epochs} leaves no DMI epoch (the trial would be its cross-entropy "
                              f"warm-up); give at least 1")
        if self.dmi_optimizer not in OPTIMIZERS:
            raise ConfigError(f"dmi_optimizer={self.dmi_optimizer!r} is not one of {', '.join(OPTIMIZERS)}")

    def check_config(self, cfg) -> None:
        from memomentum.data import info

        classes, batch = info(cfg.dataset).num_classes, self.dmi_batch_size or cfg.batch_size
        if not self.dmi_logdet and not self.dmi_mean and may_overflow(batch, classes):
            raise ConfigError(f"a DMI batch of {batch} on {cfg.dataset}'s {classes} classes usually holds every class, "
                              f"and det M can then exceed float32 (up to (B/C)^C ~ 1e{classes * math.log10(batch / classes):.0f}): "
                              f"set dmi_logdet: true (float64 slogdet) with it, or a smaller dmi_batch_size")


def may_overflow(batch: int, classes: int) -> bool:
    """Whether a DMI batch of `batch` examples over `classes` balanced classes usually holds every class (fewer than
    one class expected absent: classes (1 - 1/classes)^batch < 1) and its determinant can then exceed float32: det M
    of a confident network is about the product of the class counts, (batch / classes)^classes at most."""
    absent = classes * (1.0 - 1.0 / classes) ** batch
    return absent < 1.0 and classes * math.log(batch / classes) > FLOAT32_LOG_MAX


def dmi_loss(logits: torch.Tensor, labels: torch.Tensor, num_classes: int, mean: bool = False,
             logdet: bool = False) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(-log(|det M| + 0.001), whether det M is 0, whether |det M| < 0.001) for M = one_hot(labels)^T softmax(logits)
    (/ B when `mean`), in float32 outside any autocast (torch.det has no bf16 kernel; in fp32 this is the same
    computation); `logdet`: -log|det M| from a float64 slogdet (0, and no gradient, where M is singular)."""
    with torch.autocast(logits.device.type, enabled=False):
        probs = F.softmax(logits.float(), 1)
        m = F.one_hot(labels, num_classes).to(probs.dtype).T @ probs
        if mean:
            m = m / len(labels)
        if logdet:
            sign, logabs = torch.linalg.slogdet(m.double())
            singular, flat = sign == 0, logabs < math.log(FLAT)
            if bool(singular):  # -inf: a constant loss, as the + 0.001 form gives, without NaN gradients
                return (m.sum() * 0).float(), singular, flat
            return (-logabs).float(), singular, flat
        det = torch.det(m)
        return -torch.log(det.abs() + FLAT), det == 0, det.abs() < FLAT


@dataclass
class DMIState(LoopState):
    keep: Optional[dict] = None  # the warm-up's best-validation model: where the DMI round starts
    singular: int = 0  # DMI-round batches whose det M was 0 (zero gradients), so far
    flat: int = 0  # DMI-round batches whose |det M| was below 0.001 (a constant loss in effect), so far
    skipped: int = 0  # DMI-round batches whose loss was not finite (no step taken), so far
    dmi_batches: int = 0  # DMI-round batches so far
    moved: Optional[bool] = None  # whether the DMI round changed any weight of the network it started from


class DMITrial(Trial):
    State = DMIState

    def _round(self) -> Iterator[dict]:
        cfg, s, opts = self.cfg, self.s, self.options
        if self._networks(self._build) and s.inner == DMI and s.keep is not None:
            self._model.load_state_dict(s.keep)
        length = cfg.epochs_per_stage if s.inner == CE else opts.dmi_epochs
        while True:
            if not opts.dmi_keep_optimizer:  # as the references: a new optimizer at the start of every epoch
                self._optimizers = (self._new_optimizer(self._model, opts.dmi_optimizer),)
            lr = lr_at(s.epoch, cfg.lr, cfg.lr_milestones, cfg.lr_gamma) if s.inner == CE else opts.dmi_lr
            self._set_lr(lr)
            shares = {}
            if s.inner == CE:
                loss, acc = self.feed.train_epoch(self._model, self._optimizer, s.confident_idx,
                                                  drop_last=len(s.confident_idx) >= cfg.batch_size)
            else:
                loss, acc, shares = self._dmi_epoch()
            score = float(self.scorer(self._model))
            improved = score >= s.best_val if s.inner == CE else score > s.best_val
            if improved and s.inner == CE:
                s.keep = state_copy(self._model)
            test_acc = self._improve(score, STAGES[s.inner]) if improved else None
            over = yield from self._end_epoch(score, improved, test_acc, length=length, lr=lr, train_loss=loss,
                                              train_acc=acc, **{k: shares.get(k) for k in SHARES})
            if over:
                return

    def _build(self):
        return self._one_network(self.options.dmi_optimizer)

    def _dmi_epoch(self):
        """One epoch of the DMI loss; (mean loss, accuracy %, {share of batches with det M = 0, with |det M| below
        0.001, skipped for a loss that is not finite}). The skip costs one read of the loss per batch."""
        cfg, s, opts = self.cfg, self.s, self.options
        size = opts.dmi_batch_size or cfg.batch_size
        singular = torch.zeros((), dtype=torch.long, device=self.device)
        flat = torch.zeros((), dtype=torch.long, device=self.device)
        batches = skipped = 0

        def loss_fn(logits, labels):
            nonlocal singular, flat, batches, skipped
            loss, zero, small = dmi_loss(logits, labels, self.data.info.num_classes, opts.dmi_mean, opts.dmi_logdet)
            singular, flat, batches = singular + zero.long(), flat + small.long(), batches + 1
            if not bool(torch.isfinite(loss)):  # never reaches the optimizer (the reference would take the step)
                skipped += 1
                return None
            return loss

        loss, acc = self.feed.train_epoch(self._model, self._optimizer, s.confident_idx, batch_size=size,
                                          drop_last=len(s.confident_idx) >= size, loss_fn=loss_fn)
        n_singular, n_flat = int(singular), int(flat)
        s.singular, s.flat, s.skipped, s.dmi_batches = (s.singular + n_singular, s.flat + n_flat, s.skipped + skipped,
                                                        s.dmi_batches + batches)
        shares = dict(zip(SHARES, (_share(n_singular, batches), _share(n_flat, batches), skipped)))
        return loss, acc, shares

    def _end_round(self) -> dict:
        s = self.s
        if s.inner == DMI:
            s.moved = any(not torch.equal(p.detach(), s.keep[name].to(p.device))
                          for name, p in self._model.named_parameters())
        record = self._round_record(STAGES[s.inner], s.round_best, s.best_val)
        s.epoch = 0
        self._drop_networks()
        if s.inner == CE:
            s.inner = DMI
        else:
            s.done = True
        return record

    def result(self) -> dict:
        s = self.s
        return {**super().result(), "dmi_singular_share": _share(s.singular, s.dmi_batches),
                "dmi_flat_share": _share(s.flat, s.dmi_batches), "dmi_skipped": s.skipped, "dmi_moved": s.moved}

    def note(self) -> Optional[str]:
        s, notes = self.s, []
        if s.moved is False:
            notes.append(f"the DMI round moved no weight (|det M| below 0.001 in {_share(s.flat, s.dmi_batches):.0%} of "
                         f"its batches: a constant loss in effect): this result is its cross-entropy warm-up's")
        if s.skipped:
            notes.append(f"{s.skipped} DMI-round batch(es) had a loss that was not finite (det M beyond float32) "
                         f"and were skipped")
        return "; ".join(notes) or None

    @staticmethod
    def expected_epochs(cfg):
        epochs = cfg.epochs_per_stage + cfg.options.dmi_epochs
        return float(epochs), epochs


def _share(part: int, whole: int) -> Optional[float]:
    return round(part / whole, 4) if whole else None


SINGULAR = "share of DMI-round batches whose det M was 0 (a class absent: zero gradients)"
FLAT_SHARE = "share of DMI-round batches whose |det M| was below 0.001 (the loss constant in effect)"
SKIPPED = "DMI-round batches whose loss was not finite (det M beyond float32): skipped, no step"
MOVED = "whether the DMI round changed any weight of the warm-up model it started from (false: the result is the warm-up's)"
SHARES = ("dmi_singular_share", "dmi_flat_share", "dmi_skipped")
MNIST_LIKE = {"lr": 1e-4, "weight_decay": 0.0, "batch_size": 128, "epochs_per_stage": 20, "lr_milestones": (),
              "dmi_epochs": 20, "dmi_lr": 1e-4, "dmi_optimizer": "adam"}
FASHION = "(P) the reference's binary Fashion recipe, 10 classes, with the CIFAR scripts' M (not M / B)"
METHOD = Method("dmi", "L_DMI (NeurIPS 2019, SPEC §8.1): a CE warm-up, then the determinant-based mutual information "
                "loss from its best checkpoint, a new optimizer every epoch", DMITrial, published="DMI",
                options=DMIOptions,
                defaults={"*": {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4, "batch_size": 256,
                                "epochs_per_stage": 120, "lr_milestones": (40, 80)},
                          "mnist": MNIST_LIKE, "fashionmnist": MNIST_LIKE, "digits": MNIST_LIKE},
                provenance={"*": "the reference's CIFAR-10 scripts (a new SGD every epoch)",
                            "cifar100": "(P) the CIFAR-10 recipe",
                            "mnist": FASHION, "fashionmnist": FASHION, "digits": FASHION},
                quick={"epochs_per_stage": 2, "dmi_epochs": 2, "batch_size": 64},
                columns={"epoch": (Column("dmi_singular_share", "float64", SINGULAR),
                                   Column("dmi_flat_share", "float64", FLAT_SHARE, tag="train/dmi_flat_share"),
                                   Column("dmi_skipped", "int64", SKIPPED)),
                         "result": (Column("dmi_singular_share", "float64", SINGULAR),
                                    Column("dmi_flat_share", "float64", FLAT_SHARE),
                                    Column("dmi_skipped", "int64", SKIPPED), Column("dmi_moved", "bool", MOVED))},
                version=2)
