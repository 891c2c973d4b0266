"""What a user sees: the sweep's terminal (a line per trial event, a status line with an ETA, no worker
traceback), the exported selections, and the report's statements of which accuracy, which seeds and which
realised noise make each cell."""
import os
import subprocess
import sys
import textwrap

import pyarrow.parquet as pq
import pytest

from sweeps.terminal import Progress, duration

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def progress(cells, slots=1, every=30.0):
    clock, lines = Clock(), []
    return Progress(cells, slots, out=lines.append, every=every, now=clock), clock, lines


def test_the_eta_starts_from_the_dry_run_and_follows_the_measured_pace():
    cells = {k: {"name": k, "work": 100.0, "epochs": 10, "rounds": True} for k in "abcd"}
    p, clock, lines = progress(cells, slots=2)
    assert p.eta() == pytest.approx(4 * 100 / 2)  # nothing measured: the dry run's estimate
    p.trial_started("a"), p.trial_started("b")
    clock.t += 50
    p.trial_result("a", {"step": 5})  # half of its epochs in 50 s where 50 were estimated: pace 1
    assert p.eta() == pytest.approx((50 + 100 + 100 + 100) / 2)
    clock.t += 150
    p.trial_finished("a", {"final_test_acc": 90.0, "final_epochs": 10})  # took 200 s for an estimated 100
    p.trial_result("b", {"step": 2})  # b: 200 s for 20% -> 1000 s per 100: its pace dominates
    assert p.pace() == pytest.approx((200 + 200) / (100 + 20))
    assert p.eta() == pytest.approx((80 + 100 + 100) * p.pace() / 2)
    p.trial_failed("c", "RuntimeError: boom")
    p.trial_started("d")
    p.trial_finished("b", None)
    p.trial_finished("d", {})
    assert p.eta() is None  # nothing left
    assert any(line.endswith("FAILED c: RuntimeError: boom") for line in lines)
    assert "n/a" in lines[-1] and "[3/4 done]" in lines[-1]  # unknown figures said as n/a, never lost


def test_a_status_line_comes_every_n_seconds_with_counts_and_an_eta():
    cells = {k: {"name": k, "work": 60.0, "epochs": 10} for k in "abc"}
    p, clock, lines = progress(cells, slots=1, every=30)
    p.trial_started("a")
    p.tick()
    assert not any("status" in line for line in lines)
    clock.t += 31
    p.tick()
    p.tick()
    status = [line for line in lines if "status:" in line]
    assert len(status) == 1 and status[0].startswith("[00:31] status: 0/3 done, 1 running, 2 pending, 0 failed; ETA ")
    assert duration(59) == "59 s" and duration(61) == "1 min 01 s" and duration(3700) == "1 h 01 min"


def test_round_lines_only_for_methods_whose_rounds_matter():
    cells = {"m": {"name": "m", "work": 10.0, "epochs": 10, "rounds": True},
             "c": {"name": "c", "work": 10.0, "epochs": 10, "rounds": False}}
    p, _, lines = progress(cells)
    result = {"step": 3, "round_n_confident": 700, "round_precision": 91.25, "round_outer": 1, "round_inner": 2,
              "round_val_score": 80.0, "seconds": 3.0}
    p.trial_result("m", result)
    p.trial_result("c", result)
    assert len(lines) == 1 and "round m 1.2: confident 700, precision 91.2%, val 80.00" in lines[0]


# --- one real sweep, run as a user runs it ------------------------------------------------------------------
GRID = """name: shown
datasets: [digits]
noise:
  - {type: pairflip, rates: [0.4]}
seeds: [1]
methods: [memomentum, coteaching, ce]
config: {epochs_per_stage: 3, max_outer: 2, max_inner: 2, device: cpu}
resources:
  default: {cpu: 1, gpu: 0}
"""


@pytest.fixture(scope="module")
def user_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("user")
    (folder / "grid.yaml").write_text(GRID)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "run_sweep.py"), str(folder / "grid.yaml"),
                           "--storage", str(folder / "store"), "--status-every", "5"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600, env=env)
    return proc, folder / "store" / "shown"


def test_the_terminal_has_a_line_per_event_and_no_traceback(user_run):
    proc, _ = user_run
    output = proc.stdout
    assert proc.returncode == 0, output
    for sign in ("Traceback", "Exception ignored", "SystemExit", "sigterm_handler", "Trial status", "╭"):
        assert sign not in output, output  # neither a worker's stop traceback nor Tune's tables
    lines = output.splitlines()
    assert lines[0].startswith("sweep shown: 3 cells, 0 already finished, 3 to run")
    assert sum(" done  digits-pairflip-0.4-s1-" in line for line in lines) == 3
    assert any(" round digits-pairflip-0.4-s1-memomentum " in line for line in lines)
    assert len(lines) < 60, output


def test_selections_parquet_gives_each_rounds_precision(user_run):
    proc, sweep = user_run
    assert proc.returncode == 0, proc.stdout
    table = pq.read_table(sweep / "results" / "selections.parquet")  # one line of pyarrow reads the whole set
    rows = table.to_pylist()
    rounds = pq.read_table(sweep / "results" / "rounds.parquet").to_pylist()
    trials = {t["key"]: t for t in pq.read_table(sweep / "results" / "trials.parquet").to_pylist()}
    by_method = {t["method"]: k for k, t in trials.items()}
    assert not any(r["key"] == by_method["ce"] for r in rows)  # plain cross-entropy selects nothing
    mine = [r for r in rounds if r["key"] == by_method["memomentum"]]
    assert len(mine) == trials[by_method["memomentum"]]["n_rounds"] >= 2
    for r in mine:  # the precision computed from the file is the one the trial recorded
        picked = [s for s in rows if s["key"] == r["key"] and s["round"] == mine.index(r)]
        assert len(picked) == r["n_confident"] > 0
        assert (picked[0]["outer"], picked[0]["inner"], picked[0]["step"]) == (r["outer"], r["inner"], r["step"])
        assert 100 * sum(s["clean"] for s in picked) / len(picked) == pytest.approx(r["precision"], abs=1e-3)
        assert len({s["index"] for s in picked}) == len(picked)
    kept = [s for s in rows if s["key"] == by_method["coteaching"]]
    assert kept and {s["round"] for s in kept} == {0}  # a per-batch selector: its last epoch's kept examples
    assert all(s["clean"] is not None and 0 <= s["noisy_label"] < 10 for s in kept)


def test_collect_refreshes_selections_and_drops_those_of_deleted_trials(user_run, tmp_path):
    import shutil

    proc, sweep = user_run
    copy = tmp_path / "shown"
    shutil.copytree(sweep, copy)
    parts = copy / "results" / "selections.parquet"
    names = sorted(os.listdir(parts))
    assert len(names) == 2
    gone = names[0][:-len(".parquet")]
    shutil.rmtree(copy / "trials" / gone)
    (parts / names[1]).unlink()
    run = subprocess.run([sys.executable, os.path.join(ROOT, "run_sweep.py"), "--collect", str(copy)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode in (0, 1), run.stdout + run.stderr
    assert sorted(os.listdir(parts)) == [names[1]]  # rebuilt from its round files; the deleted trial's part is gone


def test_the_report_says_which_accuracy_seeds_and_realised_noise(user_run):
    _, sweep = user_run
    md = (sweep / "results" / "paper_table.md").read_text()
    assert "Which accuracy is which" in md and "best_test_acc" in md and "last10_test_acc" in md
    realised = pq.read_table(sweep / "results" / "trials.parquet").column("realized_noise_rate").to_pylist()[0]
    assert f"| digits | {realised * 100:.1f}%, seeds 1 |" in md
    assert "Which accuracy is which" in (sweep / "results" / "report.md").read_text()


def test_a_workers_exit_swallowed_by_the_garbage_collector_is_finished_quietly():
    """Ray stops a worker with SIGTERM, whose handler raises SystemExit; raised inside a garbage-collector callback
    it used to print "Exception ignored in ... SystemExit" and let the process run on. The worker's hook ends the
    process with the exit code asked for and prints nothing; other unraisable exceptions are still reported."""
    program = textwrap.dedent("""
        import sys, weakref
        from sweeps.trainable import finish_a_swallowed_exit
        sys.unraisablehook = finish_a_swallowed_exit
        class Thing: pass
        def callback(_ref, kind=sys.argv[1]):
            raise SystemExit(3) if kind == "exit" else ValueError("a real problem")
        thing = Thing()
        ref = weakref.ref(thing, callback)
        del thing  # the callback runs here, its exception is unraisable
        print("went on")
    """)
    stopped = subprocess.run([sys.executable, "-c", program, "exit"], cwd=ROOT, capture_output=True, text=True,
                             timeout=120)
    assert stopped.returncode == 3 and stopped.stderr == "" and "went on" not in stopped.stdout
    other = subprocess.run([sys.executable, "-c", program, "other"], cwd=ROOT, capture_output=True, text=True,
                           timeout=120)
    assert other.returncode == 0 and "a real problem" in other.stderr and "went on" in other.stdout
