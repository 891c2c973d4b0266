"""Shared storage and hostile files: permissions that follow the umask, locks with impossible contents, folders
that cannot be written, full disks and unknown storage schemes. Every case ends in one line (or the tables),
never a traceback, and loses nothing finished."""
import errno
import json
import os
import stat
import sys
import time

import pytest
import yaml

from memomentum.atomic import atomic_write
from sweeps import storage as storage_mod
from sweeps.lock import DriverLock, LockError
from sweeps.results import Collector
from sweeps.storage import Storage, StorageError
from tests import procs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--dataset", "digits", "--noise-type", "symmetric", "--noise-rate", "0.2", "--device", "cpu", "--method", "ce",
        "--set", "epochs_per_stage=1", "--log-every", "0"]
GRID = {"name": "small", "datasets": ["digits"], "noise": [{"type": "symmetric", "rates": [0.2]}], "seeds": [1, 2],
        "methods": ["ce"], "config": {"epochs_per_stage": 1, "device": "cpu"}}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A storage holding sweep `small`, both of its cells finished (run as plain processes: no Ray)."""
    store = tmp_path_factory.mktemp("store")
    for seed in (1, 2):
        proc = procs.run([sys.executable, "-m", "memomentum", *TINY, "--seed", str(seed), "--sweep-dir",
                          str(store / "small")], timeout=300, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-2000:]
    grid = tmp_path_factory.mktemp("grid") / "small.yaml"
    grid.write_text(yaml.safe_dump(GRID))
    return store, grid


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_get_the_permissions_the_umask_gives(tmp_path, mask, expected, finished):
    store, _ = finished
    old = os.umask(mask)
    try:
        atomic_write(str(tmp_path / "f.json"), b"{}")
        Collector(Storage(str(store)), "small").write()
        Storage(str(tmp_path)).write_atomic(b"name: other\n", "other", "grid.yaml")  # the runner's grid copy
        proc = procs.run([sys.executable, "-m", "memomentum", *TINY, "--seed", "3", "--sweep-dir",
                          str(tmp_path / "cli")], timeout=300, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-2000:]
    finally:
        os.umask(old)
    trial_files = list((tmp_path / "cli" / "trials").glob("*/trial.json"))
    for path in [tmp_path / "f.json", tmp_path / "other" / "grid.yaml", *trial_files,
                 *(store / "small" / "results").iterdir()]:
        assert mode(path) == expected, (path, oct(mode(path)))


def lock_cases():
    """(name, the lock's content given its heartbeat) for locks a clock that jumped, a crashed machine or a
    copied folder leave behind."""
    here = os.uname().nodename
    return [
        ("heartbeat far in the future", lambda beat: {"host": "elsewhere", "pid": 7, "heartbeat": time.time() + 1e6}),
        ("heartbeat not finite", lambda beat: '{"host": "elsewhere", "pid": 7, "heartbeat": 1e999}'),
        ("heartbeat not a number", lambda beat: {"host": "elsewhere", "pid": 7, "heartbeat": "soon"}),
        ("heartbeat a 400-digit integer", lambda beat: '{"host": "elsewhere", "pid": 7, "heartbeat": ' + "9" * 400 + "}"),
        ("pid too large for the platform", lambda beat: {"host": here, "pid": 2 ** 70, "token": "t", "heartbeat": beat}),
        ("pid a boolean, host a list", lambda beat: {"host": ["x"], "pid": True, "token": 5, "heartbeat": beat}),
        ("not JSON", lambda beat: "{half a lock"),
        ("JSON but a list", lambda beat: "[1, 2, 3]"),
        ("empty", lambda beat: ""),
    ]


@pytest.mark.parametrize("name, content", lock_cases(), ids=[c[0] for c in lock_cases()])
def test_a_lock_with_impossible_contents_is_verified_by_its_age_never_a_crash_or_a_block(tmp_path, name, content):
    """Fresh (the file just written, a heartbeat now): held, refused in one line that says which file to delete.
    An hour old on this host's clock (the file's time where the heartbeat cannot be trusted): stale, taken over."""
    s = Storage(str(tmp_path))
    path = tmp_path / "sw" / "driver.lock"
    path.parent.mkdir()
    for age in (0, 3600):
        made = content(time.time() - age)
        path.write_text(made if isinstance(made, str) else json.dumps(made))
        stamp = time.time() - age
        os.utime(path, (stamp, stamp))
        lock = DriverLock(s, "sw", stale_after=120)
        if age or name == "pid too large for the platform":  # this host can have no such process: gone at once
            lock.acquire().release()
            assert not path.exists()
            continue
        with pytest.raises(LockError) as err:
            lock.acquire()
        message = str(err.value)
        assert "\n" not in message and f"delete {path}" in message
        assert "last seen" not in message or "last seen -" not in message  # never a time in the future


def test_an_unknown_storage_scheme_is_refused_before_anything_runs(tmp_path, finished):
    _, grid = finished
    with pytest.raises(StorageError, match="unknown scheme 'foo'; use a path"):
        Storage("foo://bucket/runs")
    for args in ([str(grid), "--storage", "foo://bucket/runs"], ["--collect", "foo://bucket/runs/small"]):
        proc = procs.run([sys.executable, os.path.join(ROOT, "run_sweep.py"), *args], timeout=300, cwd=ROOT)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert len(proc.stderr.strip().splitlines()) == 1 and "unknown scheme 'foo'" in proc.stderr


def refuse_writes(monkeypatch, code, only=None):
    """Writes through the storage fail with OSError `code` (only under folder `only`, when given)."""
    real = storage_mod.Storage._write_atomic

    def write(self, data, *parts):
        if only is None or only in parts:
            raise OSError(code, os.strerror(code), self.uri(*parts))
        return real(self, data, *parts)

    monkeypatch.setattr(storage_mod.Storage, "_write_atomic", write)


@pytest.mark.parametrize("code, said", [(errno.EROFS, "the folder is read-only"), (errno.EACCES, "read-only"),
                                        (errno.ENOSPC, "no space left to write")])
def test_collect_and_report_on_a_folder_they_cannot_write_print_the_tables(finished, monkeypatch, capsys, code, said):
    import run_sweep

    store, _ = finished
    before = {p.name: p.read_bytes() for p in (store / "small" / "results").iterdir()} \
        if (store / "small" / "results").exists() else {}
    refuse_writes(monkeypatch, code)
    for flag in ("--collect", "--report"):
        assert run_sweep.main([flag, str(store / "small")]) == 0
        out, err = capsys.readouterr()
        assert "| digits | ce [epochs_per_stage=1] |" in out and "(not updated)" in out
        notes = [line for line in err.splitlines() if line.startswith("note:")]
        assert len(notes) == 1 and said in notes[0] and "Traceback" not in err
    after = {p.name: p.read_bytes() for p in (store / "small" / "results").iterdir()} \
        if (store / "small" / "results").exists() else {}
    assert after == before  # nothing replaced, nothing lost


def test_a_full_disk_at_the_end_of_a_sweep_is_one_line_and_loses_nothing(finished, monkeypatch, capsys):
    import run_sweep

    store, grid = finished
    docs = {p: p.read_bytes() for p in (store / "small" / "trials").glob("*/trial.json")}
    refuse_writes(monkeypatch, errno.ENOSPC, only="results")
    assert run_sweep.main([str(grid), "--storage", str(store)]) == 2
    out, err = capsys.readouterr()
    assert "2 already finished, 0 to run" in out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no space left to write ") and "bytes needed" in lines[0]
    assert "bytes free" in lines[0] and "run the same command again" in lines[0]
    assert {p: p.read_bytes() for p in docs} == docs  # finished trials untouched
    monkeypatch.undo()
    assert run_sweep.main([str(grid), "--storage", str(store)]) == 0  # on a roomier disk it completes
    assert (store / "small" / "results" / "trials.parquet").exists()
