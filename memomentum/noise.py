"""Label noise and the train / validation split (SPEC §1), as pure seeded functions.

Noise is injected into ALL training labels first; then a seeded split keeps `train_fraction` of the
examples for training and the rest, with their NOISY labels, for validation. The same
(data set, noise type, rate, seed, fraction) always gives the same labels and split; `noisy_split`
caches them on disk under $MEMOMENTUM_CACHE (default ~/.cache/memomentum) so that a sweep computes
instance noise once per cell, not once per method.

Every random draw comes from numpy's PCG64 generator seeded with (seed, purpose), so the noise, the
split and everything the training does are independent streams of one seed.
"""
import hashlib
import os
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from memomentum.atomic import atomic_savez, load_npz
from memomentum.errors import ConfigError

NOISE_TYPES = ("symmetric", "pairflip", "instance")
INSTANCE_STD = 0.1  # std of the per-example flip rate around the target rate (Xia et al. 2020)
CACHE_ENV = "MEMOMENTUM_CACHE"

_NOISE_STREAM, _SPLIT_STREAM = 1, 2


def transition_matrix(noise_type: str, rate: float, num_classes: int) -> np.ndarray:
    """Row-stochastic T with T[i, j] = P(noisy = j | clean = i) for the class-conditional types."""
    c = num_classes
    if noise_type == "symmetric":
        t = np.full((c, c), rate / (c - 1))
        np.fill_diagonal(t, 1.0 - rate)
    elif noise_type == "pairflip":
        t = np.eye(c) * (1.0 - rate)
        t[np.arange(c), (np.arange(c) + 1) % c] += rate
    else:
        raise ValueError(f"{noise_type!r} noise has no class-level transition matrix")
    return t


def sample_rows(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One draw per row of a (N, C) row-stochastic matrix, by inverse CDF (vectorised).

    Replaces the official per-example loop `flipper.multinomial(1, P[y])` / `np.random.choice(C, p=P[i])`."""
    cdf = np.cumsum(probs, axis=1)
    u = rng.random((len(probs), 1)) * cdf[:, -1:]  # scale by the row total: immune to rounding
    return np.minimum((u >= cdf).sum(axis=1), probs.shape[1] - 1)


def class_conditional_noise(labels: np.ndarray, noise_type: str, rate: float, num_classes: int,
                            rng: np.random.Generator) -> np.ndarray:
    if rate == 0:
        return labels.copy()
    t = transition_matrix(noise_type, rate, num_classes)
    return sample_rows(t[labels], rng)


def truncated_normal(mean: float, std: float, size: int, rng: np.random.Generator,
                     low: float = 0.0, high: float = 1.0) -> np.ndarray:
    """Normal(mean, std) truncated to [low, high], by rejection (exact; scipy's truncnorm in the official code)."""
    out = rng.normal(mean, std, size)
    bad = (out < low) | (out > high)
    while bad.any():
        out[bad] = rng.normal(mean, std, int(bad.sum()))
        bad = (out < low) | (out > high)
    return out


def instance_noise(images: np.ndarray, labels: np.ndarray, rate: float, num_classes: int,
                   rng: np.random.Generator) -> np.ndarray:
    """Instance-dependent noise of Xia et al. (2020), SPEC §1, vectorised by class.

    Replaces the official per-example loop of `get_instance_noisy_label`:
        q_i ~ N(rate, 0.1) truncated to [0, 1];  W ~ N(0, 1) of shape (C, d, C)
        s = x_i @ W[y_i];  s[y_i] = -inf;  p = q_i * softmax(s);  p[y_i] += 1 - q_i;  y~_i ~ p
    x_i are the RAW pixel values (0..255 as floats), flattened in the stored (C, H, W) order.
    W[c] is drawn class by class, in class order, from the same stream."""
    n, c = len(labels), num_classes
    x = images.reshape(n, -1)  # uint8; converted to float64 one class at a time to bound memory
    q = truncated_normal(rate, INSTANCE_STD, n, rng)
    probs = np.empty((n, c))
    for k in range(c):
        w_k = rng.standard_normal((x.shape[1], c))
        rows = np.flatnonzero(labels == k)
        s = x[rows].astype(np.float64) @ w_k
        s[:, k] = -np.inf
        s -= s.max(axis=1, keepdims=True)
        p = np.exp(s)
        p /= p.sum(axis=1, keepdims=True)
        p *= q[rows, None]
        p[:, k] += 1.0 - q[rows]
        probs[rows] = p
    return sample_rows(probs, rng)


def make_noisy_labels(noise_type: str, rate: float, clean_labels: np.ndarray, images: np.ndarray,
                      num_classes: int, seed: int) -> np.ndarray:
    if noise_type not in NOISE_TYPES:
        raise ValueError(f"unknown noise type {noise_type!r}; valid: {', '.join(NOISE_TYPES)}")
    rng = np.random.default_rng([seed, _NOISE_STREAM])
    if noise_type == "instance":
        return instance_noise(images, clean_labels, rate, num_classes, rng) if rate > 0 else clean_labels.copy()
    return class_conditional_noise(clean_labels, noise_type, rate, num_classes, rng)


def check_split(n: int, train_fraction: float, dataset: str = "the data set") -> int:
    """The number of training examples of the split; ConfigError if either part would be empty."""
    n_train = int(n * train_fraction)
    if not 0 < n_train < n:
        part = "training" if n_train == 0 else "validation"
        raise ConfigError(f"train_fraction={train_fraction:g} leaves no {part} examples of the {n} in {dataset}; "
                          f"use a value such as 0.9 (the official one)")
    return n_train


def split(n: int, train_fraction: float, seed: int):
    """Seeded split of n examples into sorted (train_idx, val_idx); int(n * fraction) go to training."""
    order = np.random.default_rng([seed, _SPLIT_STREAM]).permutation(n)
    n_train = check_split(n, train_fraction)
    return np.sort(order[:n_train]), np.sort(order[n_train:])


@dataclass(frozen=True)
class NoisySplit:
    noisy_labels: torch.Tensor  # int64 (N,) for ALL training examples
    train_idx: torch.Tensor  # int64, sorted, indices used for training and extraction
    val_idx: torch.Tensor  # int64, sorted, indices of the noisy validation set
    realized_noise_rate: Optional[float]  # share of the N labels that differ from the clean ones (over those whose
    #                                       clean label is known; None if none is)
    label_hash: str  # fingerprint of noisy labels + split, written with every trial


def noisy_split(dataset: str, noise_type: str, rate: float, seed: int, train_fraction: float,
                clean_labels: torch.Tensor, images: torch.Tensor, num_classes: int,
                cache_dir: str = "") -> NoisySplit:
    """Noisy labels and split for one cell, from the on-disk cache when present.

    The cache key holds the cell AND a fingerprint of the data, so replacing data files (or a test's
    stand-in files under the same name) can never return stale labels."""
    clean = clean_labels.numpy()
    fingerprint = hashlib.blake2b(clean.tobytes(), digest_size=8)
    if noise_type == "instance":
        fingerprint.update(images.numpy().tobytes())
    key = f"{dataset}-{noise_type}-{rate!r}-{seed}-{train_fraction!r}-{fingerprint.hexdigest()}"
    path = os.path.join(cache_dir or default_cache_dir(), "noise", key + ".npz")
    n = len(clean)
    check_split(n, train_fraction, dataset)

    def intact(z) -> bool:  # a damaged or foreign cache file is recomputed and replaced, never trusted
        return (z["noisy"].shape == (n,) and 0 <= z["noisy"].min(initial=0) and z["noisy"].max(initial=0) < num_classes
                and len(z["train_idx"]) + len(z["val_idx"]) == n
                and np.array_equal(np.union1d(z["train_idx"], z["val_idx"]), np.arange(n)))

    cached = load_npz(path, ("noisy", "train_idx", "val_idx"), intact)
    if cached is not None:
        noisy, train_idx, val_idx = cached["noisy"], cached["train_idx"], cached["val_idx"]
    else:
        noisy = make_noisy_labels(noise_type, rate, clean, images.numpy(), num_classes, seed)
        train_idx, val_idx = split(n, train_fraction, seed)
        atomic_savez(path, noisy=noisy, train_idx=train_idx, val_idx=val_idx)
    return _noisy_split(noisy, clean, train_idx, val_idx)


def given_noise_split(noisy: np.ndarray, clean_labels: torch.Tensor, seed: int, train_fraction: float,
                      dataset: str) -> NoisySplit:
    """The split of labels that come noisy already (human noise, SPEC §7): the same seeded 90/10 split as
    synthetic noise; the realised rate is over all training labels, as the label file's."""
    clean = clean_labels.numpy()
    check_split(len(clean), train_fraction, dataset)
    train_idx, val_idx = split(len(clean), train_fraction, seed)
    return _noisy_split(noisy, clean, train_idx, val_idx)


def _noisy_split(noisy: np.ndarray, clean: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray) -> NoisySplit:
    """The split as tensors, with the realised noise rate over all training labels and the labels' hash."""
    digest = hashlib.blake2b(noisy.astype(np.int64).tobytes() + train_idx.astype(np.int64).tobytes(), digest_size=8)
    known = clean >= 0  # a data set given by a path knows the clean labels of some examples, or none
    rate = float((noisy[known] != clean[known]).mean()) if known.any() else None
    return NoisySplit(torch.from_numpy(noisy.astype(np.int64)), torch.from_numpy(train_idx.astype(np.int64)),
                      torch.from_numpy(val_idx.astype(np.int64)), rate, digest.hexdigest())


def default_cache_dir() -> str:
    return os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "memomentum")
