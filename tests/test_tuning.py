"""Fair tuning (sweeps/tuning.py): the `tune:` section checked before Ray starts, no decision reading a clean label or
the test set, a search resumed after its driver is killed, and what the tables, the dry run and TensorBoard say."""
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
import yaml

from sweeps.grid import GridError, parse_grid
from tests import procs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = {"name": "tn", "datasets": ["digits"], "noise": [{"type": "pairflip", "rates": [0.4]}], "seeds": [1, 2],
        "methods": ["ce", "coteaching"], "config": {"epochs_per_stage": 12, "device": "cpu"}}
SPACE = {"*": {"lr": {"loguniform": [0.0005, 0.05]}}, "coteaching": {"forget_rate": {"uniform": [0.2, 0.6]}}}
HAS_OPTUNA = importlib.util.find_spec("optuna") is not None
NEEDS_OPTUNA = pytest.mark.skipif(not HAS_OPTUNA, reason="Optuna is not installed here (optional: pip install optuna)")


def grid_with(tune):
    return parse_grid({**BASE, "tune": tune})


def test_a_tune_section_makes_one_search_per_method_with_its_grace_and_budget():
    from sweeps import tuning

    grid = grid_with({"trials_per_method": 5, "space": SPACE})
    groups = tuning.groups(grid)
    assert [g.method for g in groups] == ["ce", "coteaching"] and grid.tune.trials_per_method == 5
    assert set(groups[1].space) == {"lr", "forget_rate"} and set(groups[0].space) == {"lr"}
    assert groups[1].grace == 11 and groups[1].base["seed"] == 1000  # past the forget-rate ramp; the tuning seed
    sft = parse_grid({**BASE, "methods": ["sft"], "config": {"epochs_per_stage": 40, "device": "cpu"},
                      "tune": {"trials_per_method": 2, "space": {"sft": {"sft_warm_up": {"randint": [5, 30]}}}}})
    assert tuning.groups(sft)[0].grace == 31  # past the longest warm-up the search may sample


@pytest.mark.parametrize("tune, fragment", [
    ({"space": SPACE}, "give trials_per_method"),
    ({"trials_per_method": 0, "space": SPACE}, "tune.trials_per_method = 0 must be a whole number from 1"),
    ({"trials_per_method": 2, "budget": 3, "space": SPACE}, "unknown setting 'budget'"),
    ({"trials_per_method": 2, "space": {"ce": {"co_lambda": {"uniform": [0.1, 0.9]}}, "*": SPACE["*"]}},
     "'co_lambda' is a setting of jocor, not of ce"),
    ({"trials_per_method": 2, "space": {"*": {"lr": {"loguniform": [0.1, 0.01]}}}}, "is empty or inverted"),
    ({"trials_per_method": 2, "space": {"*": {"lr": {"uniform": [0.1, 0.1]}}}}, "is empty or inverted"),
    ({"trials_per_method": 2, "space": {"*": {"epochs_per_stage": {"uniform": [5, 20]}}}},
     "epochs_per_stage must be a whole number; search it with randint"),
    ({"trials_per_method": 2, "space": {"*": {"lr": {"normal": [0.1, 0.01]}}}}, "must be one distribution"),
    ({"trials_per_method": 2, "metric": "test_acc", "space": SPACE}, "unknown metric 'test_acc'"),
    ({"trials_per_method": 2, "scheduler": "hyperband", "space": SPACE}, "unknown scheduler 'hyperband'"),
    ({"trials_per_method": 2, "seed": 2, "space": SPACE}, "tune.seed 2 is also an evaluation seed"),
    ({"trials_per_method": 2, "space": {"*": SPACE["*"], "coteaching": {"forget_rate": {"uniform": [0.2, 1.5]}}}},
     "coteaching refuses forget_rate=1.5 at the edge of its range"),
    ({"trials_per_method": 2, "space": {"coteaching": SPACE["coteaching"]}}, "tune.space gives ce nothing to search"),
    ({"trials_per_method": 2, "space": {"*": {"seed": {"choice": [1, 2]}}}}, "seed is not a setting to tune"),
    ({"trials_per_method": 2, "space": {"jocor": SPACE["*"]}}, "which is not one of the grid's methods"),
    pytest.param({"trials_per_method": 2, "search": "optuna", "space": SPACE}, "needs Optuna: pip install optuna",
                 marks=pytest.mark.skipif(HAS_OPTUNA, reason="Optuna is installed here")),
])
def test_tune_mistakes_are_one_line_before_ray_starts(tmp_path, capsys, tune, fragment):
    from tests.test_bad_input import check_refused, grid_file

    with pytest.raises(GridError, match=None) as err:
        grid_with(tune)
    assert fragment in str(err.value) and "\n" not in str(err.value)
    store = tmp_path / "store"
    store.mkdir()
    check_refused(capsys, [grid_file(tmp_path, {**BASE, "tune": tune}), "--storage", str(store)], fragment, store)


def test_the_dry_run_prints_the_tuning_budget_and_the_evaluation_cells(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({**BASE, "tune": {"trials_per_method": 3, "space": SPACE}}))
    proc = procs.run([sys.executable, os.path.join(ROOT, "run_sweep.py"), str(path), "--dry-run"], cwd=ROOT,
                     timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "tuning: 2 search(es) (one per data set x noise setting x method) of 3 trial(s) each on seed 1000" in proc.stdout
    assert "search digits-pairflip-0.4-coteaching: lr loguniform[0.0005, 0.05], forget_rate uniform[0.2, 0.6]" in proc.stdout
    assert "evaluation: each search's chosen settings on the grid's seeds: 4 tuned cells beside the 4 reference" in proc.stdout


# --- with Ray: each run in its own process, as a user runs it ---------------------------------------------------
pytest.importorskip("ray", reason="Ray is not installed here (e.g. a GPU machine used for the CUDA suite)")


def run_sweep(grid: dict, folder, *extra, wait=True):
    path = folder / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    cmd = [sys.executable, os.path.join(ROOT, "run_sweep.py"), str(path), "--storage", str(folder / "store"), *extra]
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "MEMOMENTUM_CACHE": str(folder / "cache")}
    if not wait:
        with open(folder / "driver.log", "w") as log:  # a file, not a pipe nobody reads: a full pipe stalls the driver
            return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
    return procs.run(cmd, cwd=ROOT, env=env, timeout=900)


def chosen_of(store):
    from sweeps import tuning
    from sweeps.storage import Storage

    return {doc["label"]: (doc["settings"], doc["best_val_score"], doc["trials"])
            for doc in tuning.read_chosen(Storage(str(store)), "tn").values()}


def test_no_tuning_decision_reads_a_clean_label_or_the_test_set(tmp_path):
    """The same images and given labels, once with their true test labels and clean labels, once with both
    shuffled: every search samples, stops and chooses exactly the same."""
    import csv

    import numpy as np

    from memomentum.example_data import write

    write("digits", str(tmp_path / "true"), 0.3, "pairflip", 1, limit=400)
    rows = list(csv.DictReader(open(tmp_path / "true" / "manifest.csv")))
    rng = np.random.default_rng(0)
    poisoned = [dict(r) for r in rows]
    test = [r for r in poisoned if r["split"] == "test"]
    for r, label in zip(test, rng.permutation([r["label"] for r in test])):
        r["label"] = r["clean_label"] = label  # the test set: wrong labels
    for r, label in zip(poisoned, rng.permutation([r["clean_label"] for r in poisoned])):
        if r["split"] == "train":
            r["clean_label"] = label  # the training set's clean labels: scrambled
    with open(tmp_path / "true" / "poisoned.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(poisoned)
    results = []
    for name in ("manifest.csv", "poisoned.csv"):
        folder = tmp_path / name[:-4]
        folder.mkdir()
        grid = {**BASE, "seeds": [1], "datasets": [{"name": "mine", "path": str(tmp_path / "true" / name)}],
                "noise": [{"type": "real"}], "methods": ["coteaching"],
                "tune": {"trials_per_method": 4, "max_concurrent": 1, "grace_period": 3, "space": SPACE}}
        proc = run_sweep(grid, folder)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        results.append(chosen_of(folder / "store"))
        records = pq.read_table(folder / "store" / "tn" / "results" / "tuning.parquet").to_pylist()
        results.append([(r["trial"], r["status"], r["best_val_score"], r["settings"]) for r in records])
    assert results[0] == results[2] and results[1] == results[3]
    assert results[0] and all(trials == 4 for _, _, trials in results[0].values())
    # one trial at a time (max_concurrent 1): the first trial is alone at every ASHA rung, so it is never stopped
    # early; with the limit ignored, two ran at once and which one ASHA stopped depended on which reported first
    assert results[1][0][:2] == (0, "finished"), results[1]


def test_the_search_algorithm_itself_holds_the_concurrency_limit():
    from sweeps.searching import searcher

    spec = grid_with({"trials_per_method": 4, "max_concurrent": 1, "space": SPACE}).tune
    assert searcher(spec, 1).max_concurrent == 1 and searcher(spec, 0).max_concurrent == 0


def test_a_tuning_record_numbers_its_trial_by_the_order_tune_created_it(tmp_path, capsys):
    """Tune's random search puts the number in the trial id (abc_00002); a Searcher such as Optuna's does not
    (8cffb492): every trial was once recorded as #1 and index 0, and the choice's tie-break lost its order."""
    from types import SimpleNamespace

    from sweeps import tuning
    from sweeps.searching import records_callback
    from sweeps.storage import Storage

    grid = grid_with({"trials_per_method": 3, "space": SPACE})
    group = tuning.groups(grid)[0]
    store = Storage(str(tmp_path))
    trials = [SimpleNamespace(trial_id=tid, config={"lr": lr}, last_result={"finished": 1, "final_best_val_score": v,
                                                                           "step": 12, "time_total_s": 1.0})
              for tid, lr, v in (("8cffb492", 0.001, 40.0), ("1a5af91c", 0.002, 50.0), ("b5b9df68", 0.003, 50.0))]
    callback = records_callback(store, grid.name, group, 3)
    for trial in reversed(trials):  # ending in another order than they started
        callback.on_trial_complete(0, trials, trial)
    records = tuning.read_records(store, grid.name, group.key)
    assert [(r["index"], r["trial_id"]) for r in records] == [(0, "8cffb492"), (1, "1a5af91c"), (2, "b5b9df68")]
    assert {line.split(":")[0] for line in capsys.readouterr().out.splitlines()} == {
        f"tune  {group.label} #{n}/3" for n in (1, 2, 3)}
    assert tuning.choose(records)["trial_id"] == "1a5af91c"  # a tie: the earlier trial


@NEEDS_OPTUNA
def test_an_optuna_search_runs_to_its_tuned_rows(tmp_path):
    grid = {**BASE, "tune": {"trials_per_method": 3, "max_concurrent": 2, "search": "optuna", "grace_period": 3,
                             "space": SPACE}}
    proc = run_sweep(grid, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "(optuna search, asha early stopping)" in proc.stdout and "A new study created" not in proc.stdout
    records = pq.read_table(tmp_path / "store" / "tn" / "results" / "tuning.parquet").to_pylist()
    for method in BASE["methods"]:
        assert sorted(r["trial"] for r in records if r["method"] == method) == [0, 1, 2]
    assert set(chosen_of(tmp_path / "store")) == {f"digits-pairflip-0.4-{m}" for m in BASE["methods"]}
    md = (tmp_path / "store" / "tn" / "results" / "paper_table.md").read_text()
    assert all(f"{m} [tuned (same budget, noisy validation)]" in md for m in BASE["methods"])


@pytest.mark.parametrize("search", ["random", pytest.param("optuna", marks=NEEDS_OPTUNA)])
def test_a_search_killed_with_its_driver_continues_and_keeps_its_finished_trials(tmp_path, search):
    grid = {**BASE, "methods": ["coteaching"], "config": {"epochs_per_stage": 25, "device": "cpu"},
            "tune": {"trials_per_method": 5, "max_concurrent": 1, "scheduler": "none", "search": search,
                     "space": SPACE}}
    driver = run_sweep(grid, tmp_path, wait=False)
    records = tmp_path / "store" / "tn" / "tuning"
    try:
        while driver.poll() is None and len(list(records.glob("*/records/*.json"))) < 2:  # no clock: see test_faults
            time.sleep(0.2)
        assert len(list(records.glob("*/records/*.json"))) >= 2, (
            "the driver ended before two tuning trials finished:\n" + (tmp_path / "driver.log").read_text()[-3000:])
        newest = max(p.stat().st_mtime_ns for p in records.glob("*/records/*.json"))

        def saved_since():  # Tune's experiment state (searcher and scheduler) written after the newest record
            return any(p.stat().st_mtime_ns > newest for p in (tmp_path / "store" / "tn" / "tune").glob(
                "tuning-*/experiment_state-*.json"))

        while driver.poll() is None and not saved_since():  # saved at least every second while it runs
            time.sleep(0.2)
        os.killpg(driver.pid, signal.SIGKILL)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    before = {p.name: p.read_bytes() for p in records.glob("*/records/*.json")}
    assert not list(records.glob("*/chosen.json"))
    again = run_sweep(grid, tmp_path)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "continuing its search" in again.stdout
    after = {p.name: p.read_bytes() for p in records.glob("*/records/*.json")}
    assert len(after) == 5 and all(after[name] == data for name, data in before.items())  # kept as they were
    indices = sorted(json.loads(data)["index"] for data in after.values())
    assert indices == [0, 1, 2, 3, 4]  # one search: its five samples, none twice
    trials = pq.read_table(tmp_path / "store" / "tn" / "results" / "trials.parquet").to_pylist()
    assert sum(t["tuned"] for t in trials) == 2 and {t["seed"] for t in trials} == {1, 2}  # no tuning trial tabled
    md = (tmp_path / "store" / "tn" / "results" / "paper_table.md").read_text()
    assert "coteaching [tuned (same budget, noisy validation)]" in md
    assert (tmp_path / "store" / "tn" / "results" / "tuned.yaml").exists()
    assert "## Tuning" in (tmp_path / "store" / "tn" / "results" / "report.md").read_text()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    keys = {json.loads(data)["key"] for data in after.values()}
    for key in keys:  # HParams lists every tuning trial, its sampled settings as hyper-parameters
        events = EventAccumulator(str(tmp_path / "store" / "tn" / "tensorboard" / key))
        events.Reload()
        assert any("hparams" in tag for tag in events.Tags().get("tensors", []) + list(events.summary_metadata))
