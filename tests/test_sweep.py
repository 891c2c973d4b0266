"""The sweep end to end on a real local Ray instance (2 CPUs): every trial terminates, the Parquet
tables and TensorBoard event files are complete, the paper table renders, and a second run of the
same grid re-runs nothing."""
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed here (e.g. a GPU machine used for the CUDA suite)")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from sweeps import runner
from sweeps.grid import parse_grid
from tests.conftest import CLOTHING_TINY, write_clothing

TINY = {"name": "tiny", "datasets": ["digits"],
        "noise": [{"type": "symmetric", "rates": [0.4]}, {"type": "pairflip", "rates": [0.3]}],
        "seeds": [1], "methods": ["memomentum", "ce"],
        "config": {"epochs_per_stage": 2, "max_outer": 2, "max_inner": 3, "device": "cpu"}}


@pytest.fixture(scope="module")
def ray_local():
    ray.init(address="local", num_cpus=2, include_dashboard=False, **runner.ray_init_kwargs(local=True))
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def finished_sweep(ray_local, tmp_path_factory):
    storage = tmp_path_factory.mktemp("storage")
    grid = parse_grid(TINY, storage=str(storage))
    lines = []
    code = runner.run(grid, out=lines.append)
    return grid, storage, code, lines


def test_every_trial_terminates_and_tables_are_complete(finished_sweep):
    grid, storage, code, _ = finished_sweep
    assert code == 0
    results = storage / "tiny" / "results"
    trials = pq.read_table(results / "trials.parquet").to_pylist()
    assert len(trials) == 4 and {t["status"] for t in trials} == {"finished"}
    assert {t["key"] for t in trials} == {c.key for c in grid.cells}
    assert all(t["node_id"] and t["epochs"] > 0 for t in trials)
    assert {t["threads"] for t in trials} == {1}  # cpu: 1 each: one intra-op thread (memomentum/threads.py)
    rounds = pq.read_table(results / "rounds.parquet").to_pylist()
    epochs = pq.read_table(results / "epochs.parquet").to_pylist()
    for t in trials:  # the table's accuracy is the one measured at the trial's last new best (or 0 by rule)
        measured = [e["test_acc"] for e in epochs if e["key"] == t["key"] and e["test_acc"] is not None]
        assert t["test_acc"] == (measured[-1] if measured else 0.0)
    for t in trials:
        mine = [e for e in epochs if e["key"] == t["key"]]
        assert len(mine) == t["epochs"] and sorted(e["step"] for e in mine) == list(range(1, t["epochs"] + 1))
        assert len([r for r in rounds if r["key"] == t["key"]]) == t["n_rounds"] >= 1
    paper = pq.read_table(results / "paper_table.parquet").to_pylist()
    assert {(r["method"], r["noise_type"]) for r in paper} == {(m, n) for m in ("memomentum", "ce")
                                                             for n in ("symmetric", "pairflip")}
    md = (results / "paper_table.md").read_text()
    assert "| digits | memomentum [epochs_per_stage=" in md and "| digits | ce [epochs_per_stage=" in md and "n/a" in md


def test_tensorboard_has_a_validation_series_for_every_trial(finished_sweep):
    grid, storage, _, _ = finished_sweep
    trials = {t["key"]: t for t in pq.read_table(storage / "tiny" / "results" / "trials.parquet").to_pylist()}
    for cell in grid.cells:
        events = EventAccumulator(str(storage / "tiny" / "tensorboard" / cell.key))
        events.Reload()
        series = events.Scalars("val/score")
        assert [s.step for s in series] == list(range(1, trials[cell.key]["epochs"] + 1))
        assert "round/n_confident" in events.Tags()["scalars"]


def test_running_the_same_grid_again_reruns_nothing(finished_sweep):
    grid, storage, _, _ = finished_sweep
    stamps = {c.key: os.path.getmtime(storage / "tiny" / "trials" / c.key / "trial.json") for c in grid.cells}
    lines = []
    assert runner.run(grid, out=lines.append) == 0
    assert "4 already finished, 0 to run" in lines[0]
    assert stamps == {c.key: os.path.getmtime(storage / "tiny" / "trials" / c.key / "trial.json")
                      for c in grid.cells}


def test_each_trials_stored_state_holds_its_own_cell_only(finished_sweep):
    """Tune stores every trial's name and folder functions with the trial (a pickled blob in the experiment
    state): a function closing over the cell specs would store every cell in every trial, a state and a driver
    memory quadratic in the number of trials."""
    import json

    grid, storage, _, _ = finished_sweep
    states = list((storage / "tiny" / "tune").glob("run-*/experiment_state-*.json"))
    assert states
    for path in states:
        trial_data = json.loads(path.read_text())["trial_data"]
        assert len(trial_data) == len(grid.cells)
        for static, _ in trial_data:
            blobs = [static.encode()]
            for value in json.loads(static).values():
                if isinstance(value, dict) and value.get("_type") == "CLOUDPICKLE_FALLBACK":
                    blobs.append(bytes.fromhex(value["value"]))
            mine = [c.key for c in grid.cells if c.key.encode() in blobs[0]]
            assert len(mine) == 1, mine
            others = [c.key for c in grid.cells if c.key != mine[0]]
            assert not [k for k in others for b in blobs if k.encode() in b]


def test_tables_are_rebuilt_at_most_every_few_seconds_while_trials_end(monkeypatch):
    """Thousands of short trials must not spend the driver rewriting tables: trial ends within `every` seconds
    of a rebuild wait for the next step of Tune's loop after it; none is left out."""
    clock = [100.0]
    monkeypatch.setattr(runner.time, "monotonic", lambda: clock[0])

    class Trial:
        config = {"cell": "k"}

    class Counting:
        sweep, writes = "s", 0

        class store:
            @staticmethod
            def delete(*parts):
                pass

        def write(self):
            Counting.writes += 1
            clock[0] += 0.1  # a rebuild takes 0.1 s

    callback = runner.collect_callback(Counting(), {}, every=5.0)
    for _ in range(3):  # three trials end together: one rebuild
        callback.on_trial_complete(1, [], Trial())
    assert Counting.writes == 1
    clock[0] += 2.0
    callback.on_step_end(2, [])
    assert Counting.writes == 1  # nothing ended since
    callback.on_trial_complete(3, [], Trial())
    callback.on_step_end(4, [])
    assert Counting.writes == 1  # due, not yet time
    clock[0] += 3.0
    callback.on_step_end(5, [])
    assert Counting.writes == 2  # the trial that ended in between is now in the tables
    clock[0] += 10.0
    callback.on_step_end(6, [])
    assert Counting.writes == 2


def test_figures_and_report_are_written(finished_sweep):
    import matplotlib.image

    _, storage, _, _ = finished_sweep
    results = storage / "tiny" / "results"
    pngs = ["accuracy.png", "rounds_digits.png", "extraction.png"]
    for name in pngs:
        data = (results / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
        image = matplotlib.image.imread(str(results / name))
        assert image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 0  # not blank
    report = (results / "report.md").read_text()
    for name in pngs:
        assert f"]({name})" in report
    assert "| digits | memomentum [epochs_per_stage=" in report and "## Trials" in report


def test_report_flag_redraws_everything(finished_sweep):
    from run_sweep import main

    _, storage, _, _ = finished_sweep
    for name in ("accuracy.png", "report.md"):
        os.remove(storage / "tiny" / "results" / name)
    assert main(["--report", str(storage / "tiny")]) == 0
    assert (storage / "tiny" / "results" / "accuracy.png").stat().st_size > 0
    assert (storage / "tiny" / "results" / "report.md").exists()


def test_collect_rebuilds_the_tables(finished_sweep):
    from run_sweep import main

    grid, storage, _, _ = finished_sweep
    for name in ("trials.parquet", "paper_table.md"):
        os.remove(storage / "tiny" / "results" / name)
    assert main(["--collect", str(storage / "tiny")]) == 0
    assert pq.read_table(storage / "tiny" / "results" / "trials.parquet").num_rows == 4
    assert (storage / "tiny" / "results" / "paper_table.md").exists()


def test_clothing1m_runs_through_the_sweep_runner(ray_local, tmp_path):
    write_clothing(tmp_path / "release")
    raw = {"name": "cloth", "datasets": ["clothing1m"], "noise": [{"type": "real"}], "seeds": [1],
           "methods": ["classwise", "ce"], "config": CLOTHING_TINY, "data_root": str(tmp_path / "release")}
    grid = parse_grid(raw, storage=str(tmp_path / "store"))
    assert runner.run(grid, out=lambda line: None) == 0
    results = tmp_path / "store" / "cloth" / "results"
    trials = pq.read_table(results / "trials.parquet").to_pylist()
    assert {(t["method"], t["status"], t["noise_type"]) for t in trials} == {("classwise", "finished", "real"),
                                                                             ("ce", "finished", "real")}
    rounds = pq.read_table(results / "rounds.parquet").to_pylist()
    assert {r["stage"] for r in rounds if r["method"] == "classwise"} == {"C"}
    md = (results / "paper_table.md").read_text()
    assert "real noise" in md and "| clothing1m | classwise [" in md and "n/a" in md


def test_damaged_stored_state_loses_nothing(ray_local, tmp_path):
    """Cut one finished trial.json short, delete another, damage the noisy-label caches and delete the
    result tables: the same command re-runs the two cells from their checkpoints, with every epoch
    (never a 'finished' trial with missing epochs), and rebuilds the tables."""
    import json
    import shutil

    raw = {"name": "dmg", "datasets": ["digits"], "noise": [{"type": "pairflip", "rates": [0.3]}], "seeds": [1, 2],
           "methods": ["memomentum"], "config": {"epochs_per_stage": 3, "max_outer": 2, "max_inner": 3, "device": "cpu",
                                                 "checkpoint_every": 2}}
    grid = parse_grid(raw, storage=str(tmp_path))
    assert runner.run(grid, out=lambda line: None) == 0
    trials = tmp_path / "dmg" / "trials"
    cut, lost = (trials / c.key / "trial.json" for c in grid.cells)
    before = {c.key: json.loads((trials / c.key / "trial.json").read_text()) for c in grid.cells}
    cut.write_bytes(cut.read_bytes()[:500])
    lost.unlink()
    for cache in Path(os.environ["MEMOMENTUM_CACHE"], "noise").glob("*.npz"):
        cache.write_bytes(cache.read_bytes()[:100])
    shutil.rmtree(tmp_path / "dmg" / "results")

    lines = []
    assert runner.run(grid, out=lines.append) == 0
    assert any(line.startswith("warning: ") and grid.cells[0].key in line and "not valid JSON" in line for line in lines)
    assert "0 already finished, 2 to run" in "\n".join(lines)
    for cell in grid.cells:
        doc = json.loads((trials / cell.key / "trial.json").read_text())
        assert doc["status"] == "finished" and "checkpoint_" in (doc["resumed_from"] or "")
        strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]  # noqa: E731
        assert strip(doc["records"]) == strip(before[cell.key]["records"])  # all epochs, same values
    table = pq.read_table(tmp_path / "dmg" / "results" / "trials.parquet").to_pylist()
    epochs = pq.read_table(tmp_path / "dmg" / "results" / "epochs.parquet").num_rows
    assert len(table) == 2 and {t["status"] for t in table} == {"finished"}
    assert epochs == sum(t["epochs"] for t in table)


def _hparams_events(folder):
    """(hparams plugin tag -> content, scalar tag -> values) of one run folder, read with tensorboard's reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    try:
        plugin = acc.PluginTagToContent("hparams")
    except KeyError:
        plugin = {}
    scalars = {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"] if tag.startswith("hparams/")}
    return plugin, scalars


def test_tensorboard_hparams_list_every_trial_with_its_final_metrics(finished_sweep):
    from tensorboard.plugins.hparams import metadata

    grid, storage, _, _ = finished_sweep
    board = storage / "tiny" / "tensorboard"
    plugin, _ = _hparams_events(board)
    experiment = metadata.parse_experiment_plugin_data(plugin[metadata.EXPERIMENT_TAG])
    names = {h.name for h in experiment.hparam_infos}
    assert {"dataset", "noise_type", "noise_rate", "seed", "method"} <= names
    assert "noise_label" not in names  # no human noise in this sweep: no empty hyper-parameter
    assert {m.name.tag for m in experiment.metric_infos} >= {"hparams/test_acc", "hparams/last_test_acc",
                                                             "hparams/best_val_score", "hparams/seconds"}
    seeds = next(h for h in experiment.hparam_infos if h.name == "seed")
    assert sorted(v.number_value for v in seeds.domain_discrete.values) == sorted({c.config.seed for c in grid.cells})
    trials = {t["key"]: t for t in pq.read_table(storage / "tiny" / "results" / "trials.parquet").to_pylist()}
    for cell in grid.cells:
        plugin, scalars = _hparams_events(board / cell.key)
        start = metadata.parse_session_start_info_plugin_data(plugin[metadata.SESSION_START_INFO_TAG])
        assert start.hparams["method"].string_value == cell.config.method
        assert start.hparams["seed"].number_value == cell.config.seed
        assert start.hparams["noise_rate"].number_value == cell.config.noise_rate
        assert scalars["hparams/test_acc"] == [pytest.approx(trials[cell.key]["test_acc"])]  # one point, the result
        assert scalars["hparams/epochs"] == [trials[cell.key]["epochs"]]


def test_raising_a_methods_version_reruns_its_finished_cells_and_no_others(finished_sweep, tmp_path, monkeypatch):
    """A method whose version is raised (a change to what it computes) has its finished cells scheduled again on
    the next run of the grid; every other finished cell is left alone. (On a copy of the finished sweep; Tune is
    replaced by a stub that records what it is handed.)"""
    import dataclasses
    import shutil

    from memomentum.methods import METHODS

    grid, storage, _, _ = finished_sweep
    shutil.copytree(storage / "tiny", tmp_path / "tiny")
    monkeypatch.setitem(METHODS, "ce", dataclasses.replace(METHODS["ce"], version=2))
    again = parse_grid(TINY, storage=str(tmp_path))
    scheduled = []
    monkeypatch.setattr(runner, "_tune", lambda g, store, todo, *rest: scheduled.extend(todo))
    lines = []
    assert runner.run(again, out=lines.append) == 1  # the stub ran nothing: the ce cells are still to do
    assert "4 cells, 2 already finished, 2 to run" in lines[0]
    assert sorted(c.name for c in scheduled) == sorted(c.name for c in grid.cells if c.config.method == "ce")
    assert {c.key for c in again.cells if c.config.method == "memomentum"} == \
        {c.key for c in grid.cells if c.config.method == "memomentum"}


def test_a_failed_trial_keeps_its_exception_type_and_whole_message(ray_local, tmp_path):
    """A trial failing with a multi-line torch error (a weights file whose shapes do not fit): error.json holds the
    exception's type and whole message, trials.parquet and the terminal its meaningful line, never a lone '"'."""
    import json

    import torch

    weights = tmp_path / "weights.pth"
    torch.save({"conv1.weight": torch.zeros(3)}, weights)  # ResNet-50's first conv is (64, 3, 7, 7)
    grid = parse_grid({"name": "fails", "datasets": ["digits"], "noise": [{"type": "symmetric", "rates": [0.2]}],
                       "seeds": [1], "methods": ["ce"],
                       "config": {"model": "resnet50", "pretrained": True, "pretrained_weights": str(weights),
                                  "epochs_per_stage": 1, "device": "cpu"}}, storage=str(tmp_path / "store"))
    lines = []
    assert runner.run(grid, out=lines.append) == 1
    key = grid.cells[0].key
    error = json.loads((tmp_path / "store" / "fails" / "trials" / key / "error.json").read_text())
    assert error["type"] == "RuntimeError" and "size mismatch for conv1.weight" in error["message"]
    assert error["message"].startswith("Error(s) in loading state_dict") and "\n" in error["message"]
    assert error["error"].startswith("RuntimeError: Error(s) in loading state_dict") and "\n" not in error["error"]
    assert "Traceback" in error["traceback"] or "File " in error["traceback"]
    row = pq.read_table(tmp_path / "store" / "fails" / "results" / "trials.parquet").to_pylist()[0]
    assert row["status"] == "error" and row["error"] == error["error"]
    said = [line for line in lines if line.startswith("failed: ") or " FAILED " in line]
    assert said and all("RuntimeError: Error(s) in loading state_dict" in line for line in said), lines


def test_a_sweep_on_your_own_images_hands_back_the_examples_to_fix(ray_local, tmp_path):
    """A grid entry {name, path}: the cells run as any other; the tables name examples by path, each trial exports its
    model and label issues, and the consensus puts the methods side by side."""
    import torch

    from memomentum.example_data import write

    write("digits", str(tmp_path / "own"), 0.3, "pairflip", 1, limit=400)
    grid = parse_grid({"name": "own", "datasets": [{"name": "mine", "path": str(tmp_path / "own" / "manifest.csv")}],
                       "noise": [{"type": "real"}], "seeds": [1], "methods": ["memomentum", "coteaching", "ce"],
                       "config": {"epochs_per_stage": 3, "max_outer": 1, "max_inner": 2, "select_stage_a": True,
                                  "device": "cpu"}}, storage=str(tmp_path / "store"))
    assert runner.run(grid, out=lambda line: None) == 0
    results = tmp_path / "store" / "own" / "results"
    trials = pq.read_table(results / "trials.parquet").to_pylist()
    assert len(trials) == 3 and all(t["test_acc"] is not None and t["realized_noise_rate"] > 0.2 for t in trials)
    issues = pq.read_table(results / "label_issues.parquet").to_pylist()
    assert {r["method"] for r in issues} == {"memomentum", "coteaching", "ce"}
    assert all(r["example"].startswith("train/") for r in issues) and len(issues) == 3 * 360
    consensus = pq.read_table(results / "label_issues_consensus.parquet").to_pylist()
    assert len(consensus) == 360 and {r["trials"] for r in consensus} == {3}
    named = pq.read_table(results / "selections.parquet").to_pylist()
    assert named and all(r["example"].startswith("train/") for r in named)
    for cell in grid.cells:
        meta = torch.load(tmp_path / "store" / "own" / "trials" / cell.key / "model.pt", weights_only=True)
        assert meta["num_classes"] == 10 and meta["dataset"] == "mine"
