"""Sweeps survive: a trial process or the driver is killed with SIGKILL mid-run, and the result is
what an uninterrupted run gives, with no trial lost, duplicated or re-run after it finished."""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pyarrow.parquet as pq
import pytest
import torch
import yaml

from memomentum.methods import make_trial
from memomentum.config import TrialConfig
from sweeps.grid import parse_grid
from tests import procs

pytest.importorskip("ray", reason="Ray is not installed here (e.g. a GPU machine used for the CUDA suite)")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = {"epochs_per_stage": 6, "max_outer": 2, "max_inner": 3, "device": "cpu", "checkpoint_every": 2}


def reference_records(cfg_values: dict) -> list:
    """The uninterrupted trial, computed in this process with the single thread a 1-CPU trial uses."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return [r for r in make_trial(TrialConfig.from_dict(cfg_values)).records() if r["kind"] != "result"]
    finally:
        torch.set_num_threads(threads)


def comparable(records):
    return [{k: v for k, v in r.items() if k not in ("seconds", "resumable")} for r in records]


def read_doc(path):
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def kill_when(path, condition, sig_target, done: threading.Event):
    """Poll a trial.json until `condition(doc)` holds, then SIGKILL what `sig_target(doc)` names; give up once `done`
    is set (the sweep ended). No clock: on a busy machine reaching the kill point can take many minutes."""
    while not done.is_set():
        doc = read_doc(path)
        if doc and condition(doc):
            sig_target(doc)
            return doc
        time.sleep(0.02)
    return None


def test_killed_trial_process_is_retried_from_its_checkpoint(tmp_path):
    import ray

    from sweeps import runner

    raw = {"name": "kill", "datasets": ["digits"], "noise": [{"type": "pairflip", "rates": [0.3]}], "seeds": [3],
           "methods": ["memomentum"], "config": CONFIG}
    grid = parse_grid(raw, storage=str(tmp_path))
    (cell,) = grid.cells
    doc_path = tmp_path / "kill" / "trials" / cell.key / "trial.json"
    killed = {}
    ended = threading.Event()

    def killer():
        # mid-round of stage B in outer 1: after a checkpoint, before the round ends
        killed["doc"] = kill_when(doc_path, lambda d: d["status"] == "running" and any(
            r["kind"] == "epoch" and r["inner"] == 1 and r["epoch"] == 2 for r in d["records"]),
            lambda d: os.kill(d["pid"], signal.SIGKILL), ended)

    ray.init(address="local", num_cpus=2, include_dashboard=False, **runner.ray_init_kwargs(local=True))
    try:
        watcher = threading.Thread(target=killer, daemon=True)
        watcher.start()
        assert runner.run(grid, out=lambda line: None) == 0
    finally:
        ended.set()
        watcher.join(timeout=5)
        ray.shutdown()
    assert killed.get("doc"), "the trial finished without ever being seen at the kill point"
    doc = read_doc(doc_path)
    assert doc["status"] == "finished" and doc["resumed_from"] == "tune retry" and doc["pid"] != killed["doc"]["pid"]
    expected = comparable(reference_records({**cell.config.to_dict()}))
    assert comparable(doc["records"]) == expected
    epochs = pq.read_table(tmp_path / "kill" / "results" / "epochs.parquet").column("step").to_pylist()
    assert sorted(epochs) == list(range(1, len(epochs) + 1))
    assert pq.read_table(tmp_path / "kill" / "results" / "trials.parquet").num_rows == 1


def test_killed_driver_resumes_only_unfinished_trials_and_grid_extends(tmp_path):
    raw = {"name": "drv", "datasets": ["digits"], "noise": [{"type": "symmetric", "rates": [0.3]}],
           "seeds": [1, 2, 3], "methods": ["memomentum"], "config": CONFIG}
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(yaml.safe_dump(raw))
    storage = tmp_path / "store"
    cells = {c.config.seed: c for c in parse_grid(raw, storage=str(storage)).cells}
    trials = storage / "drv" / "trials"
    cmd = [sys.executable, os.path.join(ROOT, "run_sweep.py"), str(grid_file), "--storage", str(storage),
           "--max-concurrent", "1"]
    driver = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        # one trial finished, the next one mid-way (a checkpoint written inside stage B)
        def state(doc):
            done = [p for p in trials.glob("*/trial.json")
                    if p.parent.name != doc["key"] and (read_doc(p) or {}).get("status") == "finished"]
            return done and doc["status"] == "running" and any(
                r["kind"] == "epoch" and r["inner"] >= 1 for r in doc["records"])

        def running_doc_path():
            for p in trials.glob("*/trial.json"):
                doc = read_doc(p)
                if doc and doc["status"] == "running":
                    return p
            return trials / "none"

        victim = None
        while victim is None and driver.poll() is None:  # no clock: a busy machine may take many minutes
            p = running_doc_path()
            doc = read_doc(p)
            if doc and state(doc) and procs.kill_group_while(
                    driver, doc["pid"], lambda: bool((again := read_doc(p)) and state(again))):
                victim = read_doc(p)
            time.sleep(0.05)
        assert victim is not None, "never reached a state with one finished and one running trial"
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    finished_before = {p.parent.name: p.stat().st_mtime_ns for p in trials.glob("*/trial.json")
                       if read_doc(p)["status"] == "finished"}
    assert finished_before and victim["key"] not in finished_before

    rerun = procs.run(cmd, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"{len(finished_before)} already finished" in rerun.stdout
    for key, stamp in finished_before.items():  # finished trials were not run again
        assert (trials / key / "trial.json").stat().st_mtime_ns == stamp
    table = pq.read_table(storage / "drv" / "results" / "trials.parquet").to_pylist()
    assert sorted(r["key"] for r in table) == sorted(c.key for c in cells.values())
    assert {r["status"] for r in table} == {"finished"}
    resumed = read_doc(trials / victim["key"] / "trial.json")
    assert resumed["resumed_from"] and "checkpoint_" in resumed["resumed_from"]
    seed = resumed["config"]["seed"]
    assert comparable(resumed["records"]) == comparable(reference_records(cells[seed].config.to_dict()))

    # add a seed: only the new cell runs
    stamps = {p.parent.name: p.stat().st_mtime_ns for p in trials.glob("*/trial.json")}
    grid_file.write_text(yaml.safe_dump({**raw, "seeds": [1, 2, 3, 4]}))
    extended = procs.run(cmd, timeout=600)
    assert extended.returncode == 0, extended.stderr[-3000:]
    assert "3 already finished, 1 to run" in extended.stdout
    assert {p.parent.name: p.stat().st_mtime_ns for p in trials.glob("*/trial.json") if p.parent.name in stamps} == stamps
    assert pq.read_table(storage / "drv" / "results" / "trials.parquet").num_rows == 4


def test_crash_while_collecting_keeps_the_previous_tables(tmp_path, monkeypatch):
    from sweeps import results
    from sweeps.storage import Storage

    store = Storage(str(tmp_path))
    doc = {"key": "k-1", "name": "k", "status": "finished", "records": [], "result": {"test_acc": 50.0},
           "config": TrialConfig.from_dict({"dataset": "digits"}).to_dict()}
    store.write_atomic(json.dumps(doc).encode(), "sw", "trials", "k-1", "trial.json")
    results.Collector(store, "sw").write()
    before = {p.name: p.read_bytes() for p in (tmp_path / "sw" / "results").iterdir()}

    doc2 = {**doc, "key": "k-2", "result": {"test_acc": 70.0}}
    store.write_atomic(json.dumps(doc2).encode(), "sw", "trials", "k-2", "trial.json")
    calls = {"n": 0}
    real = results.pq.write_table

    def flaky(table, where, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        return real(table, where, *a, **k)

    monkeypatch.setattr(results.pq, "write_table", flaky)
    with pytest.raises(OSError):
        results.Collector(store, "sw").write()
    after = {p.name: p.read_bytes() for p in (tmp_path / "sw" / "results").iterdir()}
    assert after == before  # no table replaced, no temporary file left behind


def test_a_second_driver_on_the_same_sweep_refuses(tmp_path):
    """Two terminals run the same command a few seconds apart: the second refuses in one line, the first
    finishes every cell once (no duplicated rows, no trial turned back to running)."""
    raw = {"name": "twice", "datasets": ["digits"], "noise": [{"type": "symmetric", "rates": [0.3]}],
           "seeds": [1, 2], "methods": ["ce"], "config": {**CONFIG, "epochs_per_stage": 20}}
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(yaml.safe_dump(raw))
    storage = tmp_path / "store"
    cmd = [sys.executable, os.path.join(ROOT, "run_sweep.py"), str(grid_file), "--storage", str(storage)]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.time() + 120
        while not (storage / "twice" / "driver.lock").exists() and time.time() < deadline:
            time.sleep(0.1)
        assert (storage / "twice" / "driver.lock").exists(), "the first driver never took the lock"
        second = procs.run(cmd, timeout=120)
        out, err = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert second.returncode == 2, second.stderr[-2000:]
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and "is being run by another driver (pid" in lines[0], second.stderr
    assert first.returncode == 0, err[-2000:]
    table = pq.read_table(storage / "twice" / "results" / "trials.parquet").to_pylist()
    assert sorted(t["seed"] for t in table) == [1, 2] and {t["status"] for t in table} == {"finished"}
    assert not (storage / "twice" / "driver.lock").exists()  # released at the end
