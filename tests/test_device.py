"""What a trial does about its device, pinned where a CPU can show it: cross-device resume, float32
precision and determinism switches, the per-trial GPU memory cap, one compilation per network, and the
device facts every result carries; plus the GPU check's smoke mode."""
import io
import json
import os
import subprocess
import sys

import pytest
import torch

from memomentum.config import TrialConfig
from memomentum.errors import ConfigError
from memomentum.methods import make_trial
from memomentum.trial import configure_device
from tests.conftest import DEVICE_CONFIG

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = {"dataset": "digits", "noise_type": "symmetric", "noise_rate": 0.3, "seed": 5, **DEVICE_CONFIG,
         "epochs_per_stage": 3, "max_outer": 2, "max_inner": 2, "checkpoint_every": 1}


def _first_checkpoint(cfg, skip: int = 2):
    trial = make_trial(cfg)
    records = []
    for record in trial.records():
        records.append(record)
        if record.get("resumable") and (skip := skip - 1) == 0:
            buffer = io.BytesIO()
            torch.save(trial.state_dict(), buffer)
            return records, torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    raise AssertionError("no checkpoint")


@pytest.mark.parametrize("foreign", ["labelled", "old checkpoint"])
def test_a_checkpoint_from_another_device_continues_with_a_reseeded_stream(foreign):
    """A CUDA checkpoint (generator state of 16 bytes) resumed on a CPU, or the other way round: the
    trial continues from the same epoch with the same models; only the random stream restarts, from a
    seed of (trial seed, epoch), and the result says where. Never a dead cell."""
    cfg = TrialConfig.from_dict(SMALL)
    before, state = _first_checkpoint(cfg)
    state = dict(state)
    state["generator"] = torch.zeros(16, dtype=torch.uint8)  # what a CUDA generator's state looks like
    if foreign == "labelled":
        state["generator_device"] = "cuda"
    else:
        state.pop("generator_device")
    step = state["step"]
    trial = make_trial(cfg, state=state)
    assert trial.s.step == step and trial.s.reseeded_at == [step]
    records = list(trial.records())
    epochs = [r["step"] for r in records if r["kind"] == "epoch"]
    assert epochs[0] == step + 1 and records[-1]["generator_reseeded_at"] == [step]
    again = make_trial(cfg, state=dict(state)).records()
    assert [r.get("train_loss") for r in again if r["kind"] == "epoch"][:3] == \
        [r.get("train_loss") for r in records if r["kind"] == "epoch"][:3]  # the re-seeding is reproducible


def test_float32_precision_is_strict_unless_tf32_is_asked_for():
    make_trial(TrialConfig.from_dict({**SMALL, "matmul_precision": "tf32"}))
    assert torch.backends.cudnn.conv.fp32_precision == "tf32" and torch.backends.cuda.matmul.fp32_precision == "tf32"
    trial = make_trial(TrialConfig.from_dict(SMALL))
    assert torch.backends.cudnn.conv.fp32_precision == "ieee" and torch.backends.cuda.matmul.fp32_precision == "ieee"
    assert trial.result()["matmul_precision"] == "fp32"
    with pytest.raises(ConfigError, match="unknown matmul_precision 'tf16'"):
        TrialConfig.from_dict({**SMALL, "matmul_precision": "tf16"})
    from sweeps import tables

    tf32 = TrialConfig.from_dict({**SMALL, "matmul_precision": "tf32"})
    assert tf32.differences()["matmul_precision"] == "tf32"
    row = {"precision_mode": "fp32", "matmul_precision": "tf32", "config_json": json.dumps(tf32.to_dict())}
    assert tables.variant(row).startswith("tf32")  # never compared with the published (true fp32) numbers


def test_deterministic_sets_up_cublas_and_cudnn(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    calls = []
    monkeypatch.setattr(torch, "use_deterministic_algorithms", lambda on, warn_only=False: calls.append((on, warn_only)))
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    configure_device(TrialConfig.from_dict({**SMALL, "deterministic": True}), torch.device("cpu"))
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8" and torch.backends.cudnn.deterministic
    assert calls == [(True, True)]


def test_a_fractional_gpu_caps_the_trials_memory(monkeypatch):
    """configure_device on a (pretend) CUDA device: the cap is set to the fraction, peaks are reset."""
    calls = []
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f, d: calls.append(("cap", f, d)))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda d: calls.append(("reset", d)))
    cuda = torch.device("cuda", 0)
    configure_device(TrialConfig.from_dict({**SMALL, "device": "cpu", "gpu_memory_fraction": 0.25}), cuda)
    assert calls == [("cap", 0.25, cuda), ("reset", cuda)]
    calls.clear()
    configure_device(TrialConfig.from_dict({**SMALL, "device": "cpu"}), cuda)  # 0: no cap
    assert calls == [("reset", cuda)]
    with pytest.raises(ConfigError, match="gpu_memory_fraction=1.5 must lie in"):
        TrialConfig.from_dict({**SMALL, "gpu_memory_fraction": 1.5})
    cfg = TrialConfig.from_dict({**SMALL, "gpu_memory_fraction": 0.25})
    assert cfg.config_hash() == TrialConfig.from_dict(SMALL).config_hash()  # where it runs, not what it computes


def test_every_result_names_its_device_and_peak_memory():
    result = list(make_trial(TrialConfig.from_dict({**SMALL, "max_outer": 1})).records())[-1]
    assert result["device_name"] and isinstance(result["device_name"], str)
    if result["device"] == "cpu":
        assert result["peak_gpu_memory_mb"] is None
    else:
        assert result["peak_gpu_memory_mb"] > 0


@pytest.mark.parametrize("method, networks", [("memomentum", 1), ("coteaching", 2)])
def test_compile_happens_once_per_network_not_per_round(method, networks, monkeypatch):
    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: compiled.append(self))
    values = {k: v for k, v in SMALL.items() if method == "memomentum" or k not in ("max_outer", "max_inner")}
    cfg = TrialConfig.from_dict({**values, "method": method, "compile": True, "checkpoint_every": 0})
    records = list(make_trial(cfg).records())
    rounds = [r for r in records if r["kind"] == "round"]
    assert len(rounds) >= (3 if method == "memomentum" else 1)
    assert len(compiled) == networks and len({id(m) for m in compiled}) == networks


def test_gpu_check_smoke_mode_runs_here(tmp_path):
    out = tmp_path / "summary.json"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "gpu_check.py"), "--device", "cpu",
                           "--quick", "--out", str(out)], capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    summary = json.loads(out.read_text())
    assert summary == json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["suite"]["exit_code"] == 0 and "passed" in summary["suite"]["summary"]
    assert [e["model"] for e in summary["epochs"]] == ["lenet"] and summary["epochs"][0]["epoch_s"] > 0
    assert [p["k"] for p in summary["packing"]] == [1, 2]
    assert all(p["exit_codes"] == [0] * p["k"] and p["images_per_s"] > 0 for p in summary["packing"])
