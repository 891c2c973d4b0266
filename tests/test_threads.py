"""CPU threads per trial (memomentum/threads.py): the rule, the sweep's share, the CLI's setting, the record."""
import json
import os
import subprocess
import sys

import pytest
import torch

from memomentum import threads
from memomentum.config import TrialConfig
from memomentum.errors import ConfigError
from memomentum.models import DEFAULT_THREADS, MODELS
from memomentum.stream import auto_workers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def eight_cpus(monkeypatch):
    monkeypatch.setattr(threads, "available_cpus", lambda: 8)


def test_small_networks_take_one_thread_and_the_others_the_cpus_left_by_workers(eight_cpus):
    assert set(DEFAULT_THREADS) <= set(MODELS)
    for model in MODELS:
        cfg = TrialConfig.from_dict({"dataset": "cifar10", "model": model})
        assert threads.trial_threads(cfg) == DEFAULT_THREADS.get(model, 8)
    assert threads.trial_threads(TrialConfig.from_dict({"dataset": "digits"})) == 1  # its official digitsnet
    # streamed data: the DataLoader workers count against the same CPUs
    assert threads.trial_threads(TrialConfig.from_dict({"dataset": "clothing1m", "num_workers": 2})) == 6
    assert threads.trial_threads(TrialConfig.from_dict({"dataset": "clothing1m"})) == max(1, 8 - auto_workers(8))
    assert threads.trial_threads(TrialConfig.from_dict({"dataset": "digits", "threads": 3})) == 3


def test_a_sweep_trial_takes_its_cpu_resource_less_its_workers():
    from sweeps.trainable import cell_config

    digits = TrialConfig.from_dict({"dataset": "digits"})
    for cpu, expected in ((1, 1), (0.5, 1), (4, 4)):
        cfg = cell_config({"trial": digits.to_dict(), "cpu": cpu, "gpu": 0})
        assert cfg.threads == expected
        assert cfg.trial_key() == digits.trial_key()  # where a trial runs never changes its key
    clothing = TrialConfig.from_dict({"dataset": "clothing1m", "num_workers": 3})
    assert cell_config({"trial": clothing.to_dict(), "cpu": 4, "gpu": 1}).threads == 1
    assert cell_config({"trial": {**digits.to_dict(), "threads": 2}, "cpu": 1, "gpu": 0}).threads == 2


def test_threads_are_checked_and_never_part_of_the_key():
    base = TrialConfig.from_dict({"dataset": "digits"})
    assert TrialConfig.from_dict({"dataset": "digits", "threads": 7}).config_hash() == base.config_hash()
    for bad in (-1, 5000):
        with pytest.raises(ConfigError, match="threads"):
            TrialConfig.from_dict({"dataset": "digits", "threads": bad})


def test_use_threads_sets_torchs_pool_and_says_what_runs():
    before = torch.get_num_threads()
    try:
        assert threads.use_threads(1) == 1 == torch.get_num_threads()
        assert threads.use_threads(2) == 2 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def _cli(*sets):
    cmd = [sys.executable, "-m", "memomentum", "--dataset", "digits", "--method", "ce", "--device", "cpu",
           "--log-every", "0", "--set", "epochs_per_stage=1", *[a for s in sets for a in ("--set", s)]]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_cli_honours_the_threads_setting_and_records_it():
    assert _cli("threads=2")["threads"] == 2
    assert _cli()["threads"] == 1  # digits' network is small: one thread by default, however many cores
