"""`cdr`: CDR, robust early-learning (Xia et al., ICLR 2021), as the reference xiaoboxia/CDR main.py (HEAD
6665a8b) trains (SPEC §8.3), on the project's data, noise, split and networks.

Plain cross-entropy with one change between backward() and step(): over every parameter with 2 or 4
dimensions (linear weights and convolution kernels; BatchNorm parameters and biases untouched) m = |w * g|,
concatenated across layers; the n_keep = int((1 - tau) * n) largest count as critical: their gradients are
multiplied by (1 - tau) (the reference's `mask * clip`, option `cdr_scale_grad`), all others set to 0, so
SGD's weight decay alone moves the non-critical weights. tau is the noise rate (CIFAR-N: the label set's
realised rate). The reference's `train_one_step` takes the threshold as `torch.topk(metric, nz)[0][-1]`;
here `torch.kthvalue` finds the same value (the n_keep-th largest) without sorting n values. Its ramp
`clip_narry` is computed and then overwritten by 1 - tau from the first epoch on (dead code, not reproduced).
SGD lr 0.01, momentum 0.9, weight decay 1e-3; CIFAR: batch 64, 200 epochs, x0.1 at epochs 40 and 80 of
its MultiStepLR, which it steps at the START of each epoch, so the decays land one epoch early: lr_milestones
(39, 79); MNIST-like: batch 32, 100 epochs, (9, 19). The short last batch is kept. Reported (the project's
rule): the test accuracy at the best noisy-validation score (the reference's: at its first best
un-augmented validation accuracy).
"""
from dataclasses import dataclass
from typing import Iterator

import torch

from memomentum.errors import ConfigError
from memomentum.methods.method import Method, Options
from memomentum.trial import Trial, assumed_noise_rate


@dataclass(frozen=True)
class CDROptions(Options):
    tau: float = -1.0  # share of the weights whose gradient is zeroed each step; -1 = the noise rate
    cdr_scale_grad: bool = True  # multiply the kept gradients by 1 - tau, as the reference's mask * clip

    def check(self) -> None:
        if self.tau != -1.0 and not 0.0 <= self.tau < 1.0:
            raise ConfigError(f"tau={self.tau} must lie in [0, 1), or be -1 (the noise rate)")


def critical_mask(model: torch.nn.Module, tau: float, scale: bool) -> None:
    """The reference's gradient mask, in place: among the gradients of every 2-D and 4-D parameter, keep those
    whose |w * g| is at least the int((1 - tau) * n)-th largest (times 1 - tau when `scale`), zero the others."""
    params = [p for p in model.parameters() if p.grad is not None and p.dim() in (2, 4)]
    if not params:
        return
    metric = torch.cat([(p.detach() * p.grad).abs().flatten() for p in params])
    n_keep = max(int((1 - tau) * metric.numel()), 1)
    threshold = torch.kthvalue(metric, metric.numel() - n_keep + 1).values  # the n_keep-th largest
    factor = 1.0 - tau if scale else 1.0
    for p in params:
        keep = (p.detach() * p.grad).abs() >= threshold
        p.grad.mul_(keep.to(p.grad.dtype) * factor)


class CDRTrial(Trial):
    def _round(self) -> Iterator[dict]:
        cfg, opts = self.cfg, self.options
        self._networks(self._sgd_network)
        tau = opts.tau if opts.tau >= 0 else assumed_noise_rate(cfg.noise_type, cfg.noise_rate,
                                                                 self.data.realized_noise_rate)
        mask = lambda model: critical_mask(model, tau, opts.cdr_scale_grad)  # noqa: E731
        yield from self._scheduled_epochs("cdr", before_step=mask)

    def _end_round(self) -> dict:
        return self._finish("cdr")

    @staticmethod
    def expected_epochs(cfg):
        return float(cfg.epochs_per_stage), cfg.epochs_per_stage


MNIST_LIKE = {"batch_size": 32, "epochs_per_stage": 100, "lr_milestones": (9, 19)}
METHOD = Method("cdr", "CDR (ICLR 2021, SPEC §8.3): cross-entropy whose non-critical weights (small |w * g|) get no "
                "gradient, only weight decay", CDRTrial, published="CDR", options=CDROptions, epoch_cost=1.15,
                defaults={"*": {"lr": 0.01, "momentum": 0.9, "weight_decay": 1e-3, "batch_size": 64,
                                "epochs_per_stage": 200, "lr_milestones": (39, 79)},
                          "mnist": MNIST_LIKE, "fashionmnist": MNIST_LIKE, "digits": MNIST_LIKE},
                provenance={"*": "the reference's CIFAR settings; milestones one epoch early as its scheduler",
                            "mnist": "the reference's MNIST-like settings", "fashionmnist": "the reference's",
                            "digits": "(P) the reference's MNIST-like settings"},
                quick={"epochs_per_stage": 4})
