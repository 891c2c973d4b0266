"""Every user mistake: exit code 2, one line on stderr saying what is wrong and what to do, no
traceback, and the storage exactly as it was (checked on a storage that already holds a sweep)."""
import os

import pytest
import torch
import yaml

from run_sweep import main
from tests.conftest import write_cifar

GOOD = {"name": "sw", "datasets": ["digits"], "noise": [{"type": "symmetric", "rates": [0.2]}], "seeds": [1],
        "methods": ["ce"], "config": {"epochs_per_stage": 2}}


def snapshot(root):
    out = {}
    for base, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(base, name)
            st = os.stat(path)
            out[path] = (st.st_size, st.st_mtime_ns) if name in files else "dir"
    return out


@pytest.fixture
def storage(tmp_path):
    """A storage already holding sweep 'sw' (its grid and a results file)."""
    root = tmp_path / "store"
    (root / "sw" / "results").mkdir(parents=True)
    (root / "sw" / "grid.yaml").write_text(yaml.safe_dump(GOOD))
    (root / "sw" / "results" / "trials.parquet").write_bytes(b"previous results")
    return root


def check_refused(capsys, argv, fragment, root):
    before = snapshot(root)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in err
    assert snapshot(root) == before


def grid_file(tmp_path, raw, text=None):
    path = tmp_path / "grid.yaml"
    path.write_text(text if text is not None else yaml.safe_dump(raw))
    return str(path)


@pytest.mark.parametrize("change, fragment", [
    ({"shape": 1}, "unknown top-level key 'shape'"),
    ({"config": {"epochs_per_stage": 2, "lr_decay": 0.1}}, "unknown config field 'lr_decay'"),
    ({"datasets": ["imagenet"]}, "unknown dataset 'imagenet'"),
    ({"noise": [{"type": "uniform", "rates": [0.2]}]}, "unknown noise type 'uniform'"),
    ({"methods": ["dividemix"]}, "unknown method 'dividemix'"),
    ({"config": {"epochs_per_stage": 2, "model": "vit"}}, "unknown model 'vit'"),
    ({"noise": [{"type": "symmetric", "rates": [1.0]}]}, "rate 1.0 is outside [0, 1)"),
    ({"noise": [{"type": "pairflip", "rates": [-0.2]}]}, "rate -0.2 is outside [0, 1)"),
    ({"seeds": []}, "'seeds' must be a non-empty list"),
    ({"methods": []}, "'methods' must be a non-empty list"),
    ({"seeds": [1, 2.5]}, "every entry must be a whole number"),
    ({"seeds": ["one"]}, "every entry must be a whole number"),
])
def test_grid_mistakes(tmp_path, storage, capsys, change, fragment):
    check_refused(capsys, [grid_file(tmp_path, {**GOOD, **change}), "--storage", str(storage)], fragment, storage)


def test_unreadable_yaml(tmp_path, storage, capsys):
    path = grid_file(tmp_path, None, text="name: sw\nnoise: [{type: symmetric, rates: [0.2]\n")
    check_refused(capsys, [path, "--storage", str(storage)], "is not valid YAML at line", storage)


def test_missing_data_root(tmp_path, storage, capsys):
    path = grid_file(tmp_path, {**GOOD, "datasets": ["cifar10"]})
    check_refused(capsys, [path, "--storage", str(storage), "--data-root", str(tmp_path / "absent")],
                  "cifar10: 6 file(s) missing under data root", storage)


def test_data_root_without_the_dataset(tmp_path, storage, capsys):
    write_cifar(tmp_path / "data", "cifar10")  # CIFAR-10 is there, CIFAR-100 is not
    path = grid_file(tmp_path, {**GOOD, "datasets": ["cifar10", "cifar100"]})
    check_refused(capsys, [path, "--storage", str(storage), "--data-root", str(tmp_path / "data")],
                  "cifar100: 2 file(s) missing", storage)


def test_corrupt_data_file(tmp_path, storage, capsys):
    write_cifar(tmp_path / "data", "cifar10")
    with open(tmp_path / "data" / "cifar-10-batches-py" / "data_batch_2", "r+b") as fh:
        fh.truncate(100)
    path = grid_file(tmp_path, {**GOOD, "datasets": ["cifar10"]})
    check_refused(capsys, [path, "--storage", str(storage), "--data-root", str(tmp_path / "data")],
                  "could not read the cifar10 files", storage)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_gpus_that_do_not_exist(tmp_path, storage, capsys):
    path = grid_file(tmp_path, {**GOOD, "resources": {"default": {"cpu": 1, "gpu": 1}}})
    check_refused(capsys, [path, "--storage", str(storage)], "this machine has none", storage)


def test_cuda_device_without_gpu_resources(tmp_path, storage, capsys):
    path = grid_file(tmp_path, {**GOOD, "config": {"device": "cuda"}})
    check_refused(capsys, [path, "--storage", str(storage)], "resources give digits trials no GPU", storage)


def test_unwritable_storage(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    path = grid_file(tmp_path, GOOD)
    check_refused(capsys, [path, "--storage", str(blocker / "store")], "is not writable", tmp_path)


def test_name_taken_by_a_different_grid(tmp_path, storage, capsys):
    path = grid_file(tmp_path, {**GOOD, "config": {"epochs_per_stage": 3}})
    check_refused(capsys, [path, "--storage", str(storage)],
                  "already holds sweep 'sw' run with a different grid (config.epochs_per_stage differ)", storage)


def test_bad_command_line_values(tmp_path, storage, capsys):
    check_refused(capsys, [grid_file(tmp_path, GOOD), "--storage", str(storage), "--max-concurrent", "0"],
                  "--max-concurrent must be at least 1", storage)
    check_refused(capsys, [str(tmp_path / "nope.yaml"), "--storage", str(storage)], "not found", storage)
    check_refused(capsys, ["--collect", str(tmp_path / "empty")], "holds no trials/ folder", storage)


def test_cluster_without_gpus_is_refused_before_anything_is_scheduled():
    from sweeps.grid import parse_grid
    from sweeps.runner import SweepError, check_resources

    cells = parse_grid({**GOOD, "resources": {"default": {"cpu": 1, "gpu": 0.5}}}).cells
    with pytest.raises(SweepError, match="the Ray cluster has no GPU"):
        check_resources(cells, [{"CPU": 8.0}], remote=True)
    with pytest.raises(SweepError, match="no Ray node has more than 4"):
        check_resources(parse_grid({**GOOD, "resources": {"default": {"cpu": 6}}}).cells, [{"CPU": 4.0}], remote=True)
    check_resources(cells, [{"CPU": 8.0}, {"CPU": 8.0, "GPU": 1.0}], remote=True)  # fits: no error


BODY = "datasets: [digits]\nnoise: [{type: symmetric, rates: [0.2]}]\nmethods: [ce]\n"


@pytest.mark.parametrize("text, fragment", [
    # an alias bomb: nine levels of nine aliases would expand to 9**9 strings
    ("name: sw\n" + BODY + "seeds: [1]\ndescription: {a: &a [x, x, x, x, x, x, x, x, x], "
     + ", ".join(f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 9) + "]" for i in range(8))
     + "}\n", "may not use YAML aliases"),
    ("name: ../escape\n" + BODY + "seeds: [1]\n", "name '../escape' must be a word"),
    ("name: a/b\n" + BODY + "seeds: [1]\n", "name 'a/b' must be a word"),
    ("name: /tmp/abs\n" + BODY + "seeds: [1]\n", "name '/tmp/abs' must be a word"),
    ("name: has space\n" + BODY + "seeds: [1]\n", "name 'has space' must be a word"),
    ("name: ''\n" + BODY + "seeds: [1]\n", "name '' must be a word"),
    (BODY + "seeds: [1]\n", "name None must be a word"),
    ("name: sw\n" + BODY + "seeds: [1180591620717411303424]\n", "every seed must be a whole number in 0 .. 4294967295"),
    ("name: sw\n" + BODY + "seeds: [-1]\n", "'seeds' holds -1; every seed must be a whole number in 0 .."),
    ("name: sw\n" + BODY + "seeds: [true]\n", "'seeds' holds True; every entry must be a whole number"),
    ("name: sw\n" + BODY + "seeds: [3, 3]\n", "'seeds' holds 3 more than once"),
    ("name: sw\ndatasets: [digits]\nnoise: [{type: symmetric, rates: ['0.2']}]\nmethods: [ce]\nseeds: [1]\n",
     "rate '0.2' is not a number"),
    ("name: sw\ndatasets: [digits]\nnoise: [{type: symmetric, rates: [.nan]}]\nmethods: [ce]\nseeds: [1]\n",
     "rate nan is outside [0, 1)"),
    ("name: sw\ndatasets: [digits]\nnoise: [{type: symmetric, rates: [.inf]}]\nmethods: [ce]\nseeds: [1]\n",
     "rate inf is outside [0, 1)"),
    ("- name: sw\n- datasets: [digits]\n", "a grid must be a YAML mapping"),
    ("", "a grid must be a YAML mapping"),
    ("name: sw\n" + BODY + "seeds: [1]\nresources: {default: {cpu: .nan}}\n", "resources.default.cpu = nan"),
    ("name: sw\n" + BODY + "seeds: [1]\nresources: {default: {gpu: .nan}}\n", "resources.default.gpu = nan"),
    ("name: sw\n" + BODY + "seeds: [1]\nconfig: {lr: .nan}\n", "'lr' must be a finite number, got nan"),
    ("name: sw\n" + BODY + "seeds: [1]\nconfig: {momentum: .inf}\n", "'momentum' must be a finite number, got inf"),
    ("name: sw\n" + BODY + "seeds: [1]\nconfig: {train_fraction: 0.0001}\n", "leaves no training examples of the 1437"),
    ("name: sw\n" + BODY + "seeds: [1]\nconfig: {device: 'cuda:-1'}\n", "device='cuda:-1' is not one of"),
    ("name: sw\n" + BODY + "seeds: [1]\ndescription: " + "x" * 100000 + "\n" + "y" * 900 + ": 1\n",
     "unknown top-level key 'yyyy"),  # a huge value shown in a message is cut short
])
def test_hostile_grid_files(tmp_path, storage, capsys, text, fragment):
    path = grid_file(tmp_path, None, text=text)
    check_refused(capsys, [path, "--storage", str(storage)], fragment, tmp_path)  # nothing written anywhere
    assert len(capsys.readouterr().err) < 1000


def test_grid_that_is_a_folder_or_binary(tmp_path, storage, capsys):
    folder = tmp_path / "grid-folder.yaml"
    folder.mkdir()
    check_refused(capsys, [str(folder), "--storage", str(storage)], "is a folder", storage)
    binary = tmp_path / "grid.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    check_refused(capsys, [str(binary), "--storage", str(storage)], "is not a text file", storage)
    nul = tmp_path / "nul.yaml"
    nul.write_bytes(b"name: sw\x00\x01\n")
    check_refused(capsys, [str(nul), "--storage", str(storage)], "is not valid YAML", storage)


@pytest.mark.parametrize("args, fragment", [
    (["--set", "batch_size=0"], "batch_size=0 must be at least 1"),
    (["--set", "batch_size=-1"], "batch_size=-1 must be at least 1"),
    (["--set", "lr=nan"], "'lr' must be a finite number, got nan"),
    (["--set", "momentum=inf"], "'momentum' must be a finite number, got inf"),
    (["--set", "epochs_per_stage=0"], "epochs_per_stage=0 must be at least 1"),
    (["--set", "train_fraction=0"], "must lie strictly between 0 and 1"),
    (["--set", "train_fraction=1"], "must lie strictly between 0 and 1"),
    (["--set", "train_fraction=0.0001"], "leaves no training examples of the 1437"),
    (["--set", "max_outer=0"], "max_outer=0 must be at least 1"),
    (["--set", "device=cuda:99"], "device='cuda:99' but this machine sees"),
    (["--set", "device=cuda:-1"], "device='cuda:-1' is not one of auto, cpu, cuda, cuda:N"),
    (["--set", "device=cuda:abc"], "device='cuda:abc' is not one of"),
    (["--device", "tpu"], "device='tpu' is not one of"),
    (["--set", "precision=fp8"], "unknown precision 'fp8'"),
    (["--set", "epochs_per_stage"], "must look like key=value"),
    (["--set", "epochs_per_stage=" + "9" * 5000], "is not a valid int"),
    (["--seed", "-1"], "seed=-1 is outside 0 .. 4294967295"),
    (["--seed", str(2 ** 64)], "seed=18446744073709551616 is outside"),
])
def test_hostile_trial_options(capsys, args, fragment):
    from memomentum.__main__ import main as trial_main

    code = trial_main(["--dataset", "digits", *args])
    out, err = capsys.readouterr()
    assert code == 2 and out == "", err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], err
    assert len(lines[0]) < 400
