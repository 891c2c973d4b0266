"""The multi-node path for real: a two-node Ray cluster on this machine (a head and a worker, each its
own process tree with one CPU, token authentication as `ray start` sets it up), a sweep driven through
`run_sweep.py --address`, trials on both nodes; and cluster.yaml checked against Ray's own schema."""
import copy
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
import yaml
from tests import procs

pytest.importorskip("ray", reason="Ray is not installed here (e.g. a GPU machine used for the CUDA suite)")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RAY = os.path.join(os.path.dirname(sys.executable), "ray")


def test_cluster_yaml_validates_against_rays_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    with open(os.path.join(ROOT, "cluster.yaml")) as fh:
        text = fh.read()
    config = yaml.safe_load(text)
    validate_config(prepare_config(copy.deepcopy(config)))
    assert config["available_node_types"][config["head_node_type"]]["resources"] == {"CPU": 0}
    assert "2.60.0-py311" in config["docker"]["image"]
    assert any("requirements.txt" in c for c in config["setup_commands"])

    # the on-premises variant the comments describe validates too
    block = re.search(r"#   provider:\n(?:#   .*\n)+", text).group(0)
    local = yaml.safe_load("\n".join(line[4:] for line in block.splitlines()))
    variant = {k: v for k, v in copy.deepcopy(config).items() if k not in ("available_node_types", "head_node_type",
                                                                          "provider", "auth")}
    variant.update(local)
    validate_config(prepare_config(variant))

    broken = copy.deepcopy(config)
    broken["available_node_types"]["head"]["resourcez"] = {}
    with pytest.raises(Exception, match="resourcez"):
        validate_config(prepare_config(broken))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alive_nodes(address: str, env: dict) -> int:
    code = (f"import ray; ray.init(address='{address}', logging_level='ERROR'); "
            f"print(sum(1 for n in ray.nodes() if n['Alive']))")
    proc = procs.run([sys.executable, "-c", code], env=env, timeout=120)
    lines = proc.stdout.strip().splitlines()
    return int(lines[-1]) if proc.returncode == 0 and lines and lines[-1].isdigit() else 0


def stop(proc: subprocess.Popen) -> None:
    """End a node we started, with everything in its process group, and nothing else."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group (raylet, gcs, workers)
    except ProcessLookupError:
        pass


def forget_cluster(port: int) -> None:
    """A head killed by signal leaves its address in Ray's marker file, where a later bare
    `ray.init()` would try to join it; remove the marker if (and only if) it names our head."""
    marker = "/tmp/ray/ray_current_cluster"
    try:
        with open(marker) as fh:
            ours = fh.read().strip().endswith(f":{port}")
        if ours:
            os.remove(marker)
    except OSError:
        pass


def test_sweep_runs_on_both_nodes_of_a_two_node_cluster(tmp_path):
    home = tmp_path / "home"  # the auth token `ray start --head` writes lives here, not in ~/.ray
    home.mkdir()
    # token authentication as a real cluster runs it: one token, shared by every node and the driver
    env = {**os.environ, "HOME": str(home), "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token"}
    subprocess.run([RAY, "get-auth-token", "--generate"], env=env, capture_output=True, check=True, timeout=120)
    assert (home / ".ray" / "auth_token").exists()
    port = free_port()
    address = f"127.0.0.1:{port}"
    logs = [open(tmp_path / f"{n}.log", "w") for n in ("head", "worker")]
    nodes = []
    try:
        nodes.append(subprocess.Popen([RAY, "start", "--head", f"--port={port}", "--num-cpus=1", "--block",
                                       "--include-dashboard=false"], env=env, stdout=logs[0],
                                      stderr=subprocess.STDOUT, start_new_session=True))
        deadline = time.time() + 180
        nodes.append(subprocess.Popen([RAY, "start", f"--address={address}", "--num-cpus=1", "--block"], env=env,
                                      stdout=logs[1], stderr=subprocess.STDOUT, start_new_session=True))
        while alive_nodes(address, env) < 2:
            assert time.time() < deadline, "the two-node cluster did not come up: " + (tmp_path / "head.log").read_text()[-2000:]
            time.sleep(2)

        grid = tmp_path / "grid.yaml"
        grid.write_text(yaml.safe_dump({
            "name": "two", "datasets": ["digits"], "noise": [{"type": "symmetric", "rates": [0.3, 0.4]}],
            "seeds": [1, 2], "methods": ["memomentum"],
            "config": {"epochs_per_stage": 3, "max_outer": 1, "max_inner": 3, "device": "cpu"}}))
        storage = tmp_path / "store"
        proc = procs.run([sys.executable, os.path.join(ROOT, "run_sweep.py"), str(grid), "--address", address,
                          "--storage", str(storage)], env=env, timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    finally:
        for node in reversed(nodes):
            stop(node)
        for log in logs:
            log.close()
        forget_cluster(port)
    results = storage / "two" / "results"
    trials = pq.read_table(results / "trials.parquet").to_pylist()
    assert len(trials) == 4 and {t["status"] for t in trials} == {"finished"}
    assert len({t["node_id"] for t in trials}) == 2, "all trials ran on one node"
    for name in ("rounds.parquet", "epochs.parquet", "paper_table.parquet", "paper_table.md"):
        assert (results / name).stat().st_size > 0
    assert pq.read_table(results / "epochs.parquet").num_rows == sum(t["epochs"] for t in trials)
