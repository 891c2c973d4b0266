"""What a trial does about its device, pinned where a CPU can show it: cross-device resume, float32
precision and determinism switches, the per-trial GPU memory cap, one compilation per network, and the
device facts every result carries; plus the GPU check's smoke mode."""
import io
import json
import os
import sys

import pytest
import torch

from memomentum.config import TrialConfig
from memomentum.errors import ConfigError
from memomentum.engine import resolve_device
from memomentum.methods import make_trial
from memomentum.trial import configure_device
from tests.conftest import DEVICE_CONFIG, TEST_DEVICE
from tests import procs

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


def foreign_generator_state():
    """(state, device kind) of a generator of the other kind of device than the tests run on: a CUDA state (16
    bytes) where they run on a CPU, a CPU state (5,056 bytes) where they run on a GPU."""
    if TEST_DEVICE == "cpu":
        return torch.zeros(16, dtype=torch.uint8), "cuda"
    return torch.Generator().get_state(), "cpu"


@pytest.mark.parametrize("foreign", ["labelled", "old checkpoint"])
def test_a_checkpoint_from_another_device_continues_with_a_reseeded_stream(foreign):
    """A CUDA checkpoint resumed on a CPU, or the other way round: the trial continues from the same epoch with
    the same models; only the random stream restarts, from a seed of (trial seed, epoch), and the result says
    where. Never a dead cell."""
    cfg = TrialConfig.from_dict(SMALL)
    before, state = _first_checkpoint(cfg)
    state = dict(state)
    state["generator"], kind = foreign_generator_state()
    if foreign == "labelled":
        state["generator_device"] = kind
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


def test_a_gpu_always_comes_with_its_index_so_the_memory_cap_takes_it(monkeypatch):
    """`cuda` without an index made every packed trial die at start: torch's set_per_process_memory_fraction
    wants an indexed device. The stubs below call torch's own index check, so they are as strict as torch."""
    from torch.cuda._utils import _get_device_index

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert resolve_device("auto") == torch.device("cuda", 1) == resolve_device("cuda")
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(ConfigError, match="sees 2 GPU"):
        resolve_device("cuda:2")
    with pytest.raises(ValueError, match="specified index"):
        _get_device_index(torch.device("cuda"))  # what the old unindexed device met inside torch
    calls = []
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f, d: calls.append((f, _get_device_index(d))))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda d: calls.append(_get_device_index(d)))
    for name in ("auto", "cuda"):
        configure_device(TrialConfig.from_dict({**SMALL, "device": "cpu", "gpu_memory_fraction": 0.25}),
                         resolve_device(name))
    assert calls == [(0.25, 1), 1, (0.25, 1), 1]


def test_resumed_optimizer_states_stay_where_the_optimizer_wants_them(monkeypatch):
    """Loading a checkpoint moves the loop state to the trial's device but leaves the optimizer states alone
    (Optimizer.load_state_dict places them; Adam's step counters must stay on the CPU, or every step syncs with
    the host). Shown with the meta device standing in for a GPU."""
    for method in ("memomentum", "coteaching"):
        values = {k: v for k, v in SMALL.items() if method == "memomentum" or k not in ("max_outer", "max_inner")}
        cfg = TrialConfig.from_dict({**values, "method": method})
        trial = make_trial(cfg)
        next(r for r in trial.records() if r.get("resumable") and r["kind"] == "epoch")
        state = trial.state_dict()
        fresh = make_trial(cfg)
        fresh.feed.state_device = torch.device("meta")
        fresh.load_state_dict(state)
        assert fresh.s.confident_idx.device.type == "meta"
        assert all(t.device.type == "meta" for t in fresh.s.model.values())
        optimizer_tensors = [v for st in fresh.s.optimizer["state"].values() for v in st.values()
                             if isinstance(v, torch.Tensor)]
        assert optimizer_tensors and all(t.device.type == "cpu" for t in optimizer_tensors)


def test_a_cell_without_a_gpu_never_takes_one():
    """Under Ray, a cell given no GPU with device auto runs on the CPU (auto would pick GPU 0 of the node,
    uncounted); a fractional GPU caps the trial's memory; neither changes the trial's key."""
    from sweeps.trainable import cell_config

    cfg = TrialConfig.from_dict({**SMALL, "device": "auto"})
    plain = cell_config({"trial": cfg.to_dict(), "cpu": 2, "gpu": 0})
    assert plain.device == "cpu" and plain.trial_key() == cfg.trial_key()
    packed = cell_config({"trial": cfg.to_dict(), "cpu": 1, "gpu": 0.25})
    assert packed.device == "auto" and packed.gpu_memory_fraction == 0.25 and packed.trial_key() == cfg.trial_key()
    whole = cell_config({"trial": {**cfg.to_dict(), "device": "cuda"}, "cpu": 1, "gpu": 1})
    assert whole.device == "cuda" and whole.gpu_memory_fraction == 0.0


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


def test_gpu_check_cpu_form_returns_every_file_a_gpu_run_would(tmp_path):
    """`gpu_check.py --device cpu --quick`: the same parts, files and summary as on a GPU, in seconds."""
    out = tmp_path / "out"
    proc = procs.run([sys.executable, os.path.join(ROOT, "benchmarks", "gpu_check.py"), "--device", "cpu",
                      "--quick", "--budget", "240", "--out-dir", str(out)], timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary == json.loads(proc.stdout.strip().splitlines()[-1]) and summary["finished_within_budget"]
    for name in ("env.json", "epochs.jsonl", "packing.json", "cells.json", "junit.xml", "logs/suite.log"):
        assert (out / name).stat().st_size > 0, name
    parts = summary["parts"]
    assert set(parts) == {"env", "epochs", "packing", "suite", "cells"}
    assert parts["suite"]["exit_code"] == 0 and "passed" in parts["suite"]["summary"]
    run = parts["epochs"]["runs"][0]
    assert run["model"] == "lenet" and run["train_s"] > 0 and run["graphs_compiled_in_timed_passes"] == 0
    curve = parts["packing"]["curve"]
    assert [p["k"] for p in curve] == [1, 2] and all(p["exit_codes"] == [0] * p["k"] for p in curve)
    assert all(p["images_per_s"] > p["images_per_s_wall"] > 0 for p in curve)  # training seconds, not start-up
    assert {c["status"] for c in parts["cells"]["cells"]} == {"finished"} and len(parts["cells"]["cells"]) == 2
    collect = procs.run([sys.executable, os.path.join(ROOT, "run_sweep.py"), "--collect", str(out / "cells")],
                        timeout=300, cwd=ROOT)
    assert collect.returncode == 0 and "2 trials" in collect.stdout, collect.stderr[-2000:]
