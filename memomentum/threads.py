"""How many CPU threads a trial's torch uses: one rule, applied before the trial's first tensor op.

By default every process sizes torch's intra-op pool to all the machine's cores, so two trials on one machine
(two terminals, a test run beside a sweep, several trials per GPU as processes, a Ray node running several CPU
trials) oversubscribe it, and small networks then spend their time in thread barriers: measured on 2 cores, one
trial with both cores takes 2.4x (ResNet-18) to 5-7x (digitsnet) as long beside a second such trial, while a
trial with one thread loses nothing there (benchmarks/RESULTS.md, "CPU threads per trial").

The rule, for a trial whose `threads` setting is 0:
- a sweep trial: its `cpu` resource (Ray reserves those CPUs for it), less its DataLoader workers, at least 1
  (sweeps/trainable.py resolves it into the trial's config);
- `python -m memomentum` and every other caller, where nothing is reserved: the network's entry in
  memomentum.models.DEFAULT_THREADS (1 for the small networks), else the CPUs this process may run on less its
  DataLoader workers, at least 1.
A `threads` setting of N > 0 is used as given. Intra-op and inter-op pools are both set; torch lets a process set
its inter-op pool once, before any inter-op work, so a process that runs several trials (a sweep's reused worker)
keeps the first trial's inter-op pool (it only serves torch.jit.fork, which no trial uses). The thread count in
effect is recorded with every result (`threads`).
"""
import torch

from memomentum.data import info as dataset_info
from memomentum.models import DEFAULT_THREADS
from memomentum.stream import auto_workers, available_cpus


def data_workers(cfg, cpus: int) -> int:
    """DataLoader worker processes the trial of `cfg` starts on `cpus` CPUs (none for in-memory data)."""
    info = dataset_info(cfg.dataset)
    if info is None or not info.streams:
        return 0
    return cfg.num_workers if cfg.num_workers >= 0 else auto_workers(cpus)


def reserved_threads(cfg, cpus: float) -> int:
    """Threads of a trial that has `cpus` CPUs to itself (a sweep trial's `cpu` resource; fractions round down)."""
    if cfg.threads > 0:
        return cfg.threads
    share = max(1, int(cpus))
    return max(1, share - data_workers(cfg, share))


def trial_threads(cfg) -> int:
    """The intra-op threads of a trial of `cfg` (the rule above)."""
    if cfg.threads > 0:
        return cfg.threads
    model = cfg.model or dataset_info(cfg.dataset).model
    cpus = available_cpus()
    if model in DEFAULT_THREADS:
        return min(DEFAULT_THREADS[model], cpus)
    return max(1, cpus - data_workers(cfg, cpus))


def use_threads(n: int) -> int:
    """Set torch's intra-op pool (and the inter-op pool where torch still allows it) to `n`; returns the intra-op
    threads in effect, checked."""
    torch.set_num_threads(n)
    if torch.get_num_interop_threads() != n:
        try:
            torch.set_num_interop_threads(n)
        except RuntimeError:  # this process ran inter-op work already (an earlier trial): its pool stays
            pass
    if torch.get_num_threads() != n:
        raise RuntimeError(f"torch runs {torch.get_num_threads()} intra-op threads where {n} were set")
    return n
