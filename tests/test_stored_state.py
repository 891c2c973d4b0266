"""A sweep's stored state damaged file by file: nothing is lost, nothing blocks, every skipped file is
named in one line. (End-to-end reruns of damaged sweeps on Ray: test_sweep.py and test_faults.py.)"""
import json
import os
import time

import pytest

from memomentum.config import TrialConfig
from run_sweep import main
from sweeps import trainable
from sweeps.lock import DriverLock, LockError
from sweeps.results import Collector
from sweeps.storage import Storage


def doc_for(seed: int, status: str = "finished", **extra) -> dict:
    cfg = TrialConfig.from_dict({"dataset": "digits", "seed": seed, "method": "ce"})
    records = [{"kind": "epoch", "outer": 1, "inner": 0, "epoch": 1, "step": 1, "val_score": 50.0},
               {"kind": "round", "outer": 1, "inner": 0, "stage": "ce", "epochs": 1, "step": 1, "n_confident": 9}]
    return {"key": cfg.trial_key(), "name": cfg.trial_name(), "config": cfg.to_dict(), "status": status,
            "records": records, "result": {"test_acc": 60.0 + seed, "epochs": 1}, **extra}


@pytest.fixture
def sweep(tmp_path):
    store = Storage(str(tmp_path))
    for seed in (1, 2):
        doc = doc_for(seed)
        store.write_atomic(json.dumps(doc).encode(), "sw", "trials", doc["key"], "trial.json")
    return store


def put(store, key, name, data: bytes):
    store.write_atomic(data, "sw", "trials", key, name)


@pytest.mark.parametrize("content, reason", [
    (lambda good: good[: len(good) // 2], "is not valid JSON (cut short?)"),
    (lambda good: b"", "is not valid JSON"),
    (lambda good: b"{}", "is not a trial document (key None does not match its folder)"),
    (lambda good: b"[]", "is not a trial document (a list, not a mapping)"),
    (lambda good: b"null", "is not a trial document (a NoneType, not a mapping)"),
    (lambda good: json.dumps({k: v for k, v in json.loads(good).items() if k != "config"}).encode(),
     "no config with a data set"),
    (lambda good: json.dumps({**json.loads(good), "result": None}).encode(), "finished without a result"),
    (lambda good: json.dumps({**json.loads(good), "records": [{"kind": "epoch", "step": "x"}]}).encode(),
     "holds values the tables cannot take"),
    (lambda good: json.dumps({**json.loads(good), "config": {**json.loads(good)["config"], "seed": 2 ** 63}}).encode(),
     "holds values the tables cannot take"),
])
def test_a_damaged_trial_file_is_named_and_skipped(sweep, tmp_path, capsys, content, reason):
    key = doc_for(2)["key"]
    good = sweep.read("sw", "trials", key, "trial.json")
    put(sweep, key, "trial.json", content(good))
    collector = Collector(sweep, "sw")
    tables = collector.write()
    assert tables["trials"].column("seed").to_pylist() == [1]  # the intact trial is still there
    assert len(collector.skipped) == 1 and key in collector.skipped[0] and reason in collector.skipped[0]
    assert collector.finished_keys() == {doc_for(1)["key"]}  # the damaged cell is not "finished": it runs again
    assert main(["--collect", str(tmp_path / "sw")]) == 0
    err = capsys.readouterr().err
    assert err.count("warning: skipped") == 1 and reason in err and "Traceback" not in err


def test_error_files_reach_the_tables_even_without_a_trial_file(sweep):
    cfg = TrialConfig.from_dict({"dataset": "digits", "seed": 3, "method": "ce"})
    cell = {"key": cfg.trial_key(), "name": cfg.trial_name(), "trial": cfg.to_dict(), "cpu": 1, "gpu": 0}
    put(sweep, cfg.trial_key(), "error.json", json.dumps({"error": "RuntimeError: CUDA out of memory",
                                                         "cell": cell}).encode())
    running = doc_for(2, status="running")
    put(sweep, running["key"], "trial.json", json.dumps(running).encode())
    put(sweep, running["key"], "error.json", b"{not json")  # damaged: still marks the trial as failed
    put(sweep, "orphan", "error.json", b'{"error": "x"}')  # no cell: named, not tabulated
    collector = Collector(sweep, "sw")
    rows = {r["seed"]: r for r in collector.tables()["trials"].to_pylist()}
    assert rows[3]["status"] == "error" and rows[3]["error"] == "RuntimeError: CUDA out of memory"
    assert rows[3]["name"] == cfg.trial_name() and rows[3]["epochs"] == 0
    assert rows[2]["status"] == "error" and "unreadable" in rows[2]["error"]
    assert rows[1]["status"] == "finished"
    assert len(collector.skipped) == 1 and "orphan" in collector.skipped[0]


def test_checkpoint_records_restore_a_lost_trial_file():
    records = [{"kind": "epoch", "step": s} for s in (1, 2, 3)] + [{"kind": "round", "step": 3}] + \
              [{"kind": "epoch", "step": 4}]
    assert trainable._records_up_to(json.dumps(records).encode(), 3) == records[:4]
    assert trainable._records_up_to(json.dumps({"records": records}).encode(), 4) == records
    assert trainable._records_up_to(json.dumps(records[1:]).encode(), 3) is None  # epoch 1 missing
    assert trainable._records_up_to(json.dumps(records).encode()[:40], 3) is None  # cut short
    assert trainable._records_up_to(None, 3) is None
    assert trainable._records_up_to(b"[]", 0) == []


def test_a_checkpoint_without_the_records_of_its_epochs_is_not_offered(tmp_path):
    import io

    import torch

    store = Storage(str(tmp_path))
    buffer = io.BytesIO()
    torch.save({"step": 2, "x": torch.zeros(1)}, buffer)
    files = {"state.pt": buffer.getvalue()}
    read = files.get
    assert trainable._load_checkpoint(read, store, "sw", "k") is None  # neither records.json nor trial.json
    files["records.json"] = json.dumps([{"kind": "epoch", "step": 1}, {"kind": "epoch", "step": 2}]).encode()
    state, records = trainable._load_checkpoint(read, store, "sw", "k")
    assert state["step"] == 2 and len(records) == 2
    files["records.json"] = b"[{"
    put(store, "k", "trial.json", json.dumps({"records": [{"kind": "epoch", "step": s} for s in (1, 2, 3)]}).encode())
    state, records = trainable._load_checkpoint(read, store, "sw", "k")  # falls back to trial.json
    assert [r["step"] for r in records] == [1, 2]
    files["state.pt"] = files["state.pt"][:30]
    assert trainable._load_checkpoint(read, store, "sw", "k") is None  # a state cut short


def test_one_driver_per_sweep(tmp_path):
    store = Storage(str(tmp_path))
    first = DriverLock(store, "sw", heartbeat=0.05).acquire()
    with pytest.raises(LockError, match=r"sweep 'sw' in .* is being run by another driver \(pid \d+ on "):
        DriverLock(store, "sw").acquire()
    beat = first.holder()["heartbeat"]
    time.sleep(0.3)
    assert first.holder()["heartbeat"] > beat  # the holder keeps its lock fresh
    first.release()
    assert first.holder() is None
    with DriverLock(store, "sw") as second:  # free again
        assert second.holder()["token"] == second.me["token"]
    assert not (tmp_path / "sw" / "driver.lock").exists()


def test_a_dead_drivers_lock_does_not_block(tmp_path):
    store = Storage(str(tmp_path))
    lock = DriverLock(store, "sw")
    dead = {"host": lock.me["host"], "pid": 2 ** 22 + 12345, "token": "t", "heartbeat": time.time()}
    store.write_atomic(json.dumps(dead).encode(), "sw", "driver.lock")
    lock.acquire().release()  # same host, no such process: taken over at once
    elsewhere = {"host": "other-host", "pid": 1, "token": "t", "heartbeat": time.time() - 3600}
    store.write_atomic(json.dumps(elsewhere).encode(), "sw", "driver.lock")
    lock2 = DriverLock(store, "sw")
    lock2.acquire().release()  # another host, silent for an hour: stale
    fresh = {**elsewhere, "heartbeat": time.time()}
    store.write_atomic(json.dumps(fresh).encode(), "sw", "driver.lock")
    with pytest.raises(LockError, match="pid 1 on other-host, last seen 0 s ago"):
        DriverLock(store, "sw").acquire()
    store.write_atomic(b"garbage", "sw", "driver.lock")  # unreadable: held until it is as old as a heartbeat
    with pytest.raises(LockError):
        DriverLock(store, "sw").acquire()
    old = time.time() - 3600
    os.utime(tmp_path / "sw" / "driver.lock", (old, old))
    DriverLock(store, "sw").acquire().release()


@pytest.mark.parametrize("recorded, kind", [(99, "a newer version (99)"), (0, "an unknown version (0)")])
def test_a_finished_trial_of_another_method_version_is_left_out_with_its_reason_never_overwritten(
        sweep, tmp_path, recorded, kind):
    """A sweep folder from a newer release (or a file whose method_version no method has): the cell is neither
    counted as finished nor run again over it; the run says why it is left out and exits 1."""
    from sweeps import runner
    from sweeps.grid import parse_grid

    key = doc_for(2)["key"]
    put(sweep, key, "trial.json", json.dumps(doc_for(2, method_version=recorded)).encode())
    before = sweep.read("sw", "trials", key, "trial.json")
    grid = parse_grid({"name": "sw", "datasets": ["digits"], "noise": [{"type": "symmetric", "rates": [0.2]}],
                       "seeds": [1, 2], "methods": ["ce"]}, storage=str(tmp_path))
    assert {c.key for c in grid.cells} == {doc_for(1)["key"], key}
    lines = []
    assert runner.run(grid, out=lines.append) == 1
    assert lines[0].startswith("sweep sw: 2 cells, 1 already finished, 0 to run, 1 left out")
    said = [line for line in lines if "is left out" in line]
    assert said and f"made by {kind} of ce, not this code's version" in said[0] and "remove the cell" in said[0]
    assert any("1 cell(s) were left out of the tables" in line for line in lines)
    assert sweep.read("sw", "trials", key, "trial.json") == before
