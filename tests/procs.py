"""Running a command that starts Ray (run_sweep.py, the trial CLI) from a test.

`subprocess.run(cmd, capture_output=True, timeout=...)` can wait forever: on a timeout it kills the command, then reads
its pipes to the end, and the Ray processes the command started (raylet, GCS, workers) still hold those pipes open. On a
busy machine a slow sweep then turns into a test run that never ends instead of one failed test. Here the output goes
to files, the command runs in a process group of its own, and a timeout kills that whole group and fails the test with
the output so far."""
import os
import signal
import subprocess
import tempfile
from typing import Callable

import pytest


def run(cmd, *, timeout: float, merge_stderr: bool = False, **kw) -> subprocess.CompletedProcess:
    """What `subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)` returns, without its hang;
    with merge_stderr, stderr is written into stdout (stderr=subprocess.STDOUT) and the result's stderr is empty."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=out if merge_stderr else err, text=True,
                                start_new_session=True, **kw)
        timed_out = False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if timed_out:
        pytest.fail(f"{' '.join(map(str, cmd))[:300]} ran past its {timeout:g} s and was killed; its output so far:\n"
                    f"{stdout[-3000:]}\n{stderr[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def kill_group_while(group: subprocess.Popen, pid: int, still: Callable[[], bool]) -> bool:
    """SIGKILL the process group `group` leads (a driver started with start_new_session) at a state a test has just
    seen, if that state still holds: `pid` (the trial process whose files the state was read from) is stopped first,
    so nothing it writes can move on between the second look, `still()`, and the kill. Without the stop, a trial
    seen running could finish in between and a test would kill a sweep at a state it never meant to test.
    True when killed; False (the trial resumed) when the state had already passed."""
    try:
        os.kill(pid, signal.SIGSTOP)
    except ProcessLookupError:
        return False
    if still():
        os.killpg(group.pid, signal.SIGKILL)
        os.kill(pid, signal.SIGKILL)  # also when Ray started it outside the driver's group
        return True
    os.kill(pid, signal.SIGCONT)
    return False
