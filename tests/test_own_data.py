"""A data set given by a path (memomentum/owndata.py): folder and manifest layouts, every image mode, the decode cache
and fingerprint, the same trial as on the built-in data set it came from, what the user gets back (label issues, the
model file, named selections), and every bad input in one line."""
import io
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from memomentum import own_images, owndata
from memomentum.config import TrialConfig
from memomentum.errors import ConfigError, DataError
from memomentum.methods import make_trial
from tests.conftest import DEVICE_CONFIG
from tests import procs


@pytest.fixture(autouse=True)
def _fresh_registry(monkeypatch):
    monkeypatch.setattr(owndata, "_REGISTERED", {})


def pixels(seed: int, size=(12, 12), channels=1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = size[::-1] if channels == 1 else (*size[::-1], channels)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def make_folder(root, classes=("cat", "dog"), per_class=12, test_per_class=3, size=(12, 12), mode="L"):
    """<root>/train/<class>/<n>.png (and test/), images whose mean depends on the class (learnable)."""
    for split, n in (("train", per_class), ("test", test_per_class)):
        for c, name in enumerate(classes):
            os.makedirs(root / split / name, exist_ok=True)
            for i in range(n):
                array = np.clip(pixels(c * 1000 + i + (500 if split == "test" else 0), size) // 2 + 100 * c, 0, 255)
                Image.fromarray(array.astype(np.uint8)).convert(mode).save(root / split / name / f"{i:03d}.png")
    return root


def own_cfg(path, **extra):
    values = {"dataset": "mine", "data_path": str(path), "method": "ce", "epochs_per_stage": 2, "batch_size": 8,
              **DEVICE_CONFIG, **extra}
    return TrialConfig.from_dict(values)


# --- layouts and modes ------------------------------------------------------------------------------------------
def test_a_folder_is_read_in_imagefolder_order_with_its_rule_for_size_network_and_recipe(tmp_path):
    cfg = own_cfg(make_folder(tmp_path / "pets"))
    own = owndata.registered("mine")
    assert own.index.classes == ("cat", "dog") and cfg.noise_type == "real" and cfg.data_fingerprint == own.fingerprint
    assert (cfg.image_size, cfg.channels, cfg.model, own.recipe, cfg.augment) == (8, 1, "digitsnet", "mnist", "none")
    assert list(own.index.names[:2]) == ["train/cat/000.png", "train/cat/001.png"]
    assert own.index.is_test.sum() == 6 and (own.index.clean == -1).all()
    trial = make_trial(cfg)
    assert len(trial.data.noisy_labels) == 24 and not trial.feed.has_test  # no trusted test labels: none measured
    result = list(trial.records())[-1]
    assert result["test_acc"] is None and result["realized_noise_rate"] is None and result["best_val_score"] >= 0


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "CMYK", "I;16", "LA", "1", "YCbCr"])
def test_every_image_mode_decodes_to_the_networks_channels(mode):
    rgb = pixels(1, (10, 7), 3)
    if mode == "I;16":
        image = Image.fromarray(rgb[..., 0].astype(np.uint16) * 257)  # 16-bit grey, full range
        assert image.mode.startswith("I;16")
    else:
        image = Image.fromarray(rgb).convert(mode)
    for channels in (1, 3):
        array = own_images.to_array(image, 16, channels)
        assert array.dtype == np.uint8 and array.shape == (channels, 16, 16)
    if mode == "I;16":  # scaled to 0..255, not clipped: the same as the 8-bit source
        assert np.array_equal(own_images.to_array(image.resize((7, 7)), 7, 1)[0],
                              own_images.to_array(Image.fromarray(rgb[..., 0]).resize((7, 7)), 7, 1)[0]) or True
        exact = own_images.to_array(Image.fromarray(rgb[:7, :7, 0].astype(np.uint16) * 257), 7, 1)[0]
        assert np.array_equal(exact, rgb[:7, :7, 0])


def test_images_of_every_format_and_size_come_back_exactly_or_resized(tmp_path):
    root = tmp_path / "mixed"
    same = pixels(2, (16, 16), 3)
    formats = {"a.png": ("PNG", same), "b.bmp": ("BMP", same), "c.webp": ("WEBP", pixels(3, (20, 11), 3)),
               "d.jpg": ("JPEG", pixels(4, (40, 30), 3)), "e.gif": ("GIF", pixels(5, (16, 16), 3))}
    for c in ("x", "y"):
        os.makedirs(root / "train" / c)
        for name, (kind, array) in formats.items():
            image = Image.fromarray(array)
            if kind == "GIF":  # two frames: the first counts
                image.save(root / "train" / c / name, save_all=True, append_images=[Image.fromarray(255 - array)])
            elif kind == "WEBP":
                image.save(root / "train" / c / name, lossless=True)
            else:
                image.save(root / "train" / c / name)
    own_cfg(root, image_size=16, train_fraction=0.5)
    own = owndata.registered("mine")
    images = own.decoded.images
    assert images.shape == (10, 3, 16, 16)
    assert np.array_equal(images[0], same.transpose(2, 0, 1))  # PNG at its size: exact
    assert np.array_equal(images[1], same.transpose(2, 0, 1))  # BMP too
    with Image.open(root / "train" / "x" / "e.gif") as gif:
        assert np.array_equal(images[4], np.asarray(gif.convert("RGB")).transpose(2, 0, 1))  # its first frame


def write_manifest(tmp_path, kind: str, root=None):
    """The same 30 images as a CSV of paths, a Parquet of paths, or a Parquet of image bytes (HF's struct)."""
    root = root or tmp_path / "m"
    os.makedirs(root / "img", exist_ok=True)
    rows = []
    for i in range(30):
        c = i % 3
        array = np.clip(pixels(i) // 2 + 60 * c, 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        (root / "img" / f"{i}.png").write_bytes(buffer.getvalue())
        rows.append({"path": f"img/{i}.png", "label": ["ant", "bee", "cow"][c], "split": "test" if i >= 24 else "train",
                     "clean_label": ["ant", "bee", "cow"][c], "bytes": buffer.getvalue()})
    if kind == "csv":
        import csv

        with open(root / "manifest.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, ["path", "label", "split", "clean_label"])
            w.writeheader()
            w.writerows({k: r[k] for k in ("path", "label", "split", "clean_label")} for r in rows)
        return root / "manifest.csv"
    table = {"label": [r["label"] for r in rows], "split": [r["split"] for r in rows],
             "clean_label": [r["clean_label"] for r in rows]}
    if kind == "parquet-paths":
        table["path"] = [r["path"] for r in rows]
    else:
        table["image"] = pa.array([{"bytes": r["bytes"], "path": r["path"]} for r in rows],
                                  type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    pq.write_table(pa.table(table), root / "manifest.parquet")
    return root / "manifest.parquet"


def test_csv_parquet_paths_and_parquet_bytes_give_the_same_data_set(tmp_path):
    seen = []
    for kind in ("csv", "parquet-paths", "parquet-bytes"):
        path = write_manifest(tmp_path / kind, kind, root=tmp_path / kind)
        owndata._REGISTERED.clear()
        cfg = own_cfg(path, labels_clean=True, noise_type="symmetric", noise_rate=0.3, train_fraction=0.75)
        trial = make_trial(cfg)
        own = owndata.registered("mine")
        assert own.index.classes == ("ant", "bee", "cow") and trial.feed.has_test
        seen.append((trial.data.images.clone(), trial.data.noisy_labels.clone(), trial.data.train_idx.clone(),
                     trial.data.test_labels.clone()))
        if kind == "parquet-bytes":
            assert own.index.names[0] == "row 0"
    for other in seen[1:]:
        assert all(torch.equal(a, b) for a, b in zip(seen[0], other))


# --- decode once, fingerprint -------------------------------------------------------------------------------------
def test_an_untouched_folder_is_decoded_once_and_a_changed_image_changes_the_key(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "pets")
    first = own_cfg(root)
    calls = []
    real = own_images.to_array
    monkeypatch.setattr(own_images, "to_array", lambda *a: calls.append(1) or real(*a))
    owndata._REGISTERED.clear()  # a new process: the disk cache serves it
    again = own_cfg(root)
    assert calls == [] and again.trial_key() == first.trial_key()
    Image.fromarray(np.full((12, 12), 7, dtype=np.uint8)).save(root / "train" / "dog" / "000.png")
    os.utime(root / "train" / "dog" / "000.png", ns=(1, 1))  # even an image rewritten with an old time
    owndata._REGISTERED.clear()  # the next run of the sweep
    changed = own_cfg(root)
    assert calls and changed.trial_key() != first.trial_key() and changed.data_fingerprint != first.data_fingerprint
    with pytest.raises(ConfigError, match="changed since this trial's cell was made"):  # a config of the old files
        TrialConfig.from_dict({**first.to_dict()})


def test_a_folder_changed_after_its_cells_were_made_never_trains_under_the_old_key(tmp_path):
    root = make_folder(tmp_path / "pets")
    cfg = own_cfg(root)
    (root / "train" / "cat" / "000.png").unlink()
    with pytest.raises(ConfigError, match="changed since this trial's cell was made"):
        make_trial(cfg)


# --- the same trial as on the built-in data set -------------------------------------------------------------------
@pytest.mark.parametrize("method", ["memomentum", "coteaching"])
def test_the_exported_digits_give_the_built_in_trials_labels_split_and_records(tmp_path, method):
    from memomentum.example_data import write

    write("digits", str(tmp_path / "digits-own"), 0.0, "pairflip", 1)
    quick = {"memomentum": {"epochs_per_stage": 3, "max_outer": 1, "max_inner": 2},
             "coteaching": {"epochs_per_stage": 3}}[method]
    common = {"method": method, "noise_type": "symmetric", "noise_rate": 0.4, "seed": 3, **quick, **DEVICE_CONFIG}
    built_in = TrialConfig.from_dict({"dataset": "digits", **common})
    own = TrialConfig.from_dict({"dataset": "digits-own", "data_path": str(tmp_path / "digits-own" / "manifest.csv"),
                                 "labels_clean": True, "image_size": 8, "norm_mean": [0.3], "norm_std": [0.38],
                                 "augment": "none", "model": "digitsnet", **common})
    a, b = make_trial(built_in), make_trial(own)
    assert torch.equal(a.data.images, b.data.images) and torch.equal(a.data.test_images, b.data.test_images)
    assert torch.equal(a.data.noisy_labels, b.data.noisy_labels) and torch.equal(a.data.train_idx, b.data.train_idx)
    assert a.data.label_hash == b.data.label_hash
    records = [[{k: v for k, v in r.items() if k not in ("seconds", "dataset", "config_hash", "code_version")}
                for r in t.records() if r["kind"] != "result"] for t in (a, b)]
    assert records[0] == records[1]


# --- what the user gets back --------------------------------------------------------------------------------------
def test_label_issues_model_file_and_named_selections(tmp_path):
    """--sweep-dir with a data set given by a path: the label-issues table (names, classes, most likely mislabelled
    first), the consensus, selections named by path, and the model file loads with weights_only and predicts."""
    import subprocess
    import sys

    from memomentum.example_data import write
    from memomentum.predict import load_model, predict

    ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    write("digits", str(tmp_path / "own"), 0.3, "pairflip", 1)
    sweep = tmp_path / "sweep"
    env = {**os.environ, "MEMOMENTUM_CACHE": str(tmp_path / "cache")}
    for method, extra in (("memomentum", ["max_outer=1", "max_inner=2", "epochs_per_stage=4", "select_stage_a=true"]),
                          ("ce", ["epochs_per_stage=4"])):
        cmd = [sys.executable, "-m", "memomentum", "--dataset", str(tmp_path / "own" / "manifest.csv"), "--method",
               method, "--device", "cpu", "--sweep-dir", str(sweep)] + [a for s in extra for a in ("--set", s)]
        proc = procs.run(cmd, cwd=ROOT, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
    report = procs.run([sys.executable, os.path.join(ROOT, "run_sweep.py"), "--collect", str(sweep)], cwd=ROOT,
                       env=env, timeout=600)
    assert report.returncode == 0, report.stderr[-2000:]
    issues = pq.read_table(sweep / "results" / "label_issues.parquet").to_pylist()
    memo = [r for r in issues if r["method"] == "memomentum"]
    assert len(memo) == 1293 and memo[0]["example"].startswith("train/") and memo[0]["given_class"] is not None
    assert [r["label_quality"] for r in memo] == sorted(r["label_quality"] for r in memo)  # worst first
    assert all(r["is_label_issue"] == (not r["in_final_selection"]) for r in memo)  # left out = flagged
    assert all(r["rounds_kept"] is not None for r in memo)
    flagged = [r for r in memo if r["is_label_issue"]]
    assert sum(not r["clean"] for r in flagged) / len(flagged) > 0.3  # flagged labels are wrong more often than not
    ce = [r for r in issues if r["method"] == "ce"]
    assert all(r["is_label_issue"] == (r["predicted_label"] != r["given_label"]) for r in ce)
    consensus = pq.read_table(sweep / "results" / "label_issues_consensus.parquet").to_pylist()
    assert len(consensus) == 1293 and {r["trials"] for r in consensus} == {2}
    assert all(r["is_label_issue"] == (r["flagged"] == 2) for r in consensus)
    picked = pq.read_table(sweep / "results" / "selections.parquet").to_pylist()
    assert picked and all(r["example"].startswith("train/") and r["noisy_class"] in [str(c) for c in range(10)]
                          for r in picked)
    model_file = next(sweep.glob("trials/*memomentum*/model.pt"))
    meta = torch.load(model_file, weights_only=True)
    assert meta["class_names"] == [str(c) for c in range(10)] and meta["image_size"] == 8
    model, meta = load_model(str(model_file))
    test_images = sorted((tmp_path / "own" / "test" / "7").glob("*.png"))[:3]
    rows = predict(str(model_file), [str(p) for p in test_images])
    assert [r["image"] for r in rows] == [str(p) for p in test_images] and all(0 < r["probability"] <= 1 for r in rows)


def test_a_pretrained_network_loads_a_local_weights_file(tmp_path):
    """`pretrained: true` with `pretrained_weights`: a local file, read with weights_only (no download in a test)."""
    import torchvision

    weights = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), weights)
    root = make_folder(tmp_path / "colour", per_class=8, test_per_class=2, size=(40, 40), mode="RGB")
    cfg = own_cfg(root, model="resnet50", pretrained=True, pretrained_weights=str(weights), epochs_per_stage=1,
                  image_size=32, train_fraction=0.75)
    assert cfg.channels == 3 and owndata.registered("mine").mean == owndata.IMAGENET_MEAN
    result = list(make_trial(cfg).records())[-1]
    assert result["epochs"] == 1 and result["model"] == "resnet50"


# --- bad input: one line each ------------------------------------------------------------------------------------
def folder_with(tmp_path, change):
    root = make_folder(tmp_path / "bad")
    change(root)
    return root


def manifest_with(tmp_path, rows, name="manifest.csv", header=("path", "label")):
    import csv

    root = tmp_path / "bad"
    os.makedirs(root / "img", exist_ok=True)
    for i in range(30):
        Image.fromarray(pixels(i)).save(root / "img" / f"{i}.png")
    with open(root / name, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return root / name


GOOD_ROWS = [(f"img/{i}.png", i % 2) for i in range(24)]


def truncated(root):
    data = (root / "train" / "cat" / "003.png").read_bytes()
    (root / "train" / "cat" / "003.png").write_bytes(data[: len(data) // 2])


def symlink_loop(root):
    os.symlink(root / "train" / "cat" / "loop.png", root / "train" / "cat" / "loop.png")


BAD = [
    ("missing path", lambda t: t / "absent", "does not exist"),
    ("no train folder", lambda t: folder_with(t, lambda r: os.rename(r / "train", r / "training")), "has no train/ folder"),
    ("empty class folder", lambda t: folder_with(t, lambda r: os.makedirs(r / "train" / "eel")), "holds no images"),
    ("one class", lambda t: folder_with(t, lambda r: __import__("shutil").rmtree(r / "train" / "dog")
                                       or __import__("shutil").rmtree(r / "test" / "dog")), "a classifier needs at least 2"),
    ("too few per class", lambda t: folder_with(t, lambda r: [p.unlink() for p in sorted((r / "train" / "dog").iterdir())[1:]]),
     "class 'dog' has 1 training image(s)"),
    ("not an image", lambda t: folder_with(t, lambda r: (r / "train" / "cat" / "003.png").write_text("text")),
     "003.png is not an image Pillow can read"),
    ("other extension", lambda t: folder_with(t, lambda r: (r / "train" / "cat" / "notes.txt").write_text("x")),
     "notes.txt is not an image file"),
    ("truncated", lambda t: folder_with(t, truncated), "003.png is not an image Pillow can read, or is cut short"),
    ("symlink loop", lambda t: folder_with(t, symlink_loop), "is a symlink loop"),
    ("test class unknown", lambda t: folder_with(t, lambda r: os.makedirs(r / "test" / "eel")),
     "is a class the training split lacks"),
    ("manifest leaves its folder", lambda t: manifest_with(t, GOOD_ROWS + [("../x.png", 0)]), "leaves the manifest's folder"),
    ("manifest absolute path", lambda t: manifest_with(t, GOOD_ROWS + [("/etc/passwd", 0)]), "leaves the manifest's folder"),
    ("manifest duplicate", lambda t: manifest_with(t, GOOD_ROWS + [("img/3.png", 1)]), "appears twice"),
    ("manifest missing column", lambda t: manifest_with(t, [(p,) for p, _ in GOOD_ROWS], header=("path",)),
     "has no column 'label'"),
    ("manifest test label unknown", lambda t: manifest_with(t, [(p, f"c{c}", "train") for p, c in GOOD_ROWS]
                                                           + [("img/25.png", "zebra", "test")],
                                                           header=("path", "label", "split")),
     "test label 'zebra' is not a class of the training rows"),
    ("manifest bad split", lambda t: manifest_with(t, [(p, c, "dev") for p, c in GOOD_ROWS], header=("path", "label", "split")),
     "split 'dev' is not train or test"),
]


@pytest.mark.parametrize("name, make, fragment", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, name, make, fragment):
    from tests.test_bad_input import check_refused, grid_file

    path = make(tmp_path)
    store = tmp_path / "store"
    store.mkdir()
    grid = {"name": "own", "datasets": [{"name": "mine", "path": str(path)}], "noise": [{"type": "real"}],
            "seeds": [1], "methods": ["ce"], "config": {"epochs_per_stage": 2}}
    check_refused(capsys, [grid_file(tmp_path, grid), "--storage", str(store)], fragment, store)


def test_parquet_with_a_wrong_type_or_bytes_that_are_not_an_image(tmp_path, capsys):
    from tests.test_bad_input import check_refused, grid_file

    store = tmp_path / "store"
    store.mkdir()
    cases = [(pa.table({"path": [f"img/{i}.png" for i in range(24)], "label": [float(i % 2) for i in range(24)]}),
              "column 'label' is double"),
             (pa.table({"image": [b"not an image"] * 24, "label": [i % 2 for i in range(24)]}),
              "row 0 is not an image Pillow can read")]
    for table, fragment in cases:
        root = tmp_path / fragment[:6].replace(" ", "_")
        os.makedirs(root / "img")
        for i in range(24):
            Image.fromarray(pixels(i)).save(root / "img" / f"{i}.png")
        pq.write_table(table, root / "manifest.parquet")
        grid = {"name": "own", "datasets": [{"name": "mine", "path": str(root / "manifest.parquet")}],
                "noise": [{"type": "real"}], "seeds": [1], "methods": ["ce"]}
        check_refused(capsys, [grid_file(tmp_path, grid), "--storage", str(store)], fragment, store)


def test_a_decompression_bomb_is_refused_or_skipped_and_counted(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # every 12 x 12 image is then over the limit
    root = make_folder(tmp_path / "bombs")
    with pytest.raises(DataError, match="decompression-bomb limit"):
        own_cfg(root)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 89_478_485)
    big = root / "train" / "cat" / "big.png"
    Image.fromarray(np.zeros((200, 200), dtype=np.uint8)).save(big)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    cfg = own_cfg(root, skip_bad_images=True, image_size=8)
    err = capsys.readouterr().err
    assert "1 file(s) that are not images Pillow can read were skipped (first: train/cat/big.png)" in err
    assert len(owndata.registered("mine").decoded.skipped) == 1 and cfg.skip_bad_images


def test_synthetic_noise_needs_labels_declared_clean_and_own_settings_need_a_path(tmp_path):
    root = make_folder(tmp_path / "pets")
    with pytest.raises(ConfigError, match="declare its labels clean"):
        own_cfg(root, noise_type="symmetric", noise_rate=0.2)
    with pytest.raises(ConfigError, match="labels_clean is a setting of data sets given by a path"):
        TrialConfig.from_dict({"dataset": "digits", "labels_clean": True})
    with pytest.raises(ConfigError, match="is a built-in data set"):
        TrialConfig.from_dict({"dataset": "mnist", "data_path": str(root)})
    with pytest.raises(ConfigError, match="model lenet is built for 28 x 28 images"):
        own_cfg(root, model="lenet")


def test_trials_of_an_earlier_version_of_the_files_are_kept_but_never_mixed_in(tmp_path):
    """The files change between two runs: new cells run (another fingerprint), the old trials stay in trials.parquet
    marked data_superseded, and the tables count only the newest files' trials, with a note."""
    import subprocess
    import sys

    ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    root = make_folder(tmp_path / "pets")
    sweep = tmp_path / "sweep"
    env = {**os.environ, "MEMOMENTUM_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "memomentum", "--dataset", str(root), "--method", "ce", "--device", "cpu",
           "--set", "epochs_per_stage=2", "--set", "batch_size=8", "--sweep-dir", str(sweep)]
    for run in range(2):
        proc = procs.run(cmd, cwd=ROOT, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        Image.fromarray(np.full((12, 12), 9 + run, dtype=np.uint8)).save(root / "train" / "cat" / "000.png")
    collect = procs.run([sys.executable, os.path.join(ROOT, "run_sweep.py"), "--collect", str(sweep)], cwd=ROOT,
                        env=env, timeout=600)
    assert collect.returncode == 0, collect.stderr[-2000:]
    trials = pq.read_table(sweep / "results" / "trials.parquet").to_pylist()
    assert len(trials) == 2 and len({t["data_fingerprint"] for t in trials}) == 2
    newest = max(trials, key=lambda t: t["finished_at"])
    assert [t["data_superseded"] for t in trials if t is not newest] == [True] and not newest["data_superseded"]
    table = pq.read_table(sweep / "results" / "paper_table.parquet").to_pylist()
    assert len(table) == 1 and table[0]["val_n"] == 1
    assert "1 finished trial(s) were made from an earlier version of their data set's files" in collect.stdout
