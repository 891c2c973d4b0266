"""Sweeps on S3 storage, against a real S3 server on loopback (moto's server mode, started and stopped here): a
small sweep, a rerun that runs nothing, `--collect` from the URI, and a driver killed mid-sweep that the same
command continues, with the resumed trial's records those of an uninterrupted run. Skipped, with the reason,
where the server cannot start."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import yaml

pytest.importorskip("ray", reason="Ray is not installed here (e.g. a GPU machine used for the CUDA suite)")
pytest.importorskip("moto.server", reason="moto's S3 server is not installed (pip install 'moto[server]')")

from sweeps.grid import parse_grid  # noqa: E402
from tests.test_faults import CONFIG, comparable, reference_records  # noqa: E402
from sweeps.tune_setup import environ  # noqa: E402
from tests import procs  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUCKET = "sweeps"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3():
    """An S3 server on loopback with one bucket; the AWS settings every process of the test (the drivers and their
    Ray workers inherit them) needs to reach it. Yields the storage URI."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    try:
        with environ(env):
            deadline = time.time() + 60
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1):
                        break
                except OSError:
                    if time.time() > deadline or server.poll() is not None:
                        pytest.skip(f"moto's S3 server did not start on port {port}")
                    time.sleep(0.2)
            import boto3

            boto3.client("s3").create_bucket(Bucket=BUCKET)
            yield f"s3://{BUCKET}/runs"
    finally:
        server.terminate()
        server.wait(timeout=30)


def fs_path(uri: str):
    return pafs.FileSystem.from_uri(uri)


def read_doc(fs, path):
    try:
        with fs.open_input_stream(path) as fh:
            return json.loads(fh.read())
    except (OSError, ValueError):
        return None


def sweep_cmd(grid_file, storage, *extra):
    return [sys.executable, os.path.join(ROOT, "run_sweep.py"), str(grid_file), "--storage", storage, *extra]


def test_a_sweep_on_s3_runs_reruns_nothing_and_collects(s3, tmp_path):
    raw = {"name": "s3small", "datasets": ["digits"], "noise": [{"type": "pairflip", "rates": [0.4]}], "seeds": [1],
           "methods": ["memomentum", "ce"], "config": {"epochs_per_stage": 3, "max_outer": 2, "max_inner": 2,
                                                       "device": "cpu"}}
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(yaml.safe_dump(raw))
    first = procs.run(sweep_cmd(grid_file, s3), timeout=600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert f"TensorBoard: the event files are under {s3}/s3small/tune/<run>/<trial>/tensorboard" in first.stdout
    fs, root = fs_path(f"{s3}/s3small")
    trials = pq.read_table(f"{root}/results/trials.parquet", filesystem=fs).to_pylist()
    assert sorted(t["method"] for t in trials) == ["ce", "memomentum"] and {t["status"] for t in trials} == {"finished"}
    picked = pq.read_table(f"{root}/results/selections.parquet", filesystem=fs).to_pylist()
    assert picked and {r["method"] for r in picked} == {"memomentum"}
    events = fs.get_file_info(pafs.FileSelector(f"{root}/tune", recursive=True))
    assert any("tfevents" in info.base_name for info in events)  # where the TensorBoard hint says

    again = procs.run(sweep_cmd(grid_file, s3), timeout=600)
    assert again.returncode == 0 and "2 already finished, 0 to run" in again.stdout, again.stderr[-3000:]
    collect = procs.run([sys.executable, os.path.join(ROOT, "run_sweep.py"), "--collect", f"{s3}/s3small"],
                        timeout=300)
    assert collect.returncode == 0 and "| digits | memomentum [" in collect.stdout, collect.stderr[-3000:]
    assert "Traceback" not in collect.stderr


def test_a_driver_killed_mid_sweep_on_s3_is_continued_by_the_same_command(s3, tmp_path):
    raw = {"name": "s3kill", "datasets": ["digits"], "noise": [{"type": "symmetric", "rates": [0.3]}],
           "seeds": [1, 2, 3], "methods": ["memomentum"], "config": CONFIG}
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(yaml.safe_dump(raw))
    cells = {c.config.seed: c for c in parse_grid(raw, storage=s3).cells}
    fs, root = fs_path(f"{s3}/s3kill")
    docs = {c.key: f"{root}/trials/{c.key}/trial.json" for c in cells.values()}
    cmd = sweep_cmd(grid_file, s3, "--max-concurrent", "1")
    driver = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    victim = None
    try:  # one trial finished, the next one inside stage B (a checkpoint written there)
        def state():
            now = {k: read_doc(fs, p) for k, p in docs.items()}
            done = [k for k, d in now.items() if d and d["status"] == "finished"]
            running = [d for d in now.values() if d and d["status"] == "running" and any(
                r["kind"] == "epoch" and r["inner"] >= 1 and r["epoch"] >= 2 for r in d["records"])]
            return running[0] if done and running else None

        while victim is None and driver.poll() is None:  # no clock: a busy machine may take many minutes
            seen = state()
            if seen and procs.kill_group_while(driver, seen["pid"], lambda: (state() or {}).get("key") == seen["key"]):
                victim = seen
            time.sleep(0.2)
        assert victim is not None, "never reached a state with one finished and one running trial"
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    finished = {k: fs.get_file_info(p).mtime_ns for k, p in docs.items() if (read_doc(fs, p) or {}).get("status")
                == "finished"}
    rerun = procs.run(cmd, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert f"{len(finished)} already finished" in rerun.stdout
    assert {k: fs.get_file_info(docs[k]).mtime_ns for k in finished} == finished  # never run again
    resumed = read_doc(fs, docs[victim["key"]])
    assert resumed["status"] == "finished" and "checkpoint_" in (resumed["resumed_from"] or "")
    seed = resumed["config"]["seed"]
    assert comparable(resumed["records"]) == comparable(reference_records(cells[seed].config.to_dict()))
    table = pq.read_table(f"{root}/results/trials.parquet", filesystem=fs).to_pylist()
    assert sorted(t["key"] for t in table) == sorted(docs) and {t["status"] for t in table} == {"finished"}
