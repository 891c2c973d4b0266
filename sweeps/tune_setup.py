"""What every Ray Tune run of a sweep shares: how its trials are named and where their folders go, and the
environment variables Tune reads for the duration of a run.

Tune stores the name and folder functions with every trial's state: module functions travel by reference, where a
closure over the cell specs would put every cell into every trial's state (quadratic state and driver memory).
"""
import contextlib
import os


@contextlib.contextmanager
def environ(values: dict):
    """Set environment variables for the duration of the block, then restore them."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def trial_name(trial) -> str:
    """A trial's name: its cell's name, e.g. cifar10-pairflip-0.4-s3-memomentum (the key is "<name>-<hash>"); a tuning
    trial's, its search's and its number."""
    if "cell" in trial.config:
        return trial.config["cell"].rsplit("-", 1)[0]
    return f"tune-{trial.config['group'].rsplit('-', 1)[0]}-{trial.trial_id.rsplit('_', 1)[-1]}"


def trial_dirname(trial) -> str:
    return trial.config["cell"] if "cell" in trial.config else f"{trial.config['group']}-{trial.trial_id}"


__all__ = ["environ", "trial_name", "trial_dirname"]
