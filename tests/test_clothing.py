"""Clothing1M: the official annotation layout on a stand-in release, the class-wise variant of
SPEC §4 pinned on scripted cases, and runs end to end (CLI; the sweep runner is in test_sweep.py)."""
import io
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from memomentum import clothing1m, stream
from memomentum.methods.classwise import (ClassWiseTrial as ClothingTrial, class_scores, per_class_stats,
                                          select_classwise, update_best)
from memomentum.trial import class_weights
from memomentum.config import ConfigError, TrialConfig
from memomentum.data import DataError, check_files, load
from tests.conftest import CLOTHING_TINY, write_clothing


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("clothing1m")
    write_clothing(root)
    return str(root)


def tiny(root, **kw):
    return TrialConfig.from_dict({"dataset": "clothing1m", "method": "classwise", "data_root": root, **CLOTHING_TINY,
                                  **kw})


def test_official_clothing_defaults():
    cfg = TrialConfig.from_dict({"dataset": "clothing1m"})
    assert (cfg.model, cfg.noise_type, cfg.lr, cfg.weight_decay, cfg.batch_size) == ("resnet50", "real", 0.005, 1e-3, 32)
    assert (cfg.epochs_per_stage, cfg.options.max_outer, cfg.options.max_inner, cfg.lr_milestones) == (5, 3, 6, (10, 20))
    assert cfg.pretrained and cfg.options.beta == 0.45 and cfg.image_size == 256
    with pytest.raises(ConfigError, match="real label noise"):
        TrialConfig.from_dict({"dataset": "clothing1m", "noise_type": "symmetric"})
    with pytest.raises(ConfigError, match="leave noise_rate unset"):
        TrialConfig.from_dict({"dataset": "clothing1m", "noise_rate": 0.3})
    with pytest.raises(ConfigError, match="only for data sets collected with noisy labels"):
        TrialConfig.from_dict({"dataset": "mnist", "noise_type": "real"})


def test_index_from_the_official_annotation_files(release, monkeypatch):
    index = load("clothing1m", release)
    assert len(index.train_keys) == 56 and len(index.val_keys) == 28 and len(index.test_keys) == 28
    assert index.train_keys[0].startswith(b"images/") and os.path.isfile(os.path.join(release, index.train_keys[0].decode()))
    known = index.train_clean >= 0
    assert known.sum() == 28 and (index.train_noisy[known] != index.train_clean[known]).any()
    assert sorted(set(index.val_labels.tolist())) == list(range(14))

    def boom(path):
        raise AssertionError("re-parsed although cached")

    monkeypatch.setattr(clothing1m, "_read_kv", boom)
    again = clothing1m.read_index(release)  # the cached index, no parsing
    assert np.array_equal(again.train_noisy, index.train_noisy)


def test_broken_releases_are_data_errors(tmp_path):
    write_clothing(tmp_path / "a")
    os.remove(tmp_path / "a" / "annotations" / "clean_val_key_list.txt")
    with pytest.raises(DataError, match="annotations/clean_val_key_list.txt"):
        check_files("clothing1m", str(tmp_path / "a"))
    write_clothing(tmp_path / "b")
    with open(tmp_path / "b" / "annotations" / "noisy_train_key_list.txt", "a") as fh:
        fh.write("images/9/99/unknown.jpg\n")
    with pytest.raises(DataError, match="has no label in"):
        clothing1m.read_index(str(tmp_path / "b"))
    splits = write_clothing(tmp_path / "c")
    os.remove(tmp_path / "c" / splits["test"][-1])
    with pytest.raises(DataError, match="is missing under"):
        clothing1m.read_index(str(tmp_path / "c"))


def test_per_class_recall_precision_and_beta_score():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])
    preds = torch.tensor([0, 0, 1, 1, 1, 1, 0, 0])
    acc, recall, precision = per_class_stats(preds, labels, 4)
    assert acc == 50.0
    np.testing.assert_array_equal(recall[:3], [50.0, 100.0, 0.0])
    np.testing.assert_array_equal(precision[:3], [50.0, 50.0, np.nan])  # class 2 is never predicted
    assert math.isnan(recall[3]) and math.isnan(precision[2])
    scores = class_scores(recall, precision, 0.45)
    assert scores[0] == pytest.approx(0.45 * 50 + 0.55 * 50) and scores[1] == pytest.approx(0.45 * 100 + 0.55 * 50)
    assert math.isnan(scores[2])
    _, r, p = per_class_stats(torch.tensor([0, 0, 1]), torch.tensor([0, 1, 1]), 2)
    assert r.tolist() == [100.0, 50.0] and p.tolist() == [50.0, 100.0]  # rounded to 2 decimals: 33.33 etc.
    _, r, _ = per_class_stats(torch.tensor([0, 1, 1]), torch.tensor([0, 0, 0]), 1 + 1)
    assert r[0] == 33.33


def test_best_model_per_class_needs_a_strict_gain_and_ignores_nan():
    best, refs = np.zeros(3), [None, None, None]
    assert update_best(best, refs, np.array([10.0, np.nan, 5.0]), "e1")
    assert refs == ["e1", None, "e1"]
    assert update_best(best, refs, np.array([10.0, 3.0, 6.0]), "e2")  # tie on class 0 keeps e1
    assert refs == ["e1", "e2", "e2"] and best.tolist() == [10.0, 3.0, 6.0]
    assert not update_best(best, refs, np.array([1.0, 1.0, np.nan]), "e3")


def test_class_weights_follow_the_official_formula():
    train, val = np.array([10, 30, 20]), np.array([5.0, 5.0, 20.0])
    w = class_weights(train, val)
    expected = np.mean(train) / train * val / np.mean(val)
    np.testing.assert_allclose(w, expected)
    assert class_weights(np.array([0, 10]), np.array([1.0, 1.0]))[0] == 0.0


def test_classwise_selection_uses_the_best_model_of_each_class():
    noisy = np.array([0, 0, 1, 1, 2, 2, 0])
    refs = ["m1", "m2", "m1"]  # m1 is best for classes 0 and 2, m2 for class 1
    predictions = {"m1": {0: 0, 1: 2, 4: 2, 5: 0, 6: 0}, "m2": {2: 1, 3: 0}}
    asked = []

    def predict(ref, idx):
        asked.append((ref, idx.tolist()))
        return np.array([predictions[ref][i] for i in idx])

    chosen = select_classwise(noisy, refs, predict)
    assert chosen.tolist() == [0, 2, 4, 6]
    assert sorted(i for _, idx in asked for i in idx) == list(range(7))  # every example predicted once
    assert select_classwise(noisy, [None, None, None], predict).size == 0


def strip(records):
    return [{k: v for k, v in r.items() if k not in ("seconds", "resumable")} for r in records]


def test_clothing_trial_end_to_end_and_resume(release):
    cfg = tiny(release, checkpoint_every=0)
    records = list(ClothingTrial(cfg).records())
    rounds = [r for r in records if r["kind"] == "round"]
    assert [(r["outer"], r["inner"], r["stage"]) for r in rounds] == [(1, 1, "C"), (1, 2, "C"), (2, 1, "C"), (2, 2, "C")]
    assert rounds[0]["n_confident"] == 56 and rounds[1]["n_confident"] <= 56
    result = records[-1]
    assert result["epochs"] == 4 and result["best_val_score"] > 0
    measured = [r for r in records if r["kind"] == "epoch" and r["test_acc"] is not None]
    assert measured and result["test_acc"] == measured[-1]["test_acc"]  # taken at the last new best
    assert result["best_val_score"] == measured[-1]["val_score"] == max(r["val_score"] for r in records
                                                                        if r["kind"] == "epoch")
    assert result["realized_noise_rate"] == pytest.approx(
        (lambda i: float((i.train_noisy[i.train_clean >= 0] != i.train_clean[i.train_clean >= 0]).mean()))(
            load("clothing1m", release)))

    trial = ClothingTrial(cfg)
    head = []
    for record in trial.records():
        head.append(record)
        if record["kind"] == "round" and record["inner"] == 1 and record["outer"] == 2:
            buffer = io.BytesIO()
            torch.save(trial.state_dict(), buffer)
            break
    buffer.seek(0)
    tail = list(ClothingTrial(cfg, state=torch.load(buffer, weights_only=True)).records())
    assert strip(head) + strip(tail) == strip(records)


def test_missing_weights_file_fails_before_training(release):
    with pytest.raises(ConfigError, match="pretrained_weights file .* not found"):
        ClothingTrial(tiny(release, pretrained=True, pretrained_weights="/nowhere/resnet50.pth"))


def test_local_weights_file_initialises_the_backbone(release, tmp_path):
    import torchvision

    source = torchvision.models.resnet50(weights=None)
    path = tmp_path / "resnet50.pth"
    torch.save(source.state_dict(), path)
    trial = ClothingTrial(tiny(release, pretrained=True, pretrained_weights=str(path)))
    model = trial.fresh_model(1)
    assert torch.equal(model.conv1.weight, source.conv1.weight) and model.fc.out_features == 14


def test_cli_runs_clothing1m(release):
    sets = [x for k, v in CLOTHING_TINY.items() for x in ("--set", f"{k}={str(v).lower()}")]
    proc = subprocess.run([sys.executable, "-m", "memomentum", "--dataset", "clothing1m", "--data-root", release,
                           "--seed", "2", *sets], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["dataset"] == "clothing1m" and result["noise_type"] == "real" and len(result["rounds"]) == 4
    for key in ("test_acc", "best_val_score", "realized_noise_rate", "epochs", "seconds"):
        assert key in result
    assert "== round outer 1 inner 1 (C" in proc.stderr


def test_release_without_clean_training_labels_runs_to_its_result(tmp_path):
    """In the real release most training images have no clean label; with none at all, precision,
    recall and the realised noise rate are unknown: null in the JSON, n/a in progress lines."""
    write_clothing(tmp_path, clean_train=False)
    sets = [x for k, v in CLOTHING_TINY.items() for x in ("--set", f"{k}={str(v).lower()}")]
    proc = subprocess.run([sys.executable, "-m", "memomentum", "--dataset", "clothing1m", "--data-root", str(tmp_path),
                           "--log-every", "1", *sets], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["realized_noise_rate"] is None and len(result["rounds"]) == 4 and result["epochs"] == 4
    assert all(r["precision"] is None and r["recall"] is None for r in result["rounds"])
    assert result["final_precision"] is None and result["best_val_score"] > 0
    assert "realised noise n/a" in proc.stderr and "precision n/a%  recall n/a%" in proc.stderr
    assert "Traceback" not in proc.stderr and "NaN" not in proc.stdout


def test_dataloader_workers_follow_the_cpus(release, monkeypatch):
    assert [stream.auto_workers(c) for c in (0.5, 1, 2, 3.5, 16)] == [0, 0, 2, 3, 8]
    assert TrialConfig.from_dict({"dataset": "clothing1m"}).num_workers == -1  # auto by default
    monkeypatch.setattr(stream, "available_cpus", lambda: 3)
    assert ClothingTrial(tiny(release, num_workers=-1)).feed.workers == 3
    assert ClothingTrial(tiny(release, num_workers=1)).feed.workers == 1
    with pytest.raises(ConfigError, match="num_workers=-2"):
        tiny(release, num_workers=-2)


def test_compile_leaves_the_live_network_alone_when_the_selection_predicts(release, monkeypatch):
    """With compile: true every network slot is one compiled module; the selection's scratch network has its
    own slot, so loading a stored class-best state never overwrites the live network mid outer loop. (compile is
    a no-op stand-in here: the slots behave as with torch.compile, the records must equal an uncompiled run.)"""
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: None)
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("seconds", "resumable", "config_hash")} for r in rs]  # noqa: E731
    plain = list(ClothingTrial(tiny(release, max_outer=1, max_inner=3)).records())
    compiled = list(ClothingTrial(tiny(release, max_outer=1, max_inner=3, compile=True)).records())
    assert strip(compiled) == strip(plain)
