"""`pes`: PES without semi-supervision (Bai et al., NeurIPS 2021), the CE-based row the reference table reprints,
as the reference tmllab/PES PES_cs.py (HEAD 5466238) trains (SPEC §8.4), on the project's data, noise, split
and networks. 200 iterations of one SGD (lr 0.1, momentum 0.9, weight decay 1e-4, batch 128, the short last
batch dropped, x0.1 after iterations 100 and 150), in three rounds:

  ce      iterations 0 .. T1 - 1: cross-entropy on the whole noisy training split (T1 = 25; CIFAR-100: 30);
  refine  iteration T1, instead of an epoch: re-initialise layer4 and linear, freeze every other parameter
          (BatchNorm stays in train mode: its statistics move), T2 = 7 epochs of plain cross-entropy on the
          whole split with a new Adam (lr `pes_lr` 1e-4); then re-initialise linear alone, T3 = 5 epochs
          likewise; unfreeze;
  pes     iterations T1 + 1 .. 199: the confident set is every training example whose argmax of the mean
          softmax over two training-transform views (eval mode) equals its noisy label; one epoch on it with
          class-weighted cross-entropy, w_c = mean of the non-zero class counts / n_c (0 for an absent class).

Reproduced from the reference (SPEC §8.4): its SGD was built before the refinement and still holds the
replaced tensors, so the new layer4 and linear are in no optimiser afterwards: from T1 + 1 they stay FIXED
(BatchNorm statistics aside) and only conv1 .. layer3 train. Here the SGD of the pes round holds exactly the
parameters outside the re-initialised modules, with their momentum carried over; `pes_train_head: true`
(a named variant) adds the head. Also as the reference: a refinement phase of 0 epochs (`t2: 0` or `t3: 0`) is
skipped whole, with nothing re-initialised or frozen (its `noisy_refine` returns at once, PES_cs.py:106-107), so only
the modules a phase that ran replaced leave the SGD; and every loader drops its short last batch, so a confident set
shorter than a batch takes no step that iteration (version 2; version 1 re-initialised and froze the module of a
0-epoch phase and took one short step). Not reproduced: the discarded `update_trainloader` call in `noisy_refine`.
The selection is the project's rule (test accuracy at the best noisy-validation score, strict `>`, the
refinement's iteration included, as the reference's). Networks without layer4 / linear re-initialise the
modules `memomentum.models.HEADS` names ((P): LeNet's fc1-fc3 / fc3, digitsnet's fc1-fc2 / fc2).
"""
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F

from memomentum import limits
from memomentum.engine import lr_at, sgd_of
from memomentum.errors import ConfigError
from memomentum.methods.method import Method, Options
from memomentum.models import HEADS
from memomentum.progress import fmt
from memomentum.records import KEPT_PRECISION
from memomentum.trial import Trial

CE, REFINE, PES = 0, 1, 2  # the rounds (`inner`)
STAGES = ("ce", "refine", "pes")
REINIT = 400  # initial_weights purpose of the re-initialised modules (+ 0: deep head, + 1: last layer)


@dataclass(frozen=True)
class PESOptions(Options):
    t1: int = 25  # iterations of plain cross-entropy before the refinement (cifar100: 30)
    t2: int = 7  # refinement epochs of the re-initialised layer4 + linear
    t3: int = 5  # then refinement epochs of the re-initialised linear alone
    pes_lr: float = 1e-4  # the refinement's Adam learning rate
    pes_train_head: bool = False  # let the main SGD train the re-initialised head too (the reference leaves it fixed)

    def check(self) -> None:
        if self.t1 < 1 or self.t2 < 0 or self.t3 < 0:
            raise ConfigError(f"t1={self.t1}, t2={self.t2}, t3={self.t3}: t1 must be at least 1, t2 and t3 not negative")
        if self.pes_lr <= 0:
            raise ConfigError(f"pes_lr={self.pes_lr} must be positive")
        for name in ("t1", "t2", "t3"):
            limits.at_most(name, getattr(self, name), limits.EPOCHS, "epochs")

    def check_config(self, cfg) -> None:
        if cfg.epochs_per_stage < self.t1 + 2:
            raise ConfigError(f"epochs_per_stage={cfg.epochs_per_stage} leaves no iteration after the refinement at "
                              f"t1={self.t1}: it must be at least t1 + 2")


def pes_class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """PES's weights: mean of the non-zero class counts / the class's count; 0 for a class with none."""
    counts = torch.bincount(labels, minlength=num_classes).double()
    present = counts > 0
    mean = counts[present].mean() if present.any() else torch.ones((), dtype=torch.float64, device=counts.device)
    return torch.where(present, mean / counts.clamp(min=1), torch.zeros_like(counts)).float()


def two_view_confident(feed, model, idx: torch.Tensor) -> torch.Tensor:
    """The examples of `idx` whose argmax of (softmax f(v1) + softmax f(v2)) / 2 equals their noisy label, v1, v2
    two independent training-transform views, in eval mode (the reference's predict_softmax + splite_confident)."""
    probs = (F.softmax(feed.logits(model, idx, True), 1) + F.softmax(feed.logits(model, idx, True), 1)) / 2
    return idx[probs.argmax(1) == feed.data.noisy_labels[idx]]


class PESTrial(Trial):
    selects = True

    def _round(self) -> Iterator[dict]:
        cfg, s, opts = self.cfg, self.s, self.options
        self._networks(self._build)
        length = (opts.t1, 1, cfg.epochs_per_stage - opts.t1 - 1)[s.inner]
        while True:
            iteration = s.step  # the reference's 0-based iteration, for its lr schedule
            lr = lr_at(iteration, cfg.lr, cfg.lr_milestones, cfg.lr_gamma)
            self._set_lr(lr)
            weight = None
            if s.inner == REFINE:
                lr = opts.pes_lr
                loss, acc = self._refine()
            else:
                if s.inner == PES:
                    s.confident_idx = two_view_confident(self.feed, self._model, self.data.train_idx)
                    weight = pes_class_weights(self.data.noisy_labels[s.confident_idx], self.data.info.num_classes)
                # the reference's loaders drop the short last batch: a confident set shorter than a batch takes no step
                loss, acc = self.feed.train_epoch(self._model, self._optimizer, s.confident_idx, weight, drop_last=True)
            score = float(self.scorer(self._model))
            improved = score > s.best_val
            test_acc = self._improve(score, STAGES[s.inner]) if improved else None
            over = yield from self._end_epoch(score, improved, test_acc, length=length, lr=lr, train_loss=loss,
                                              train_acc=acc, kept_precision=self.clean_share(s.confident_idx))
            if over:
                return

    def _build(self):
        """The network and the SGD of the current round (restored from a checkpoint, or at the trial's start)."""
        model = self.fresh_model(self.s.outer)
        return (model,), (self._sgd(model, after_refine=self.s.inner == PES),)

    def _sgd(self, model, after_refine: bool):
        """The main SGD: over every parameter before the refinement; after it, over the parameters outside the
        modules it re-initialised (all of them with pes_train_head)."""
        params = list(model.parameters())
        if after_refine and not self.options.pes_train_head:
            head = {id(p) for name in self._replaced() for p in getattr(model, name).parameters()}
            params = [p for p in params if id(p) not in head]
        return sgd_of(params, self.cfg)

    def _phases(self):
        """The refinement's phases that run: (modules re-initialised, epochs); a phase of 0 epochs is skipped
        whole, as the reference's `noisy_refine` returns at once for refine_times <= 0 (PES_cs.py:106-107):
        nothing re-initialised, nothing frozen."""
        deep, last = HEADS[self.cfg.model]
        return [(phase, names, epochs) for phase, (names, epochs) in enumerate(((deep, self.options.t2),
                                                                                 (last, self.options.t3))) if epochs > 0]

    def _replaced(self):
        """The modules the refinement re-initialised (the reference's SGD holds their old tensors, so these are in
        no optimizer afterwards)."""
        return {name for _, names, _ in self._phases() for name in names}

    def _refine(self):
        """Iteration T1: re-initialise the deep head, train it alone (T2 epochs), then the last layer alone (T3),
        each with a new Adam on the whole noisy split (a phase of 0 epochs skipped whole); then the main SGD goes on
        without the re-initialised modules, its momentum carried over."""
        model, opts = self._model, self.options
        result = (None, None)
        for phase, names, epochs in self._phases():
            fresh = self.initial_weights(REINIT + phase)
            for name in names:
                getattr(model, name).load_state_dict(getattr(fresh, name).state_dict())
            chosen = {id(p) for name in names for p in getattr(model, name).parameters()}
            for p in model.parameters():
                p.requires_grad_(id(p) in chosen)
            adam = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=opts.pes_lr)
            for epoch in range(epochs):
                result = self.feed.train_epoch(model, adam, self.data.train_idx, drop_last=True)
                self._progress(f"refinement of {'+'.join(names)}: epoch {epoch + 1} of {epochs}, loss "
                               f"{fmt(result[0], '.4f')}")
        for p in model.parameters():
            p.requires_grad_(True)
        old, new = self._optimizer, self._sgd(model, after_refine=True)
        for p in new.param_groups[0]["params"]:
            if p in old.state:
                new.state[p] = old.state[p]
        self._optimizers = (new,)
        return result

    def _end_round(self) -> dict:
        s = self.s
        record = self._round_record(STAGES[s.inner], s.round_best, s.best_val)
        s.epoch = 0
        if s.inner < PES:
            s.inner += 1
        else:
            s.done = True
            self._drop_networks()
        return record

    @staticmethod
    def expected_epochs(cfg):
        opts = cfg.options
        return float(cfg.epochs_per_stage), cfg.epochs_per_stage + opts.t2 + opts.t3 - 1


METHOD = Method("pes", "PES (NeurIPS 2021, SPEC §8.4), the CE-based variant: early-stopped training, a re-initialised "
                "and refined head, then training on the two-view confident set", PESTrial, published="PES",
                options=PESOptions, epoch_cost=1.3,
                defaults={"*": {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4, "batch_size": 128,
                                "epochs_per_stage": 200, "lr_milestones": (100, 150)}, "cifar100": {"t1": 30}},
                provenance={"*": "the reference's CIFAR-10 settings", "cifar100": "the reference's",
                            "mnist": "(P) the CIFAR-10 settings; head = LeNet's fc1-fc3 / fc3",
                            "fashionmnist": "(P) as mnist", "digits": "(P) the CIFAR-10 settings; head = fc1-fc2 / fc2"},
                quick={"epochs_per_stage": 6, "t1": 2, "t2": 1, "t3": 1},
                columns={"epoch": (KEPT_PRECISION,)}, version=2)
