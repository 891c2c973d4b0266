"""The largest value of every count a user sets. A count beyond these is a typo or a misunderstanding: it would
allocate more memory than any machine has (a per-example history of 10**9 labels) or run until killed (10**30
epochs), so it is refused in one line before anything runs. Each bound is far above every published recipe.
A leaf: imports nothing of the package but its errors.
"""
from memomentum.errors import ConfigError, short

EPOCHS = 100_000  # any count of epochs: a round, a warm-up, a refinement phase, a milestone (recipes: <= 300)
BATCH = 1 << 20  # examples in one batch (recipes: 32 .. 1024)
LOOPS = 1_000  # loops, rounds and restarts (Me-Momentum: 3 x 20; SELFIE: 3 runs)
MEMORY = 1_000  # past epochs or predictions kept per training example (SELFIE's q = 15, SFT's k = 2 .. 4):
#                 on the device, q x N labels (int64) or k x N floats
IMAGE_SIZE = 4_096  # pixels on a side of a resized image (Clothing1M: 256)
OWN_DATA_BYTES = 16 * 2 ** 30  # a data set given by a path, decoded into memory (uint8): a larger one needs a smaller
#                               image_size


def at_most(name: str, value: int, limit: int, unit: str) -> None:
    """ConfigError in one line unless `value` <= `limit`."""
    if value > limit:
        raise ConfigError(f"{name}={short(value, 30)} is beyond the limit of {limit:,} {unit}; use a smaller value "
                          f"(the limits and why: memomentum/limits.py)")


__all__ = ["EPOCHS", "BATCH", "LOOPS", "MEMORY", "IMAGE_SIZE", "OWN_DATA_BYTES", "at_most"]
