"""`selfie`: SELFIE (Song et al., ICML 2019), SPEC §8.5, as the reference kaist-dmlab/SELFIE (HEAD b99f8cf,
TensorFlow 1.8: `SELFIE/main.py`, `algorithm/selfie.py`, `method/self_correcter.py`) runs, ported to the
project's data, noise, split and networks.

R = restarts + 1 runs (default 2 restarts: `selfie_restarts`; the reference's main.py sets 3, its banner,
README and paper say 2: a named discrepancy); each run re-initialises the network, the optimiser and the lr
schedule and lasts 100 epochs: W = 25 warm-up epochs, then 75 SELFIE epochs. `corrected[i]` (unset at the
start) persists across runs; the prediction histories are cleared after each run. Each training example has a
ring of its last q = 15 predicted labels (argmax of the training forward, weights before the step),
initialised to class 0.
  warm-up batch: mean CE against corrected[i] where set, else the noisy label; push the predictions.
  SELFIE batch of B: (1) a forward: per-example CE against the ORIGINAL noisy labels, and predictions;
      (2) clean = the ceil(B (1 - eps)) smallest losses (ceil, not the small-loss baselines' int);
      (3) every example of the batch whose history has normalised entropy H(p) / log C <= 0.05 (p: class
      frequencies among the q stored labels) gets corrected[i] = its most frequent stored label;
      (4) one step with mean CE on all batch examples with corrected[i] set (that label) plus the other clean
      ones (noisy label), by a second forward on that subset (<= B); (5) push the predictions of (1).
  With q = 15 the threshold needs all 15 labels equal (14 of 15 gives 0.106 at C = 10, 0.053 at C = 100).
eps starts at the noise rate (CIFAR-N: the label set's realised rate); after each run eps <- min(eps,
1 - #corrected / N). Nesterov SGD, momentum 0.9, lr 0.1, 0.02 from epoch 50, 0.004 from 75 (each run), L2
5e-4 (= weight decay), batch 128; the project's augmentation. Forward (1) uses batch statistics in train mode
like the reference's graph, but leaves the BatchNorm running statistics as they were (only the step's forward
moves them, as the TensorFlow update ops of the train op); `selfie_shared_forward` (off) lets the step reuse
(1)'s logits instead (the running statistics then of the whole batch). Selection: the project's
noisy-validation rule over all runs (the reference reports every epoch's test error, no rule). NOT reproduced:
an "epoch" of ceil(N / B) independent random batches (examples repeated or skipped), a third forward per
step for logging, DenseNet-25-12 / VGG-19 with dropout.
"""
import contextlib
import math
from dataclasses import dataclass
from typing import Iterator, Optional

import torch
import torch.nn.functional as F

from memomentum import limits
from memomentum.engine import lr_at
from memomentum.errors import ConfigError
from memomentum.methods.method import Method, Options
from memomentum.records import KEPT_PRECISION, Column
from memomentum.trial import LoopState, Trial, assumed_noise_rate

STAGE = "selfie"


@dataclass(frozen=True)
class SELFIEOptions(Options):
    selfie_restarts: int = 2  # runs after the first, each from a fresh network (main.py: 3; its README / paper: 2)
    selfie_warm_up: int = 25  # warm-up epochs at the start of every run
    selfie_history: int = 15  # q: predicted labels each example's history holds
    selfie_threshold: float = 0.05  # normalised entropy at or below which an example's label is corrected
    selfie_shared_forward: bool = False  # the step reuses forward (1)'s logits (one forward per step; off)

    def check(self) -> None:
        if self.selfie_restarts < 0 or self.selfie_warm_up < 0 or self.selfie_history < 1:
            raise ConfigError(f"selfie_restarts={self.selfie_restarts} and selfie_warm_up={self.selfie_warm_up} must "
                              f"not be negative, selfie_history={self.selfie_history} at least 1")
        if not 0.0 <= self.selfie_threshold <= 1.0:
            raise ConfigError(f"selfie_threshold={self.selfie_threshold} must lie in [0, 1]")
        limits.at_most("selfie_restarts", self.selfie_restarts, limits.LOOPS, "restarts")
        limits.at_most("selfie_warm_up", self.selfie_warm_up, limits.EPOCHS, "epochs")
        limits.at_most("selfie_history", self.selfie_history, limits.MEMORY, "predictions per example")

    def check_config(self, cfg) -> None:
        if self.selfie_warm_up >= cfg.epochs_per_stage:
            raise ConfigError(f"selfie_warm_up={self.selfie_warm_up} leaves no SELFIE epoch in a run of "
                              f"epochs_per_stage={cfg.epochs_per_stage}")


def clean_count(batch: int, eps: float) -> int:
    """Examples the low-loss separation keeps: ceil(B (1 - eps)), as the reference."""
    return int(math.ceil(batch * (1.0 - eps)))


def history_certainty(history: torch.Tensor, num_classes: int):
    """(normalised entropy H(p) / log C of each row's label frequencies, each row's most frequent label; ties:
    the smallest class, as numpy's argmax)."""
    p = F.one_hot(history, num_classes).sum(1).double() / history.shape[1]
    entropy = -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(1) / math.log(num_classes)
    return entropy, p.argmax(1)


def refurbish(losses, labels, corrected, history, eps: float, threshold: float, num_classes: int):
    """One SELFIE batch's selection (the reference's patch_clean_with_refurbishable_sample_batch, vectorised):
    (which examples the step trains on, the label each trains with, the batch's corrected labels after it). The
    clean ones are the ceil(B (1 - eps)) smallest losses against the noisy labels; an example whose history's
    normalised entropy is at most `threshold` gets its most frequent predicted label as corrected label; the
    step takes every example with a corrected label (that label) and the other clean ones (their noisy label)."""
    clean = torch.zeros_like(labels, dtype=torch.bool)
    clean[torch.argsort(losses, stable=True)[:clean_count(len(labels), eps)]] = True
    entropy, frequent = history_certainty(history, num_classes)
    corrected = torch.where(entropy <= threshold, frequent, corrected)
    return clean | (corrected >= 0), torch.where(corrected >= 0, corrected, labels), corrected


@contextlib.contextmanager
def running_stats_kept(model: torch.nn.Module):
    """Run forwards in train mode (batch statistics) while leaving every BatchNorm's running statistics as they
    were."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [{k: v.clone() for k, v in m.named_buffers(recurse=False)} for m in norms]
    try:
        yield
    finally:
        for m, buffers in zip(norms, saved):
            for k, v in buffers.items():
                getattr(m, k).copy_(v)


@dataclass
class SELFIEState(LoopState):
    corrected: Optional[torch.Tensor] = None  # per training-split position: its corrected label, -1 where unset
    history: Optional[torch.Tensor] = None  # (positions, q): the last q predicted labels, a ring
    pushes: Optional[torch.Tensor] = None  # per position: predictions pushed so far in this run
    eps: Optional[float] = None  # the noise rate the low-loss separation assumes (updated after each run)


class SELFIETrial(Trial):
    State = SELFIEState
    selects = True  # the examples each run's last epoch stepped on

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        d = self.data
        self._position = torch.full((len(d.noisy_labels),), -1, dtype=torch.long, device=d.train_idx.device)
        self._position[d.train_idx] = torch.arange(len(d.train_idx), device=d.train_idx.device)
        s = self.s
        if s.corrected is None:  # a fresh trial (a checkpoint brings its own)
            n, q = len(d.train_idx), self.options.selfie_history
            s.corrected = torch.full((n,), -1, dtype=torch.long, device=d.train_idx.device)
            s.history = torch.zeros((n, q), dtype=torch.long, device=d.train_idx.device)
            s.pushes = torch.zeros(n, dtype=torch.long, device=d.train_idx.device)
            s.eps = assumed_noise_rate(self.cfg.noise_type, self.cfg.noise_rate, d.realized_noise_rate)

    def _round(self) -> Iterator[dict]:
        cfg, s, opts = self.cfg, self.s, self.options
        self._networks(self._build)
        while True:
            lr = lr_at(s.epoch, cfg.lr, cfg.lr_milestones, cfg.lr_gamma)
            self._set_lr(lr)
            loss, acc, kept = self._epoch(warm_up=s.epoch < opts.selfie_warm_up)
            score = float(self.scorer(self._model))
            improved = score > s.best_val
            test_acc = self._improve(score, STAGE) if improved else None
            corrected = s.corrected >= 0
            right = s.corrected == self.data.clean_labels[self.data.train_idx]
            over = yield from self._end_epoch(score, improved, test_acc, length=cfg.epochs_per_stage, lr=lr,
                                              train_loss=loss, train_acc=acc, kept_precision=kept,
                                              selfie_corrected=int(corrected.sum()),
                                              selfie_correction_precision=_share(right & corrected, corrected))
            if over:
                return

    def _build(self):
        """Every run: a fresh network (its own initial weights) and a fresh Nesterov SGD."""
        model = self.fresh_model(self.s.inner + 1)
        cfg = self.cfg
        return (model,), (torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                          weight_decay=cfg.weight_decay, nesterov=True),)

    def _epoch(self, warm_up: bool):
        """One epoch of warm-up or SELFIE batches; (mean loss, accuracy % of forward (1) against the noisy labels,
        share % of correct labels among the examples stepped on), read from the device once."""
        s, model, opt, d = self.s, self._model, self._optimizer, self.data
        num_classes, opts = d.info.num_classes, self.options
        clean_labels = d.clean_labels
        model.train()
        sums = torch.zeros(5, device=self.device)  # loss, correct, stepped, stepped right, stepped known
        n = 0
        self._kept = None  # this epoch's stepped examples, for the run's exported selection
        for x, y, b in self.feed.batches(s.confident_idx):
            pos = self._position[b]
            fixed = s.corrected[pos]
            if warm_up:
                step = torch.ones_like(y, dtype=torch.bool)
                target = torch.where(fixed >= 0, fixed, y)
                with self.engine.autocast():
                    logits = model(x)
                loss = F.cross_entropy(logits.float(), target)
                preds = logits.detach().argmax(1)
            else:
                with torch.no_grad() if not opts.selfie_shared_forward else contextlib.nullcontext(), \
                        running_stats_kept(model) if not opts.selfie_shared_forward else contextlib.nullcontext():
                    with self.engine.autocast():
                        first = model(x)
                losses = F.cross_entropy(first.float().detach(), y, reduction="none")
                preds = first.detach().argmax(1)
                step, labels, fixed = refurbish(losses, y, fixed, s.history[pos], s.eps, opts.selfie_threshold,
                                                num_classes)
                s.corrected[pos] = fixed
                target = labels[step]
                if opts.selfie_shared_forward:
                    logits_step = first[step]
                else:
                    with self.engine.autocast():
                        logits_step = model(x[step])
                loss = F.cross_entropy(logits_step.float(), target)  # never empty: ceil(B (1 - eps)) >= 1
                logits = first
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            slot = s.pushes[pos] % opts.selfie_history
            s.history[pos, slot] = preds
            s.pushes[pos] += 1
            used = target  # the labels the step trained with
            self._keep(b[step])
            known = clean_labels[b][step] >= 0
            sums += torch.stack([loss.detach().float() * len(y), (logits.detach().argmax(1) == y).sum().float(),
                                 step.sum().float(), ((used == clean_labels[b][step]) & known).sum().float(),
                                 known.sum().float()])
            n += len(y)
        loss_sum, correct, _, right, known = sums.tolist()
        return loss_sum / max(n, 1), 100.0 * correct / max(n, 1), (round(100.0 * right / known, 4) if known else None)

    def label_issues(self, given, in_final):
        """SELFIE's answer: the examples whose label it corrected to another class, and those its last epoch left
        out (`corrected` is in the training split's order, as `given`)."""
        corrected = self.s.corrected
        if corrected is None:
            return None
        fixed = (corrected >= 0) & (corrected != given)
        return fixed | ~in_final if in_final is not None else fixed

    def _end_round(self) -> dict:
        s, d = self.s, self.data
        record = self._round_record(STAGE, s.round_best, s.best_val)
        s.eps = min(s.eps, 1.0 - float((s.corrected >= 0).sum()) / len(d.train_idx))  # the reference's update
        s.history.zero_()  # the prediction histories start afresh with the next run
        s.pushes.zero_()
        s.epoch = 0
        self._drop_networks()
        if s.inner < self.options.selfie_restarts:
            s.inner += 1
        else:
            s.done = True
        return record

    @staticmethod
    def expected_epochs(cfg):
        epochs = (cfg.options.selfie_restarts + 1) * cfg.epochs_per_stage
        return float(epochs), epochs


def _share(part: torch.Tensor, whole: torch.Tensor) -> Optional[float]:
    """Share (%) of the True entries of `whole` that `part` has too (None where `whole` has none)."""
    n = int(whole.sum())
    return round(100.0 * int(part.sum()) / n, 4) if n else None


METHOD = Method("selfie", "SELFIE (ICML 2019, SPEC §8.5): small-loss selection plus label correction of examples "
                "whose recent predictions agree, over restarted runs", SELFIETrial, published="SELFIE",
                options=SELFIEOptions, epoch_cost=1.2,
                defaults={"*": {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 128,
                                "epochs_per_stage": 100, "lr_milestones": (50, 75), "lr_gamma": 0.2}},
                provenance={"*": "the reference's main.py / selfie.py, every data set (restarts: its README's 2)"},
                quick={"epochs_per_stage": 3, "selfie_warm_up": 1, "selfie_restarts": 1, "selfie_history": 2},
                columns={"epoch": (KEPT_PRECISION,
                                   Column("selfie_corrected", "int64", "training examples with a corrected label so far",
                                          tag="train/selfie_corrected"),
                                   Column("selfie_correction_precision", "float64", "share of corrected labels that "
                                          "are the clean label (%, diagnostic)", tag="train/selfie_correction_precision"))})
