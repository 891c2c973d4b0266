"""A Ray started by a sweep runs its trials at the driver's priority. Ray's default starts workers at nice 15: on a
machine with other work at the normal priority a trial then got a few percent of a core (seen: 4 % beside two busy
loops on 2 cores, a 30 s test running past 40 minutes). RAY_worker_niceness, where a user sets it, still decides."""
import os
import sys
import textwrap

import pytest
from tests import procs

pytest.importorskip("ray", reason="Ray is not installed here (e.g. a GPU machine used for the CUDA suite)")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROGRAM = textwrap.dedent("""
    import os, ray
    from sweeps.runner import connect
    connect(None)
    print("worker nice", ray.get(ray.remote(lambda: os.nice(0)).remote()), "driver nice", os.nice(0))
    ray.shutdown()
""")


@pytest.mark.parametrize("setting, expected", [(None, 0), ("7", 7)])
def test_a_local_ray_runs_trials_at_the_drivers_priority_unless_told_otherwise(setting, expected):
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_worker_niceness")}
    if setting is not None:
        env["RAY_worker_niceness"] = setting
    proc = procs.run([sys.executable, "-c", PROGRAM], cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert f"worker nice {expected} driver nice 0" in proc.stdout
