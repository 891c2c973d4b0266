"""Device-resident training and evaluation passes.

The whole data set sits on the trial's device as uint8 (N, C, H, W); a batch is gathered by an index
tensor, converted, augmented and normalised on the device in one go (airbench's habit), so there is
no DataLoader, no PIL and no per-sample Python. Metrics accumulate on the device and are read once
per pass. The official transforms are matched in distribution:
  RandomCrop(32, padding=4) -> zero padding on the 0..1 scale (black pixels), i.e. BEFORE
                               normalisation, then a uniform offset in 0..2p for each image;
  RandomHorizontalFlip()    -> each image mirrored with probability 1/2;
  ToTensor + Normalize      -> x / 255, then (x - mean) / std.
Every random draw (shuffling, crops, flips) comes from the engine's own torch.Generator on the
device, whose state is part of a trial's checkpoint.
"""
import contextlib
from typing import Callable, Iterator, Optional, Tuple

import torch
import torch.nn.functional as F

from memomentum.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """'auto' -> the current GPU when one is visible, else cpu; asking for a GPU that is not there is an error.
    A GPU always comes back with its index (cuda:N): per-device calls such as the memory cap need one."""
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        name = "cuda"
    device = torch.device(name)
    if device.type != "cuda":
        return device
    count = torch.cuda.device_count()
    index = device.index if device.index is not None else (torch.cuda.current_device() if count else 0)
    if index >= count:
        raise ConfigError(f"device={name!r} but this machine sees {count} GPU(s); "
                          f"use device=cpu (or auto), or run where the GPU exists")
    return torch.device("cuda", index)


class Engine:
    """Batch preparation and the three passes (train, predict, evaluate) for one trial.

        engine = Engine(device=device, mean=info.mean, std=info.std, crop_padding=info.crop_padding,
                        flip=info.flip, num_classes=info.num_classes, batch_size=128, eval_batch_size=1024,
                        precision="fp32", seed=0)
    """

    def __init__(self, *, device: torch.device, mean, std, crop_padding: int, flip: bool, num_classes: int,
                 batch_size: int, eval_batch_size: int, precision: str = "fp32", seed: int = 0):
        self.device = device
        self.mean = torch.tensor(mean, device=device, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=device, dtype=torch.float32).view(1, -1, 1, 1)
        self.crop_padding = crop_padding
        self.flip = flip
        self.num_classes = num_classes
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.bf16 = precision == "bf16"
        self.channels_last = self.bf16 and device.type == "cuda"
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)

    # --- batches ----------------------------------------------------------------------------
    def batch(self, images_u8: torch.Tensor, augment: bool) -> torch.Tensor:
        """uint8 (B, C, H, W) -> normalised float32, randomly cropped and flipped when `augment`."""
        x = images_u8.float().div_(255.0)
        if augment and self.crop_padding:
            x = batch_crop(x, self.crop_padding, self.generator)
        if augment and self.flip:
            x = batch_flip(x, self.generator)
        return self.place((x - self.mean) / self.std)

    def place(self, x: torch.Tensor) -> torch.Tensor:
        """An input batch on the device, in the memory format the model runs in."""
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def autocast(self):
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    @classmethod
    def for_data(cls, info, cfg, device: torch.device, seed: int, augment: bool = True) -> "Engine":
        """The engine of a trial on data set `info` with config `cfg` (augmentation off: no crop, no flip)."""
        return cls(device=device, mean=info.mean, std=info.std, crop_padding=info.crop_padding if augment else 0,
                   flip=info.flip and augment, num_classes=info.num_classes, batch_size=cfg.batch_size,
                   eval_batch_size=cfg.eval_batch_size, precision=cfg.precision, seed=seed)

    # --- passes -----------------------------------------------------------------------------
    def batches(self, images, labels, idx, drop_last: bool = False,
                batch_size: Optional[int] = None) -> Iterator[Tuple[torch.Tensor, ...]]:
        """(augmented inputs, labels, indices) for one epoch over `idx` in a fresh random order, in batches of
        `batch_size` (default: the engine's); the last batch may be short unless `drop_last`. The order is
        drawn now, crops and flips per batch."""
        size = batch_size or self.batch_size
        order = idx[torch.randperm(len(idx), generator=self.generator, device=self.device)]
        stop = len(order) - len(order) % size if drop_last else len(order)
        chunks = (order[start:start + size] for start in range(0, stop, size))
        return ((self.batch(images[b], augment=True), labels[b], b) for b in chunks)

    def train_epoch(self, model, optimizer, images, labels, idx, weight: Optional[torch.Tensor] = None,
                    drop_last: bool = False, batch_size: Optional[int] = None, **hooks):
        """One epoch over `idx` in a fresh random order (the last batch may be short unless `drop_last`);
        `hooks`: fit_batches' loss_fn / before_step."""
        batches = self.batches(images, labels, idx, drop_last, batch_size)
        return self.fit_batches(model, optimizer, ((x, y) for x, y, _ in batches), weight, **hooks)

    def fit_batches(self, model, optimizer, batches, weight: Optional[torch.Tensor] = None,
                    loss_fn: Optional[Callable] = None, before_step: Optional[Callable] = None) -> Tuple[float, float]:
        """One optimizer step per (inputs, labels) batch with (optionally class-weighted) cross-entropy, or
        `loss_fn(logits, labels) -> scalar loss`, or None to take no step on that batch (e.g. a loss that is not
        finite); `before_step(model)` runs between backward() and step() (e.g. a gradient mask).

        Returns (mean loss, accuracy % against the given labels) over the batches stepped on, read from the device
        once at the end; (None, None) when there was none."""
        model.train()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        n = 0
        for x, y in batches:
            with self.autocast():
                logits = model(x)
                loss = F.cross_entropy(logits, y, weight=weight) if loss_fn is None else loss_fn(logits.float(), y)
            if loss is None:
                continue
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if before_step is not None:
                before_step(model)
            optimizer.step()
            loss_sum += loss.detach().float() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            n += len(y)
        if n == 0:
            return None, None
        return loss_sum.item() / n, 100.0 * correct.item() / n

    @torch.inference_mode()
    def predict(self, model, images, idx, augment: bool) -> torch.Tensor:
        """argmax predictions for images[idx], in idx order (no autograd, eval-mode BatchNorm)."""
        return self._passes(model, images, idx, augment, lambda logits: logits.argmax(1), torch.long)

    @torch.inference_mode()
    def logits(self, model, images, idx, augment: bool) -> torch.Tensor:
        """float32 logits (len(idx), C) for images[idx], in idx order (no autograd, eval-mode BatchNorm)."""
        return self._passes(model, images, idx, augment, lambda logits: logits.float(), torch.float32)

    def _passes(self, model, images, idx, augment: bool, keep, dtype) -> torch.Tensor:
        model.eval()
        out = []
        for start in range(0, len(idx), self.eval_batch_size):
            x = self.batch(images[idx[start:start + self.eval_batch_size]], augment)
            with self.autocast():
                out.append(keep(model(x)))
        if out:
            return torch.cat(out)
        return torch.empty((0,) if dtype == torch.long else (0, self.num_classes), dtype=dtype, device=self.device)

    def val_score(self, model, images, labels, idx, augment: bool) -> float:
        """Class-balanced accuracy (%) on the noisy validation labels, rounded to 2 decimals (SPEC §3)."""
        preds = self.predict(model, images, idx, augment)
        return class_balanced_accuracy(preds, labels[idx], self.num_classes)

    def accuracy(self, model, images, labels) -> float:
        """Plain top-1 accuracy (%) over all examples, e.g. the clean test set, without augmentation.

        (The official `evaluate` averages per-batch accuracies with equal weights, which biases the
        figure by the short last batch; this is the exact share of correct predictions.)"""
        idx = torch.arange(len(labels), device=self.device)
        preds = self.predict(model, images, idx, augment=False)
        return 100.0 * (preds == labels).sum().item() / max(len(labels), 1)


def class_balanced_accuracy(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> float:
    """Mean over classes of per-class accuracy, in %, rounded to 2 decimals.

    Replaces the official per-sample loop of `evaluate_val`. Classes absent from `labels` are left
    out of the mean (the official code would return NaN there)."""
    total = torch.bincount(labels, minlength=num_classes)
    correct = torch.bincount(labels[preds == labels], minlength=num_classes)
    present = total > 0
    per_class = 100.0 * correct[present].double() / total[present].double()
    return round(per_class.mean().item(), 2) if present.any() else 0.0


def batch_crop(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """RandomCrop(size=H, padding=p) for a whole batch: zero-pad, then one random offset per image."""
    b, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=x.device)
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    return padded[torch.arange(b, device=x.device)[:, None, None, None],
                  torch.arange(c, device=x.device)[None, :, None, None], rows, cols]


def batch_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """RandomHorizontalFlip(p=0.5) for a whole batch."""
    mirror = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
    return torch.where(mirror[:, None, None, None], x.flip(3), x)


def sgd(model, lr: float, momentum: float, weight_decay: float) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)


def sgd_of(params, cfg) -> torch.optim.SGD:
    """SGD over `params` with a config's lr, momentum and weight decay."""
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def lr_at(epoch: int, lr: float, milestones, gamma: float) -> float:
    """MultiStepLR's rate for 0-based epoch `epoch` (scheduler.step() after every epoch)."""
    return lr * gamma ** sum(1 for m in milestones if m <= epoch)


def state_copy(module: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}
