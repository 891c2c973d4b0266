"""The procedure end to end on the embedded digits, with scripted validation scores where a rule of
SPEC §3 must be pinned exactly."""
import dataclasses
import io
import json
import subprocess
import sys

import pytest
import torch

from memomentum import trial as trial_mod
from memomentum.config import ConfigError, TrialConfig
from memomentum.data import DATASETS
from memomentum.engine import Engine, state_copy
from memomentum.memory import MemoryFeed, TrialData
from memomentum.methods import make_trial, run
from memomentum.methods.ce import CETrial
from memomentum.methods.memomentum import MeMomentumTrial as Trial, extract_confident
from tests.conftest import DEVICE_CONFIG, TEST_DEVICE


def small(**kw) -> TrialConfig:
    base = {"dataset": "digits", "noise_type": "symmetric", "noise_rate": 0.3, "seed": 1, **DEVICE_CONFIG,
            "epochs_per_stage": 3}
    loops = {"max_outer": 2, "max_inner": 3} if kw.get("method", "memomentum") == "memomentum" else {}
    return TrialConfig.from_dict({**base, **loops, **kw})


@pytest.fixture(scope="module")
def digits_data():
    return trial_mod.prepare(small(), torch.device(TEST_DEVICE))


class Script:
    """A validation scorer that replays scores: stage A and stage B read separate lists."""

    def __init__(self, trial_ref, a, b, default=0.0):
        self.trial_ref, self.a, self.b, self.default = trial_ref, list(a), list(b), default

    def __call__(self, model):
        queue = self.a if self.trial_ref[0].s.inner == 0 else self.b
        return queue.pop(0) if queue else self.default


def scripted_trial(cfg, data, a, b, default=0.0):
    ref = []
    trial = Trial(cfg, data=data, scorer=Script(ref, a, b, default))
    ref.append(trial)
    return trial


def strip(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def test_slack_rule_stops_stage_a_after_exactly_20_flat_epochs(digits_data):
    cfg = small(epochs_per_stage=100, max_outer=1, max_inner=1)
    # improvements at epochs 1-3, then 20 flat epochs; 0.1 summed 20 times is 2.0000000000000004 > 2
    trial = scripted_trial(cfg, digits_data, a=[10, 20, 30], b=[], default=30)
    rounds = [r for r in trial.records() if r["kind"] == "round"]
    assert [(r["outer"], r["inner"], r["epochs"]) for r in rounds] == [(1, 0, 23)]


def test_slack_raises_the_bar_for_an_improvement(digits_data):
    cfg = small(epochs_per_stage=100, max_outer=1, max_inner=1)
    # after 5 flat epochs the bar is best + 0.5: 30.5 is not above it, 30.6 is, and resets the slack
    scores = [30] + [30] * 5 + [30.5] + [30.7] + [0] * 20
    trial = scripted_trial(cfg, digits_data, a=scores, b=[])
    epochs = [r for r in trial.records() if r["kind"] == "epoch"]
    assert [r["improved"] for r in epochs[:8]] == [True] + [False] * 6 + [True]
    assert len(epochs) == 8 + 20


def test_stage_a_gains_never_set_the_reported_test_accuracy(digits_data):
    cfg = small(max_outer=1, max_inner=3)
    trial = scripted_trial(cfg, digits_data, a=[50, 10, 10], b=[40, 45, 49])
    result = list(trial.records())[-1]
    assert result["best_val_score"] == 0.0 and result["test_acc"] == 0.0  # official rule: B must beat A's best

    assert result["best_stage"] is None

    trial = scripted_trial(small(max_outer=1, max_inner=3, select_stage_a=True), digits_data,
                           a=[50, 10, 10], b=[40, 45, 49])
    result = list(trial.records())[-1]
    assert result["best_val_score"] == 50 and result["best_stage"] == "A" and result["test_acc"] > 0

    trial = scripted_trial(cfg, digits_data, a=[50, 10, 10], b=[40, 60, 55])
    records = list(trial.records())
    measured = [r for r in records if r["kind"] == "epoch" and r["test_acc"] is not None]
    assert [(r["inner"], r["epoch"], r["val_score"]) for r in measured] == [(1, 2, 60)]
    assert records[-1]["best_val_score"] == 60 and records[-1]["test_acc"] == measured[0]["test_acc"] > 0
    assert records[-1]["best_stage"] == "B"


def test_stage_b_stops_when_a_round_does_not_improve(digits_data):
    cfg = small(max_outer=1, max_inner=20)
    # A best 50; round 1 reaches 55 (> last_round 0); round 2 reaches 56; round 3 stays <= 56 -> stop
    trial = scripted_trial(cfg, digits_data, a=[50, 0, 0], b=[55, 0, 0, 56, 0, 0, 10, 20, 30], default=0)
    rounds = [(r["outer"], r["inner"]) for r in trial.records() if r["kind"] == "round"]
    assert rounds == [(1, 0), (1, 1), (1, 2), (1, 3)]


def test_outer_loop_two_starts_a_fresh_model_on_the_last_confident_set(digits_data, monkeypatch):
    starts = []
    original = Trial._start_round

    def spy(self):
        original(self)
        if self.s.inner == 0:
            starts.append((self.s.outer, state_copy(self._model), self.s.keep))

    monkeypatch.setattr(Trial, "_start_round", spy)
    trial = Trial(small(max_outer=2, max_inner=3), data=digits_data)
    records = list(trial.records())
    rounds = [r for r in records if r["kind"] == "round"]
    last_of_outer1 = [r for r in rounds if r["outer"] == 1][-1]
    first_of_outer2 = next(r for r in rounds if r["outer"] == 2)
    assert last_of_outer1["inner"] > 0 and first_of_outer2["inner"] == 0
    assert first_of_outer2["n_confident"] == last_of_outer1["n_confident"] < len(digits_data.train_idx)
    assert all(r["n_train"] == last_of_outer1["n_confident"] for r in records
               if r["kind"] == "epoch" and r["outer"] == 2 and r["inner"] == 0)
    (o1, init1, _), (o2, init2, keep_before) = starts
    fresh2 = trial.fresh_model(2).state_dict()
    assert (o1, o2) == (1, 2)
    for name, value in init2.items():  # outer 2 begins from its own seeded init, not from `keep`
        assert torch.equal(value, fresh2[name])
    assert any(not torch.equal(init2[k], keep_before[k]) for k in init2 if init2[k].is_floating_point())
    assert any(not torch.equal(init1[k], init2[k]) for k in init1 if init1[k].is_floating_point())


def test_extraction_scans_only_the_training_split():
    """An oracle that predicts the clean label: the confident set is exactly the correctly labelled
    training-split examples, and no validation example ever enters it."""
    n = 200
    clean = torch.arange(n) % 10
    noisy = torch.where(torch.arange(n) % 3 == 0, (clean + 1) % 10, clean)
    images = clean.to(torch.uint8).view(n, 1, 1, 1)

    class Oracle(torch.nn.Module):
        def forward(self, x):  # mean 0, std 1/255 undo the /255: x is the label
            return torch.nn.functional.one_hot(x.view(-1).round().long(), 10).float()

    engine = Engine(device=torch.device("cpu"), mean=(0.0,), std=(1 / 255,), crop_padding=0, flip=False,
                    num_classes=10, batch_size=32, eval_batch_size=64)
    train_idx = torch.arange(0, n, 2)
    data = TrialData(images, noisy, clean, train_idx, torch.arange(1, n, 2), images, clean, DATASETS["digits"], 0.0, "")
    got = extract_confident(MemoryFeed(data, engine, val_augment=False), Oracle(), train_idx, augment=False)
    expected = train_idx[noisy[train_idx] == clean[train_idx]]
    assert torch.equal(got, expected)
    assert not torch.isin(got, torch.arange(1, n, 2)).any()


def test_clean_labels_never_change_a_decision(digits_data):
    cfg = small(max_outer=2, max_inner=3)
    perm = torch.randperm(len(digits_data.clean_labels), generator=torch.Generator().manual_seed(0))
    shuffled = dataclasses.replace(digits_data, clean_labels=digits_data.clean_labels[perm])
    a = strip(Trial(cfg, data=digits_data).records())
    b = strip(Trial(cfg, data=shuffled).records())
    diagnostics = {"precision", "recall", "n_hard", "hard_precision", "rounds", "final_precision", "final_recall"}
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        assert {k: v for k, v in ra.items() if k not in diagnostics} == \
               {k: v for k, v in rb.items() if k not in diagnostics}
    assert [r["precision"] for r in a if r["kind"] == "round"] != [r["precision"] for r in b if r["kind"] == "round"]


def test_confident_sets_stay_inside_the_training_split(digits_data):
    trial = Trial(small(), data=digits_data)
    for record in trial.records():
        if record["kind"] == "round":
            assert torch.isin(trial.s.confident_idx, digits_data.train_idx).all()
            assert not torch.isin(trial.s.confident_idx, digits_data.val_idx).any()


@pytest.mark.parametrize("checkpoint_every, cut", [(0, 2), (0, 5), (2, 3), (2, 8)])
def test_resume_gives_the_same_records(digits_data, checkpoint_every, cut):
    cfg = small(checkpoint_every=checkpoint_every, max_outer=2, max_inner=3)
    full = strip(Trial(cfg, data=digits_data).records())

    trial = Trial(cfg, data=digits_data)
    head, seen = [], 0
    for record in trial.records():
        head.append(record)
        if record.get("resumable"):
            seen += 1
            if seen == cut:
                buffer = io.BytesIO()
                torch.save(trial.state_dict(), buffer)
                break
    assert seen == cut, "the run offered fewer checkpoints than the test needs"
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    tail = list(Trial(cfg, data=digits_data, state=state).records())
    assert strip(head) + strip(tail) == full


def test_checkpoint_of_another_config_is_refused(digits_data):
    trial = Trial(small(), data=digits_data)
    next(r for r in trial.records() if r.get("resumable"))
    with pytest.raises(ConfigError, match="different trial configuration"):
        Trial(small(seed=2), data=digits_data, state=trial.state_dict())


def test_ce_is_one_scheduled_stage_on_all_noisy_labels(digits_data):
    cfg = small(method="ce", epochs_per_stage=4, lr_milestones=[2, 3])
    records = list(CETrial(cfg, data=digits_data).records())
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [r["lr"] for r in epochs] == pytest.approx([0.01, 0.01, 0.001, 0.0001])
    assert all(r["n_train"] == len(digits_data.train_idx) for r in epochs)
    rounds = [r for r in records if r["kind"] == "round"]
    assert len(rounds) == 1 and rounds[0]["stage"] == "ce" and rounds[0]["recall"] == 100.0
    assert records[-1]["epochs"] == 4 and records[-1]["test_acc"] > 0


def test_cli_prints_progress_and_a_final_json_line():
    proc = subprocess.run([sys.executable, "-m", "memomentum", "--dataset", "digits", "--noise-type", "pairflip",
                           "--noise-rate", "0.2", "--seed", "2", "--device", TEST_DEVICE, "--set", "epochs_per_stage=2",
                           "--set", "max_outer=1", "--set", "max_inner=2"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("test_acc", "best_val_score", "realized_noise_rate", "epochs", "seconds", "rounds"):
        assert key in result
    assert result["epochs"] == 4 and len(result["rounds"]) == 2
    assert set(result["rounds"][1]) >= {"outer", "inner", "n_confident", "precision", "recall", "n_hard",
                                        "hard_precision", "val_score"}
    assert "== round outer 1 inner 1" in proc.stderr


@pytest.mark.parametrize("args, fragment", [
    (["--dataset", "digits", "--noise-rate", "1.0"], "outside [0, 1)"),
    (["--dataset", "svhn"], "unknown dataset 'svhn'"),
    (["--dataset", "digits", "--set", "epochs=3"], "unknown config field 'epochs'"),
    (["--dataset", "digits", "--noise-type", "asymmetric"], "unknown noise_type"),
    (["--dataset", "cifar10", "--data-root", "/nonexistent"], "file(s) missing under data root"),
])
def test_cli_user_mistakes_are_one_line_and_exit_2(args, fragment):
    proc = subprocess.run([sys.executable, "-m", "memomentum", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], proc.stderr
    assert proc.stdout == ""


def test_library_does_not_import_ray():
    code = ("import sys, memomentum, memomentum.methods, memomentum.__main__; "
            "print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


def test_real_mnist_trial_smoke(mnist_root):
    cfg = TrialConfig.from_dict({"dataset": "mnist", "data_root": mnist_root, "noise_type": "instance",
                                 "noise_rate": 0.4, "device": TEST_DEVICE, "epochs_per_stage": 1, "max_outer": 1,
                                 "max_inner": 2})
    result = run(cfg)
    assert result["epochs"] == 2 and len(result["rounds"]) == 2
    assert abs(result["realized_noise_rate"] - 0.4) < 0.01
    assert 0 < result["rounds"][1]["n_confident"] < 54000


def test_cli_trial_files_feed_the_sweep_tables(tmp_path):
    """Runs made without Ray (`--sweep-dir`) produce the same trial files, so --report tabulates them."""
    import pyarrow.parquet as pq

    from run_sweep import main as sweep_main

    sweep = tmp_path / "gpu"
    for seed in (1, 2):
        proc = subprocess.run([sys.executable, "-m", "memomentum", "--dataset", "digits", "--noise-rate", "0.4",
                               "--seed", str(seed), "--device", TEST_DEVICE, "--set", "epochs_per_stage=2",
                               "--set", "max_outer=1", "--set", "max_inner=2", "--sweep-dir", str(sweep)],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert "trial file: " in proc.stderr
    assert sweep_main(["--report", str(sweep)]) == 0
    trials = pq.read_table(sweep / "results" / "trials.parquet").to_pylist()
    assert sorted(t["name"] for t in trials) == ["digits-symmetric-0.4-s1-memomentum", "digits-symmetric-0.4-s2-memomentum"]
    assert {t["status"] for t in trials} == {"finished"} and all(t["epochs"] == 4 for t in trials)
    assert pq.read_table(sweep / "results" / "epochs.parquet").num_rows == 8
    assert "2) / n/a / n/a" in (sweep / "results" / "paper_table.md").read_text()
    assert (sweep / "results" / "accuracy.png").stat().st_size > 0


@pytest.mark.parametrize("val_augment, extract_augment", [(True, True), (False, False), (True, False)])
def test_augmentation_switches_reach_validation_and_extraction(val_augment, extract_augment, monkeypatch):
    """val_augment / extract_augment really choose the transform of the validation and extraction passes,
    and extraction predicts with the kept best model of the stage (its exact weights)."""
    import memomentum.methods.memomentum as mm

    cfg = small(val_augment=val_augment, extract_augment=extract_augment, max_outer=1)
    trial = make_trial(cfg)
    seen = {"val": set(), "extract": set()}
    extracted_with = []
    predict = trial.feed.engine.predict

    def spy_predict(model, images, idx, augment):
        kind = "val" if torch.equal(idx, trial.data.val_idx) else "extract" if torch.equal(idx, trial.data.train_idx) \
            else "other"
        if kind in seen:
            seen[kind].add(augment)
        return predict(model, images, idx, augment)

    extract = mm.extract_confident

    def spy_extract(feed, model, idx, augment):
        keep = trial.s.keep
        extracted_with.append(all(torch.equal(v, keep[k]) for k, v in model.state_dict().items()))
        return extract(feed, model, idx, augment)

    monkeypatch.setattr(trial.feed.engine, "predict", spy_predict)
    monkeypatch.setattr(mm, "extract_confident", spy_extract)
    list(trial.records())
    assert seen["val"] == {val_augment} and seen["extract"] == {extract_augment}
    assert extracted_with and all(extracted_with)
