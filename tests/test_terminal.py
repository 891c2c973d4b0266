"""What a user sees: the sweep's terminal (a line per trial event, a status line with an ETA, no worker
traceback), the exported selections, and the report's statements of which accuracy, which seeds and which
realised noise make each cell."""
import os
import sys
import textwrap

import pyarrow.parquet as pq
import pytest

from sweeps.terminal import Progress, duration
from tests import procs

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


def test_the_eta_is_never_a_countdown_while_the_trials_wait():
    """A loaded machine (or a busy cluster) can hold a trial pending for minutes: the ETA then says it cannot tell,
    instead of "ETA 0 s" from an estimate long spent; it comes back once something is measured."""
    cells = {"a": {"name": "a", "work": 0.5, "epochs": 2}}
    p, clock, lines = progress(cells)
    assert p.eta() == pytest.approx(0.5) and "ETA 0 s" in p.status()  # the dry run's estimate, at the start
    clock.t += 5
    assert p.eta() is None and p.status().endswith("ETA n/a: nothing measured yet")
    clock.t += 143
    assert p.status().endswith("ETA n/a: no trial running for 2 min 28 s (waiting for resources)")
    p.trial_started("a")
    assert p.eta() is None and p.status().endswith("nothing measured yet")
    clock.t += 10
    p.trial_result("a", {"step": 1})  # half done in 10 s
    assert p.eta() == pytest.approx(0.5 * 0.5 * (10 / 0.25))
    p.trial_finished("a", {})
    assert p.eta() is None and "ETA" not in p.status()


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
    proc = procs.run([sys.executable, os.path.join(ROOT, "run_sweep.py"), str(folder / "grid.yaml"),
                      "--storage", str(folder / "store"), "--status-every", "5"], merge_stderr=True, timeout=600, env=env)
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
    run = procs.run([sys.executable, os.path.join(ROOT, "run_sweep.py"), "--collect", str(copy)],
                    timeout=300)
    assert run.returncode in (0, 1), run.stdout + run.stderr
    assert sorted(os.listdir(parts)) == [names[1]]  # rebuilt from its round files; the deleted trial's part is gone


def test_damaged_or_deleted_round_files_never_cost_the_rows_a_part_holds(user_run, tmp_path):
    """One round file cut short, one deleted, one overwritten with text: --collect keeps every row the table held
    (and writes the files back from them), names each file in one warning line, and a later run of the sweep says
    nothing more; a round file lost with no row anywhere is named as lost by every run."""
    import shutil

    from sweeps import runner
    from sweeps.grid import load_grid

    proc, sweep = user_run
    assert proc.returncode == 0, proc.stdout
    copy = tmp_path / "shown"
    shutil.copytree(sweep, copy)
    parts = copy / "results" / "selections.parquet"
    before = {p.name: pq.read_table(parts / p.name).to_pylist() for p in parts.iterdir()}
    key = max(before, key=lambda name: len({r["round"] for r in before[name]}))[:-len(".parquet")]
    files = sorted((copy / "trials" / key / "selections").iterdir())
    assert len(files) >= 3
    intact = {f.name: f.read_bytes() for f in files}
    files[0].write_bytes(files[0].read_bytes()[:40])  # cut short
    files[1].unlink()  # deleted
    files[2].write_text("not a selection")  # overwritten
    run = procs.run([sys.executable, os.path.join(ROOT, "run_sweep.py"), "--collect", str(copy)],
                    timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    warned = [line for line in run.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warned) == 3 and all(key in line and "written back" in line for line in warned), run.stderr
    assert {f.name for f in files} <= set(os.listdir(copy / "trials" / key / "selections"))
    after = {p.name: pq.read_table(parts / p.name).to_pylist() for p in parts.iterdir()}
    assert sorted(map(str, after[f"{key}.parquet"])) == sorted(map(str, before[f"{key}.parquet"]))
    from memomentum import selections
    for f in files[:3]:  # written back: the same selection as the file the trial wrote
        again, first = selections.decode(f.read_bytes()), selections.decode(intact[f.name])
        assert all((again[k] == first[k]).all() if hasattr(first[k], "all") else again[k] == first[k] for k in first)

    lines = []  # a run of the finished sweep: nothing to say any more
    grid = load_grid(str(sweep.parent.parent / "grid.yaml"), storage=str(tmp_path))
    assert runner.run(grid, out=lines.append) == 0
    assert not [line for line in lines if line.startswith("warning: ")], lines

    files[1].unlink()  # lost for good: no file, and no row in the table
    (parts / f"{key}.parquet").unlink()
    lines = []
    assert runner.run(grid, out=lines.append) == 0
    lost = [line for line in lines if line.startswith("warning: ")]
    assert len(lost) == 1 and files[1].name in lost[0] and "lost" in lost[0] and "run the cell afresh" in lost[0]
    rounds = {r["round"] for r in pq.read_table(parts / f"{key}.parquet").to_pylist()}
    assert int(files[1].name[6:10]) not in rounds and len(rounds) == len(files) - 1


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
    stopped = procs.run([sys.executable, "-c", program, "exit"], cwd=ROOT, timeout=120)
    assert stopped.returncode == 3 and stopped.stderr == "" and "went on" not in stopped.stdout
    other = procs.run([sys.executable, "-c", program, "other"], cwd=ROOT, timeout=120)
    assert other.returncode == 0 and "a real problem" in other.stderr and "went on" in other.stdout


def test_a_trials_error_keeps_the_exception_type_and_every_line_of_its_message(tmp_path):
    """From the exception Tune pickled (inside Ray's RayTaskError), or from the text alone when there is no pickle
    (a process that died): the type, the whole message, and one line with both, never the text's last line '"'."""
    from ray import cloudpickle
    from ray.exceptions import RayTaskError

    from sweeps.terminal import trial_error

    message = 'Error(s) in loading state_dict for Net:\n\tMissing key(s): "fc.weight".\n\tsize mismatch: from "\n"'
    wrapped = RayTaskError("ImplicitFunc.train", 'Traceback (most recent call last):\n  File "x.py", line 1, in train\n'
                           f"RuntimeError: {message}", RuntimeError(message))
    text = f"Failure # 1 (occurred at 2026-12-07_10-00-00)\n{wrapped}\n"
    assert text.rstrip().splitlines()[-1] == '"'

    class Trial:
        error_file = str(tmp_path / "error.txt")
        pickled_error_file = str(tmp_path / "error.pkl")

    (tmp_path / "error.txt").write_text(text)
    with open(Trial.pickled_error_file, "wb") as fh:
        cloudpickle.dump(wrapped, fh)
    for pickled in (True, False):
        if not pickled:
            os.remove(Trial.pickled_error_file)
        error = trial_error(Trial(), "default")
        assert error["type"] == "RuntimeError" and error["message"].strip() == message.strip(), error
        assert error["line"].startswith("RuntimeError: Error(s) in loading state_dict for Net: Missing key(s)")
        assert "\n" not in error["line"] and error["traceback"] == text
    (tmp_path / "error.txt").write_text("")
    assert trial_error(Trial(), "the default")["line"] == "the default"


def test_tunes_experiment_state_failure_is_one_warning_line(capsys):
    """A full disk makes Tune log a 20-line traceback when it saves its experiment state: the sweep says one line
    (once per distinct error), and Tune's other messages pass as they are."""
    import errno
    import logging

    from sweeps.runner import TUNE_STATE_LOGGER, OneLineTuneState

    lines = []
    log = logging.getLogger(TUNE_STATE_LOGGER)
    quiet = OneLineTuneState(lines.append)
    log.addFilter(quiet)
    try:
        for _ in range(2):
            try:
                raise OSError(errno.ENOSPC, "No space left on device")
            except OSError:
                log.error("Saving experiment state to storage at '/full/tune' failed with exception: ", exc_info=True)
        log.warning("a slow sync")
    finally:
        log.removeFilter(quiet)
    assert len(lines) == 1 and lines[0].startswith("warning: Ray Tune could not save its experiment state (OSError: ")
    assert "No space left on device" in lines[0]
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Saving experiment state" not in err
