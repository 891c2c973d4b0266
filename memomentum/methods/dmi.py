"""`dmi`: L_DMI (Xu et al., NeurIPS 2019), as the reference Newbeeer/L_DMI CIFAR-10/CE.py and DMI.py (HEAD
7d5e4bc) train (SPEC §8.1), on the project's data, noise, split and networks. Two rounds:

  ce   cross-entropy on every noisy label: SGD lr 0.1 (x0.1 at epochs 40 and 80), momentum 0.9, weight decay
       1e-4, batch 256 (a short last batch skipped), 120 epochs; the best-validation checkpoint is kept with
       `>=` (later ties win);
  dmi  from that checkpoint: per batch M = Y^T softmax(f(x)) (C x C, Y the one-hot noisy labels; NOT divided by
       the batch size in the CIFAR and Clothing scripts), loss = -log(|det M| + 0.001), det in float32; SGD lr
       1e-6 constant, momentum 0.9, weight decay 1e-4, batch 256, 100 epochs; selection with `>` from the
       warm-up model's score on: if no DMI epoch beats it, the warm-up model is the result.

A class absent from a batch makes a zero row of M: det 0, a constant loss -log 0.001 and zero gradients (a
property of the loss, not a quirk). With 100 classes a batch of 256 holds all of them with probability ~5e-4,
so on CIFAR-100 the DMI round moves only BatchNorm statistics and DMI is its CE warm-up;
`dmi_singular_share` (per epoch and per trial) counts such batches. Options, off: `dmi_batch_size` (1024 covers
every class with p ~ 0.997) and `dmi_logdet` (float64 slogdet, without the + 0.001). CIFAR-100: no
reference ((P) the CIFAR-10 recipe). MNIST-like: the reference's only such task is a binary Fashion one ((P)
its recipe, 10 classes: Adam lr 1e-4, no weight decay, batch 128, 20 CE + 20 DMI epochs, M / B). Selection
is the project's rule throughout (the noisy-validation score). NOT reproduced: the SGD rebuilt every epoch
(momentum reset), the DMI round's selection on the first 256 validation examples only, ResNet-34 on CIFAR-10,
ImageNet's mean / std, the fixed 40k / 10k split, and (Fashion) the DMI round's selection by validation loss.
"""
from dataclasses import dataclass
from typing import Iterator, Optional, Tuple

import torch
import torch.nn.functional as F

from memomentum.engine import lr_at, state_copy
from memomentum.errors import ConfigError
from memomentum.methods.method import Method, Options
from memomentum.records import Column
from memomentum.trial import LoopState, Trial

CE, DMI = 0, 1  # the rounds (`inner`)
STAGES = ("ce", "dmi")
OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True)
class DMIOptions(Options):
    dmi_epochs: int = 100  # epochs of the DMI round (the CE warm-up: epochs_per_stage)
    dmi_lr: float = 1e-6  # the DMI round's constant learning rate
    dmi_optimizer: str = "sgd"  # sgd (momentum, the config's weight decay) or adam (MNIST-like), both rounds
    dmi_mean: bool = False  # divide M by the batch size (the reference's Fashion script; not its CIFAR ones)
    dmi_batch_size: int = 0  # the DMI round's batch (0: batch_size)
    dmi_logdet: bool = False  # -log|det M| in float64 (slogdet), without the + 0.001

    def check(self) -> None:
        if self.dmi_epochs < 0 or self.dmi_batch_size < 0 or self.dmi_lr < 0:
            raise ConfigError(f"dmi_epochs={self.dmi_epochs}, dmi_batch_size={self.dmi_batch_size} and dmi_lr="
                              f"{self.dmi_lr} must not be negative")
        if self.dmi_optimizer not in OPTIMIZERS:
            raise ConfigError(f"dmi_optimizer={self.dmi_optimizer!r} is not one of {', '.join(OPTIMIZERS)}")


def dmi_loss(logits: torch.Tensor, labels: torch.Tensor, num_classes: int, mean: bool = False,
             logdet: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """(-log(|det M| + 0.001), whether det M is 0) for M = one_hot(labels)^T softmax(logits) (/ B when `mean`);
    `logdet`: -log|det M| from a float64 slogdet (0, and no gradient, where M is singular)."""
    probs = F.softmax(logits.float(), 1)
    m = F.one_hot(labels, num_classes).to(probs.dtype).T @ probs
    if mean:
        m = m / len(labels)
    if logdet:
        sign, logabs = torch.linalg.slogdet(m.double())
        singular = sign == 0
        if bool(singular):  # -inf: a constant loss, as the + 0.001 form gives, without NaN gradients
            return (m.sum() * 0).float(), singular
        return (-logabs).float(), singular
    det = torch.det(m)
    return -torch.log(det.abs() + 0.001), det == 0


@dataclass
class DMIState(LoopState):
    keep: Optional[dict] = None  # the warm-up's best-validation model: where the DMI round starts
    singular: int = 0  # DMI-round batches whose det M was 0 (zero gradients), so far
    dmi_batches: int = 0  # DMI-round batches so far


class DMITrial(Trial):
    State = DMIState

    def _round(self) -> Iterator[dict]:
        cfg, s, opts = self.cfg, self.s, self.options
        if self._networks(self._build) and s.inner == DMI and s.keep is not None:
            self._model.load_state_dict(s.keep)
        length = cfg.epochs_per_stage if s.inner == CE else opts.dmi_epochs
        while True:
            lr = lr_at(s.epoch, cfg.lr, cfg.lr_milestones, cfg.lr_gamma) if s.inner == CE else opts.dmi_lr
            self._set_lr(lr)
            share = None
            if s.inner == CE:
                loss, acc = self.feed.train_epoch(self._model, self._optimizer, s.confident_idx,
                                                  drop_last=len(s.confident_idx) >= cfg.batch_size)
            else:
                loss, acc, share = self._dmi_epoch()
            score = float(self.scorer(self._model))
            improved = score >= s.best_val if s.inner == CE else score > s.best_val
            if improved and s.inner == CE:
                s.keep = state_copy(self._model)
            test_acc = self._improve(score, STAGES[s.inner]) if improved else None
            over = yield from self._end_epoch(score, improved, test_acc, length=length, lr=lr, train_loss=loss,
                                              train_acc=acc, dmi_singular_share=share)
            if over:
                return

    def _build(self):
        return self._one_network(self.options.dmi_optimizer)

    def _dmi_epoch(self):
        """One epoch of the DMI loss; (mean loss, accuracy %, share of batches with det M = 0)."""
        cfg, s, opts = self.cfg, self.s, self.options
        size = opts.dmi_batch_size or cfg.batch_size
        singular = torch.zeros((), dtype=torch.long, device=self.device)
        batches = 0

        def loss_fn(logits, labels):
            nonlocal singular, batches
            loss, zero = dmi_loss(logits, labels, self.data.info.num_classes, opts.dmi_mean, opts.dmi_logdet)
            singular = singular + zero.long()
            batches += 1
            return loss

        loss, acc = self.feed.train_epoch(self._model, self._optimizer, s.confident_idx, batch_size=size,
                                          drop_last=len(s.confident_idx) >= size, loss_fn=loss_fn)
        n_singular = int(singular)
        s.singular += n_singular
        s.dmi_batches += batches
        return loss, acc, round(n_singular / batches, 4) if batches else None

    def _end_round(self) -> dict:
        s = self.s
        record = self._round_record(STAGES[s.inner], s.round_best, s.best_val)
        s.epoch = 0
        self._drop_networks()
        if s.inner == CE and self.options.dmi_epochs > 0:
            s.inner = DMI
        else:
            s.done = True
        return record

    def result(self) -> dict:
        s = self.s
        return {**super().result(), "dmi_singular_share": round(s.singular / s.dmi_batches, 4) if s.dmi_batches
                else None}

    @staticmethod
    def expected_epochs(cfg):
        epochs = cfg.epochs_per_stage + cfg.options.dmi_epochs
        return float(epochs), epochs


SINGULAR = "share of DMI-round batches whose det M was 0 (a class absent: zero gradients)"
MNIST_LIKE = {"lr": 1e-4, "weight_decay": 0.0, "batch_size": 128, "epochs_per_stage": 20, "lr_milestones": (),
              "dmi_epochs": 20, "dmi_lr": 1e-4, "dmi_optimizer": "adam", "dmi_mean": True}
FASHION = "(P) the reference's binary Fashion recipe, 10 classes"
METHOD = Method("dmi", "L_DMI (NeurIPS 2019, SPEC §8.1): a CE warm-up, then the determinant-based mutual information "
                "loss from its best checkpoint", DMITrial, published="DMI", options=DMIOptions,
                defaults={"*": {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4, "batch_size": 256,
                                "epochs_per_stage": 120, "lr_milestones": (40, 80)},
                          "mnist": MNIST_LIKE, "fashionmnist": MNIST_LIKE, "digits": MNIST_LIKE},
                provenance={"*": "the reference's CIFAR-10 scripts", "cifar100": "(P) the CIFAR-10 recipe",
                            "mnist": FASHION, "fashionmnist": FASHION, "digits": FASHION},
                quick={"epochs_per_stage": 2, "dmi_epochs": 2, "batch_size": 64},
                columns={"epoch": (Column("dmi_singular_share", "float64", SINGULAR),),
                         "result": (Column("dmi_singular_share", "float64", SINGULAR),)})
