"""Ray swaps process globals behind the driver's back: its log monitor installs tqdm_ray's `safe_print` as
`builtins.print` when the first worker line arrives, which on a busy machine can come before the Tuner is built.
Tune then pickles the sweep's callbacks: nothing in them may hold the original `print` by reference. Both tests
make the swap happen for certain, before the sweep starts, and run it to the end (each in its own process)."""
import os
import subprocess
import sys
import textwrap

import pytest
from tests import procs

pytest.importorskip("ray", reason="Ray is not installed here (e.g. a GPU machine used for the CUDA suite)")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRID = """name: patched
datasets: [digits]
noise: [{type: symmetric, rates: [0.2]}]
seeds: [1]
methods: [memomentum, ce]
config: {epochs_per_stage: 2, max_outer: 1, max_inner: 2, device: cpu}
"""


def run(program: str, tmp_path) -> subprocess.CompletedProcess:
    (tmp_path / "grid.yaml").write_text(GRID)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return procs.run([sys.executable, "-c", textwrap.dedent(program), str(tmp_path / "grid.yaml"),
                      str(tmp_path / "store")], cwd=ROOT, env=env, timeout=600)


def test_a_sweep_runs_to_the_end_when_print_is_replaced_after_import(tmp_path):
    proc = run("""
        import builtins, sys
        import run_sweep
        import sweeps.runner  # everything imported, as when Ray's log monitor strikes
        original = builtins.print
        builtins.print = lambda *a, **k: original(*a, **k)  # not the object the modules saw
        sys.exit(run_sweep.main([sys.argv[1], "--storage", sys.argv[2]]))
    """, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "PicklingError" not in proc.stderr and "| digits | memomentum [" in proc.stdout


def test_a_sweep_runs_to_the_end_after_tqdm_ray_patched_print(tmp_path):
    proc = run("""
        import builtins, sys
        import ray
        from ray.experimental import tqdm_ray
        from sweeps import runner
        from sweeps.grid import load_grid
        original = builtins.print
        ray.init(address="local", num_cpus=2, include_dashboard=False, **runner.ray_init_kwargs(local=True))
        tqdm_ray.instance()  # what Ray's log monitor does on its first worker line
        assert builtins.print is not original
        sys.exit(runner.run(load_grid(sys.argv[1], storage=sys.argv[2])))
    """, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "PicklingError" not in proc.stderr and "| digits | memomentum [" in proc.stdout
