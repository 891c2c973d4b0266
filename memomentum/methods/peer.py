"""`peer`: Peer Loss (Liu & Guo, ICML 2020), SPEC §8.2. The reference gitlzl/Peer-Loss could not be read; this
follows, as a SECONDARY source, the authors' group's multi-class code weijiaheng/Multi-class-Peer-Loss-functions
(HEAD fba9eb6, `{CIFAR-10,CIFAR-100,MNIST,Fashion_MNIST}/runner.py`), on the project's data, noise, split, networks,
normalisation and augmentation.

Per step, beside the batch (x, y): a peer batch of B images x1 drawn at random from the training split and,
independently, B noisy labels y2 drawn at random (the reference: x1 from one fresh shuffled batch, y2 from
the next); loss = CE_s(f(x), y) - alpha(e) * CE_s(f(x1), y2) with CE_s = NLL(log(softmax + 1e-5)), batch
means, two separate train-mode forwards, the peer images under the training transform; lr(e) = plan(e) /
(1 + alpha(e)). Wherever the peer term is on, its forward runs even when alpha = 0 (it moves BatchNorm
statistics). alpha(e) concatenates `np.linspace(a, b, n)` pieces (both ends included), indexed by epoch:
  CIFAR-10  sparse (0,0,20) (0,1,20) (1,2,50) (2,5,50) (5,10,100) (10,20,100);
            dense (0,0,20) (0,0.1,20) (1,2,50) (2,2.5,50) (2.5,3.3,100) (3.3,5,100) (the jump 0.1 -> 1 at epoch
            40 is the code's; kept)
  CIFAR-100 sparse (0,0,110) (0,2,20) (2,10,70) (10,20,50); dense (0,0,100) (0.95,0.95,150)
  MNIST-like (0,0,120) (0,1,180), one schedule.
The reference keys alpha to its own noise files (a file index, not a rate): its r = 0.1 / 0.2 files swap labels
inside fixed class pairs ("sparse"), r = 0.3 .. 0.6 are dense transition matrices. The mapping here is the
project's choice (P), `peer_density: auto`: pair-flip -> sparse; symmetric, instance and human -> dense.
CIFAR-10: SGD momentum 0.9, weight decay 1e-4, batch 128 (short batch skipped), 300 epochs, plan 0.1 x0.1
every 40 epochs down to 1e-8 (280-299). CIFAR-100: weight decay 5e-4, 250 epochs; epochs 0-99 plain CE_s, no
peer forward, plan 0.1 (0-59), 0.01 (60-99); at the start of epoch 100 the best-validation checkpoint is
reloaded (`peer_warmup`, a fresh SGD: the reference rebuilds it every epoch anyway); epochs 100-249 peer loss,
plan 1e-3. MNIST-like: Adam lr 1e-4, no weight decay, 300 epochs, no reload. Selection (the project's
noisy-validation score) with the reference's `<=`: later ties win. NOT reproduced: the optimiser rebuilt
every epoch (momentum / Adam state reset); a new DataLoader iterator per step (only slow); PreAct ResNet-18;
RandomRotation(15); ImageNet mean / std (CIFAR-10); the fixed 40k / 10k split.
"""
from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F

from memomentum import limits
from memomentum.engine import lr_at, state_copy
from memomentum.errors import ConfigError
from memomentum.methods.method import Method, Options
from memomentum.records import Column
from memomentum.trial import LoopState, Trial

EPS = 1e-5  # CE_s = NLL(log(softmax + EPS))
PLANS = {  # alpha pieces (a, b, n) per plan and density
    "cifar10": {"sparse": ((0, 0, 20), (0, 1, 20), (1, 2, 50), (2, 5, 50), (5, 10, 100), (10, 20, 100)),
                "dense": ((0, 0, 20), (0, 0.1, 20), (1, 2, 50), (2, 2.5, 50), (2.5, 3.3, 100), (3.3, 5, 100))},
    "cifar100": {"sparse": ((0, 0, 110), (0, 2, 20), (2, 10, 70), (10, 20, 50)),
                 "dense": ((0, 0, 100), (0.95, 0.95, 150))},
    "mnist": {"sparse": ((0, 0, 120), (0, 1, 180)), "dense": ((0, 0, 120), (0, 1, 180))},
}
DENSITIES = ("auto", "sparse", "dense")
WARMUP, PEER = 0, 1  # the rounds (`inner`)


@dataclass(frozen=True)
class PeerOptions(Options):
    peer_plan: str = "cifar10"  # the alpha schedule's family: cifar10, cifar100 or mnist (set per data set)
    peer_density: str = "auto"  # sparse or dense alpha; auto: sparse for pair-flip noise, dense otherwise (P)
    peer_warmup: int = 0  # epochs of plain CE_s before the best checkpoint is reloaded and the peer term starts
    peer_optimizer: str = "sgd"  # sgd (momentum, the config's weight decay) or adam (MNIST-like)

    def check(self) -> None:
        if self.peer_plan not in PLANS or self.peer_density not in DENSITIES or self.peer_optimizer not in ("sgd",
                                                                                                             "adam"):
            raise ConfigError(f"peer_plan={self.peer_plan!r}, peer_density={self.peer_density!r} or peer_optimizer="
                              f"{self.peer_optimizer!r}: use one of {', '.join(PLANS)}; {', '.join(DENSITIES)}; "
                              f"sgd, adam")
        if self.peer_warmup < 0:
            raise ConfigError(f"peer_warmup={self.peer_warmup} must not be negative")
        limits.at_most("peer_warmup", self.peer_warmup, limits.EPOCHS, "epochs")

    def check_config(self, cfg) -> None:
        if self.peer_warmup >= cfg.epochs_per_stage:
            raise ConfigError(f"peer_warmup={self.peer_warmup} leaves no peer epoch in epochs_per_stage="
                              f"{cfg.epochs_per_stage}")


def alpha_schedule(pieces, n_epoch: int) -> np.ndarray:
    """alpha(e) for e = 0 .. n_epoch - 1: the concatenated linspace pieces, the last value held beyond them."""
    alpha = np.concatenate([np.linspace(a, b, num=n) for a, b, n in pieces])
    return alpha[:n_epoch] if len(alpha) >= n_epoch else np.concatenate([alpha, np.full(n_epoch - len(alpha),
                                                                                        alpha[-1])])


def density(options: PeerOptions, noise_type: str) -> str:
    """The alpha schedule a noise type gets (P): pair-flip -> sparse (the reference's class-pair swaps), else dense."""
    if options.peer_density != "auto":
        return options.peer_density
    return "sparse" if noise_type == "pairflip" else "dense"


def ce_s(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The reference's cross-entropy: NLL(log(softmax + 1e-5)), a batch mean."""
    return F.nll_loss(torch.log(F.softmax(logits, 1) + EPS), labels)


@dataclass
class PeerState(LoopState):
    keep: Optional[dict] = None  # the best-validation model of the warm-up: reloaded when the peer term starts


class PeerTrial(Trial):
    State = PeerState

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        opts, cfg = self.options, self.cfg
        self.alpha = alpha_schedule(PLANS[opts.peer_plan][density(opts, cfg.noise_type)], cfg.epochs_per_stage)

    def initial_state(self) -> PeerState:
        state = super().initial_state()
        state.inner = WARMUP if self.options.peer_warmup else PEER
        return state

    def _round(self) -> Iterator[dict]:
        cfg, s, opts = self.cfg, self.s, self.options
        if self._networks(self._build) and s.inner == PEER and s.keep is not None:
            self._model.load_state_dict(s.keep)
        length = opts.peer_warmup if s.inner == WARMUP else cfg.epochs_per_stage - opts.peer_warmup
        while True:
            e = s.step  # the reference's epoch index (its plans run over the whole trial)
            alpha = float(self.alpha[e]) if s.inner == PEER else 0.0
            lr = lr_at(e, cfg.lr, cfg.lr_milestones, cfg.lr_gamma) / (1 + alpha)
            self._set_lr(lr)
            loss, acc = self._epoch(alpha, peer=s.inner == PEER)
            score = float(self.scorer(self._model))
            improved = score >= s.best_val  # the reference's `best <= val`: later ties win
            if improved:
                s.keep = state_copy(self._model)
            test_acc = self._improve(score, "peer") if improved else None
            over = yield from self._end_epoch(score, improved, test_acc, length=length, lr=lr, train_loss=loss,
                                              train_acc=acc, peer_alpha=alpha)
            if over:
                return

    def _build(self):
        return self._one_network(self.options.peer_optimizer)

    def _epoch(self, alpha: float, peer: bool):
        """One epoch (full batches only, as the reference); with the peer term, each step also forwards a peer
        batch of random images with independently drawn random noisy labels."""
        train_idx, engine, data = self.s.confident_idx, self.engine, self.data
        size, generator = self.cfg.batch_size, self.feed.generator

        def loss_fn(logits, labels):
            if not peer:
                return ce_s(logits, labels)
            images = train_idx[torch.randperm(len(train_idx), generator=generator, device=train_idx.device)[:size]]
            noisy = train_idx[torch.randperm(len(train_idx), generator=generator, device=train_idx.device)[:size]]
            with engine.autocast():
                peer_logits = self._model(engine.batch(data.images[images], augment=True))
            return ce_s(logits, labels) - alpha * ce_s(peer_logits.float(), data.noisy_labels[noisy])

        return self.feed.train_epoch(self._model, self._optimizer, train_idx, drop_last=len(train_idx) >= size,
                                     loss_fn=loss_fn)

    def _end_round(self) -> dict:
        s = self.s
        record = self._round_record("warmup" if s.inner == WARMUP else "peer", s.round_best, s.best_val)
        s.epoch = 0
        self._drop_networks()
        if s.inner == WARMUP:
            s.inner = PEER
        else:
            s.done = True
        return record

    @staticmethod
    def expected_epochs(cfg):
        return float(cfg.epochs_per_stage), cfg.epochs_per_stage


CIFAR100 = {"weight_decay": 5e-4, "epochs_per_stage": 250, "lr_milestones": (60, 100), "peer_plan": "cifar100",
            "peer_warmup": 100}
MNIST_LIKE = {"lr": 1e-4, "weight_decay": 0.0, "epochs_per_stage": 300, "lr_milestones": (), "peer_plan": "mnist",
              "peer_optimizer": "adam"}
METHOD = Method("peer", "Peer Loss (ICML 2020, SPEC §8.2): cross-entropy minus alpha times the loss on random "
                "(image, label) pairs", PeerTrial, published="Peer Loss", options=PeerOptions, epoch_cost=1.9,
                defaults={"*": {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4, "batch_size": 128,
                                "epochs_per_stage": 300, "lr_milestones": (40, 80, 120, 160, 200, 240, 280)},
                          "cifar100": CIFAR100, "mnist": MNIST_LIKE, "fashionmnist": MNIST_LIKE, "digits": MNIST_LIKE},
                provenance={"*": "the group's CIFAR-10 runner (secondary source); (P) noise type -> alpha schedule",
                            "cifar100": "its CIFAR-100 runner", "mnist": "its MNIST runner",
                            "fashionmnist": "its Fashion-MNIST runner", "digits": "(P) its Fashion-MNIST runner"},
                quick={"epochs_per_stage": 4},
                columns={"epoch": (Column("peer_alpha", "float64", "weight of the peer term this epoch",
                                          tag="train/peer_alpha"),)})
