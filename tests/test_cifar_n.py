"""Real human label noise (SPEC §7): the CIFAR-N label files read safely, checked against the CIFAR files
found, split and reported at their exact rates; every mismatch refused in one line before training.

Uses the real label files from $MEMOMENTUM_DATA/CIFAR-N (skipped with the reason when absent) and
50,000-image CIFAR stand-ins of constant images whose labels are the file's clean_label."""
import os
import shutil
import sys

import numpy as np
import pytest
import torch

from memomentum import cifar_n
from memomentum.config import TrialConfig
from memomentum.data import DATA_ENV, DATASETS, DataError
from memomentum.errors import ConfigError
from memomentum.memory import prepare
from tests.conftest import write_cifar
from tests import procs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the label sets' noise over all 50,000 labels, as the release states them (SPEC §7)
RATES = {("cifar10", "aggre"): 0.0901, ("cifar10", "random1"): 0.1723, ("cifar10", "random2"): 0.1812,
         ("cifar10", "random3"): 0.1764, ("cifar10", "worst"): 0.4021, ("cifar100", "noisy"): 0.4020}


def label_file(dataset: str) -> str:
    path = os.path.join(os.environ.get(DATA_ENV, ""), cifar_n.FOLDER, DATASETS[dataset].human_noise.file)
    if not os.environ.get(DATA_ENV) or not os.path.isfile(path):
        pytest.skip(f"the CIFAR-N label files are not available: set {DATA_ENV} to a folder holding "
                    f"{cifar_n.FOLDER}/{DATASETS[dataset].human_noise.file} (e.g. ../shared/data)")
    return path


def stand_in(root, dataset: str, permute: bool = False) -> str:
    """A data root with a 50,000-image CIFAR stand-in whose labels are the label file's clean_label."""
    path = label_file(dataset)
    clean = cifar_n.read_file(path)["clean_label"]
    if permute:
        clean = np.roll(clean, 1)
    write_cifar(str(root), dataset, n_test=20, train_labels=clean)
    os.makedirs(os.path.join(root, cifar_n.FOLDER), exist_ok=True)
    shutil.copy(path, os.path.join(root, cifar_n.FOLDER))
    return str(root)


@pytest.fixture(scope="module")
def cifar10_root(tmp_path_factory):
    return stand_in(tmp_path_factory.mktemp("cifar10n"), "cifar10")


@pytest.fixture(scope="module")
def cifar100_root(tmp_path_factory):
    return stand_in(tmp_path_factory.mktemp("cifar100n"), "cifar100")


def config(root, dataset="cifar10", label="worst", **extra):
    return TrialConfig.from_dict({"dataset": dataset, "noise_type": "human", "noise_label": label, "data_root": root,
                                  "device": "cpu", **extra})


@pytest.mark.parametrize("label", ["aggre", "random1", "random2", "random3", "worst"])
def test_cifar10n_label_sets_give_their_exact_rates(cifar10_root, label):
    data = prepare(config(cifar10_root, label=label), torch.device("cpu"))
    file = cifar_n.read_file(os.path.join(cifar10_root, cifar_n.FOLDER, "CIFAR-10_human.pt"))
    noisy = file[DATASETS["cifar10"].human_noise.labels[label]]
    assert np.array_equal(data.noisy_labels.numpy(), noisy)  # the file's labels, unchanged
    assert data.realized_noise_rate == float((noisy != file["clean_label"]).mean())
    assert round(data.realized_noise_rate, 4) == RATES[("cifar10", label)]
    assert len(data.train_idx) == 45000 and len(data.val_idx) == 5000  # the 90/10 split stays
    again = prepare(config(cifar10_root, label=label, seed=2), torch.device("cpu"))
    assert not torch.equal(data.train_idx, again.train_idx)  # the split follows the seed, the labels do not
    assert torch.equal(data.noisy_labels, again.noisy_labels)


def test_cifar100n(cifar100_root):
    data = prepare(config(cifar100_root, "cifar100", "noisy"), torch.device("cpu"))
    assert round(data.realized_noise_rate, 4) == RATES[("cifar100", "noisy")]


def test_a_trial_runs_end_to_end_on_human_noise(cifar10_root, monkeypatch):
    """The whole trial on the stand-in, with a tiny network in place of ResNet-18 (CPU time)."""
    from memomentum import trial as trial_mod
    from memomentum.methods import make_trial

    def tiny(name, num_classes, in_channels):
        return torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(4 * in_channels, num_classes))

    monkeypatch.setattr(trial_mod, "create_model", tiny)
    for method in ("memomentum", "coteaching"):
        loops = {"max_outer": 1, "max_inner": 2} if method == "memomentum" else {}
        cfg = config(cifar10_root, label="aggre", method=method, epochs_per_stage=2, eval_batch_size=4096,
                     batch_size=1024, **loops)
        trial = make_trial(cfg)
        if method == "coteaching":
            assert trial.forget_rate == trial.data.realized_noise_rate  # the label set's own rate
        result = list(trial.records())[-1]
        assert result["kind"] == "result" and result["noise_type"] == "human"
        assert round(result["realized_noise_rate"], 4) == 0.0901 and result["epochs"] >= 1
        assert cfg.trial_name() == f"cifar10-human-aggre-s1-{method}"


def test_a_cifar_copy_whose_labels_differ_is_refused_before_training(tmp_path):
    root = stand_in(tmp_path, "cifar10", permute=True)
    with pytest.raises(DataError, match="clean_label differs from the CIFAR training labels"):
        prepare(config(root), torch.device("cpu"))
    proc = procs.run([sys.executable, "-m", "memomentum", "--dataset", "cifar10", "--noise-type", "human",
                      "--noise-label", "worst", "--data-root", root, "--device", "cpu"],
                     timeout=300, cwd=ROOT)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "misaligned" in lines[0] and "epoch" not in proc.stderr, proc.stderr


def test_the_grid_preflight_refuses_the_mismatch_before_ray(tmp_path):
    root = stand_in(tmp_path / "data", "cifar10", permute=True)
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"name: n\ndatasets: [cifar10]\nnoise: [{{type: human, labels: [aggre, worst]}}]\nseeds: [1]\n"
                    f"methods: [ce]\ndata_root: {root}\nconfig: {{device: cpu}}\n")
    proc = procs.run([sys.executable, os.path.join(ROOT, "run_sweep.py"), str(grid), "--storage",
                      str(tmp_path / "store")], timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "misaligned" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "store" / "n" / "trials").exists()  # nothing ran


def test_a_damaged_or_missing_label_file_is_refused_in_one_line(tmp_path):
    path = label_file("cifar10")
    spec = DATASETS["cifar10"].human_noise
    labels = torch.zeros(50000, dtype=torch.long)
    os.makedirs(tmp_path / cifar_n.FOLDER)
    target = tmp_path / cifar_n.FOLDER / spec.file
    with pytest.raises(DataError, match="CIFAR-N label file .* is missing"):
        cifar_n.read_labels(spec, str(tmp_path), "worst", labels, 10)
    data = open(path, "rb").read()
    for damaged in (data[: len(data) // 2], b"", b"PK\x03\x04junk"):
        target.write_bytes(damaged)
        with pytest.raises(DataError, match="is not a readable CIFAR-N label file") as err:
            cifar_n.read_labels(spec, str(tmp_path), "worst", labels, 10)
        assert "\n" not in str(err.value) and len(str(err.value)) < 400


def test_a_label_file_that_would_run_code_is_refused_unrun(tmp_path):
    """torch.load(weights_only=True) with numpy's array reconstruction allowed, nothing else."""
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    target = tmp_path / cifar_n.FOLDER / "CIFAR-10_human.pt"
    os.makedirs(target.parent)
    torch.save({"clean_label": Evil()}, str(target))
    with pytest.raises(DataError, match="is not a readable CIFAR-N label file"):
        cifar_n.read_labels(DATASETS["cifar10"].human_noise, str(tmp_path), "worst", torch.zeros(5, dtype=torch.long),
                            10)
    assert not marker.exists()


def test_label_names_and_noise_fields_are_checked():
    with pytest.raises(ConfigError, match="not a cifar10 human label set; use one of: aggre, random1"):
        TrialConfig.from_dict({"dataset": "cifar10", "noise_type": "human", "noise_label": "worse"})
    with pytest.raises(ConfigError, match="not a cifar100 human label set; use one of: noisy"):
        TrialConfig.from_dict({"dataset": "cifar100", "noise_type": "human", "noise_label": "aggre"})
    with pytest.raises(ConfigError, match="is for cifar10 and cifar100, not mnist"):
        TrialConfig.from_dict({"dataset": "mnist", "noise_type": "human", "noise_label": "aggre"})
    with pytest.raises(ConfigError, match="leave noise_rate unset"):
        TrialConfig.from_dict({"dataset": "cifar10", "noise_type": "human", "noise_label": "aggre", "noise_rate": 0.2})
    with pytest.raises(ConfigError, match="noise_label is for noise_type human"):
        TrialConfig.from_dict({"dataset": "cifar10", "noise_label": "aggre"})


def test_grid_human_noise_entries():
    from sweeps.grid import GridError, parse_grid

    base = {"name": "g", "datasets": ["cifar10", "cifar100"], "seeds": [1], "methods": ["ce", "coteaching"]}
    grid = parse_grid({**base, "noise": [{"type": "human", "labels": ["aggre", "worst", "noisy"]}]})
    names = sorted(c.name for c in grid.cells)
    assert "cifar10-human-worst-s1-coteaching" in names and "cifar100-human-noisy-s1-ce" in names
    assert len(names) == (2 + 1) * 2  # each data set takes the label sets it has
    assert all(c.config.noise_rate == 0 and c.config.differences() == {} for c in grid.cells)
    for noise, fragment in (([{"type": "human", "labels": ["wurst"]}], "belongs to none of the datasets"),
                            ([{"type": "human", "rates": [0.2]}], "give 'labels'"),
                            ([{"type": "human", "labels": ["aggre", "aggre"]}], "listed twice")):
        with pytest.raises(GridError, match=fragment):
            parse_grid({**base, "noise": noise})


def test_tables_use_the_label_set_and_the_published_cifar_n_numbers():
    import pyarrow as pa

    from sweeps import tables
    from sweeps.results import TRIALS

    rows = [{**{k: None for k in TRIALS.names}, "status": "finished", "dataset": "cifar10", "method": m,
             "noise_type": "human", "noise_rate": 0.0, "noise_label": label, "seed": s, "test_acc": acc + s}
            for m, label, acc in (("coteaching", "worst", 83.0), ("ce", "aggre", 87.0), ("memomentum", "aggre", 90.0))
            for s in (1, 2)]
    table = tables.paper_table(pa.Table.from_pylist(rows, schema=TRIALS)).to_pylist()
    by = {(r["method"], r["noise_label"]): r for r in table}
    assert by[("coteaching", "worst")]["ref_mean"] == 83.83 and by[("ce", "aggre")]["ref_std"] == 0.38
    assert by[("memomentum", "aggre")]["ref_mean"] is None  # no Me-Momentum numbers exist on CIFAR-N
    md = tables.render_markdown(tables.paper_table(pa.Table.from_pylist(rows, schema=TRIALS)))
    assert "human aggre" in md and "human worst" in md


def hostile_files():
    """(name, file content maker, the message fragment expected) for label files a careless or unlucky user may
    hold; each maker writes the file at the given path."""
    n = 50000
    clean = np.arange(n) % 10

    def save(content):
        return lambda path: torch.save(content, path)

    def zip_bomb(path):  # a few hundred bytes that claim 100 MB unpacked
        import zipfile

        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("archive/data.pkl", b"\0" * (100 * 2 ** 20))

    return [
        ("labels above the classes", save({"clean_label": clean, "worse_label": clean + 5}), "from 5 to 14, outside 0 .. 9"),
        ("negative labels", save({"clean_label": clean, "worse_label": clean - 1}), "from -1 to 8, outside 0 .. 9"),
        ("clean labels out of range", save({"clean_label": clean * 2, "worse_label": clean}), "clean_label holds labels from 0 to 18"),
        ("noisy shorter than clean", save({"clean_label": clean, "worse_label": clean[:100]}), "holds 100 labels in shape"),
        ("labels as floats", save({"clean_label": clean, "worse_label": clean.astype(np.float32)}),
         "something other than arrays of whole-number labels"),
        ("a zip that unpacks to 100 MB", zip_bomb, "unpacks to 104,857,600 bytes"),
        ("a 9 MB file", lambda path: open(path, "wb").write(b"\0" * 9_000_000), "more than a CIFAR-N label file needs"),
    ]


@pytest.mark.parametrize("name, make, fragment", hostile_files(), ids=[case[0] for case in hostile_files()])
def test_hostile_label_files_are_refused_in_one_line(tmp_path, name, make, fragment):
    spec = DATASETS["cifar10"].human_noise
    os.makedirs(tmp_path / cifar_n.FOLDER)
    make(str(tmp_path / cifar_n.FOLDER / spec.file))
    with pytest.raises(DataError) as err:
        cifar_n.read_labels(spec, str(tmp_path), "worst", torch.from_numpy(np.arange(50000) % 10), 10)
    assert fragment in str(err.value) and "\n" not in str(err.value) and len(str(err.value)) < 400


@pytest.mark.parametrize("dtype", ["int64", "int32", "uint8"])
def test_label_files_pickled_by_numpy_2_load(tmp_path, dtype):
    """A user who re-saved the file with their own (numpy 2) tools: plain integer arrays load under the same
    restricted loader, whatever their integer type."""
    spec = DATASETS["cifar10"].human_noise
    os.makedirs(tmp_path / cifar_n.FOLDER)
    clean = (np.arange(50000) % 10).astype(dtype)
    torch.save({"clean_label": clean, "worse_label": clean[::-1].copy()}, str(tmp_path / cifar_n.FOLDER / spec.file))
    noisy, _ = cifar_n.read_labels(spec, str(tmp_path), "worst", torch.from_numpy(np.arange(50000) % 10), 10)
    assert noisy.dtype == np.int64 and np.array_equal(noisy, clean[::-1])


def test_a_hostile_label_file_stops_the_cli_in_one_line(tmp_path):
    write_cifar(str(tmp_path), "cifar10", n_test=4, train_labels=np.arange(50000) % 10)
    os.makedirs(tmp_path / cifar_n.FOLDER)
    torch.save({"clean_label": np.arange(50000) % 10, "worse_label": np.arange(50000) % 10 + 3},
               str(tmp_path / cifar_n.FOLDER / "CIFAR-10_human.pt"))
    proc = procs.run([sys.executable, "-m", "memomentum", "--dataset", "cifar10", "--noise-type", "human",
                      "--noise-label", "worst", "--data-root", str(tmp_path), "--device", "cpu"],
                     timeout=300, cwd=ROOT)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "outside 0 .. 9" in proc.stderr
