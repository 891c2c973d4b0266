import os

import numpy as np
import pytest
import torch

from memomentum import data
from memomentum.config import ConfigError
from memomentum.data import DataError, check_files, load
from tests.conftest import write_cifar, write_idx
from tests import procs


def test_digits_is_embedded_with_a_fixed_split():
    a = load("digits")
    assert a.train_images.shape == (1437, 1, 8, 8) and a.test_images.shape == (360, 1, 8, 8)
    assert a.train_images.dtype == torch.uint8 and int(a.train_images.max()) == 255
    assert sorted(a.train_labels.unique().tolist()) == list(range(10))
    b = data._read_digits("", False)  # uncached: the split does not depend on anything but the code
    assert torch.equal(a.train_labels, b.train_labels) and torch.equal(a.test_images, b.test_images)


@pytest.mark.parametrize("kind", ["cifar10", "cifar100"])
def test_cifar_reader_on_stand_in_release_files(tmp_path, kind):
    written = write_cifar(tmp_path, kind, n_train=50, n_test=20)
    a = load(kind, str(tmp_path))
    assert a.train_images.shape == (50, 3, 32, 32) and a.test_images.shape == (20, 3, 32, 32)
    first_name = "data_batch_1" if kind == "cifar10" else "train"
    raw, labels = written[first_name]
    # the release stores each row as 1024 red, then 1024 green, then 1024 blue values (CHW order)
    assert a.train_images[0, 1, 0, 5].item() == raw[0, 1024 + 5]
    assert a.train_labels[: len(labels)].tolist() == labels


def test_mnist_reader_on_stand_in_idx_files(tmp_path):
    written = write_idx(tmp_path, "FashionMNIST", n_train=40, n_test=10)
    a = load("fashionmnist", str(tmp_path))
    assert a.train_images.shape == (40, 1, 28, 28)
    assert np.array_equal(a.train_images[:, 0].numpy(), written["train"][0])
    assert a.test_labels.tolist() == written["t10k"][1].tolist()


def test_missing_files_name_the_place_and_the_fix(tmp_path):
    with pytest.raises(DataError) as err:
        check_files("cifar10", str(tmp_path))
    msg = str(err.value)
    assert "cifar-10-batches-py/data_batch_1" in msg and str(tmp_path) in msg and "--data-root" in msg
    with pytest.raises(DataError):
        load("mnist", str(tmp_path / "nowhere"))


def test_corrupt_file_is_a_data_error(tmp_path):
    write_cifar(tmp_path, "cifar10")
    with open(os.path.join(tmp_path, "cifar-10-batches-py", "data_batch_3"), "wb") as fh:
        fh.write(b"not a pickle")
    with pytest.raises(DataError, match="could not read the cifar10 files"):
        load("cifar10", str(tmp_path))


def test_out_of_range_labels_are_a_data_error(tmp_path):
    write_cifar(tmp_path, "cifar10", num_classes=12)  # labels 10, 11 cannot be CIFAR-10
    with pytest.raises(DataError, match="outside 0..9"):
        load("cifar10", str(tmp_path))


def test_data_root_comes_from_the_environment(tmp_path, monkeypatch):
    write_idx(tmp_path, "MNIST")
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path))
    assert load("mnist").train_images.shape[0] == 40


def test_unknown_dataset_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="valid: cifar10, cifar100, clothing1m, digits, fashionmnist, mnist"):
        load("svhn")


def test_real_mnist_loads_and_download_flag_uses_local_files(mnist_root):
    a = load("mnist", mnist_root)
    assert a.train_images.shape == (60000, 1, 28, 28) and a.test_images.shape == (10000, 1, 28, 28)
    assert a.train_labels.bincount().min() > 5000
    # download=True finds the md5-verified files in place and fetches nothing
    b = data._load_cached("mnist", os.path.abspath(mnist_root), True)
    assert torch.equal(a.test_labels, b.test_labels)


class _Evil:
    """Unpickling this runs a shell command (what a plain pickle.load of a planted file would do)."""
    marker = ""

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("where", ["data", "labels", "top"])
def test_a_cifar_batch_that_would_run_code_is_refused_unrun(tmp_path, where):
    import pickle

    _Evil.marker = str(tmp_path / "ran")
    write_cifar(tmp_path, "cifar10", n_train=10, n_test=4)
    entry = {"data": np.zeros((2, 3072), dtype=np.uint8), "labels": [0, 1]}
    entry = _Evil() if where == "top" else {**entry, where: _Evil()}
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_3", "wb") as fh:
        pickle.dump(entry, fh, protocol=2)
    with pytest.raises(DataError, match="never holds"):
        load("cifar10", str(tmp_path))
    assert not (tmp_path / "ran").exists()


def test_the_sweep_preflight_reads_cifar_files_with_the_restricted_unpickler(tmp_path):
    """The driver reads the data before Ray starts: a planted batch file stops it there, unrun."""
    import pickle
    import subprocess
    import sys

    _Evil.marker = str(tmp_path / "ran")
    write_cifar(tmp_path / "data", "cifar10", n_train=10, n_test=4)
    with open(tmp_path / "data" / "cifar-10-batches-py" / "test_batch", "wb") as fh:
        pickle.dump({"data": _Evil(), "labels": [0]}, fh, protocol=2)
    grid = tmp_path / "g.yaml"
    grid.write_text(f"name: g\ndatasets: [cifar10]\nnoise: [{{type: symmetric, rates: [0.2]}}]\nseeds: [1]\n"
                    f"methods: [ce]\ndata_root: {tmp_path / 'data'}\nconfig: {{device: cpu}}\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = procs.run([sys.executable, os.path.join(root, "run_sweep.py"), str(grid), "--storage",
                      str(tmp_path / "store")], timeout=300)
    assert proc.returncode == 2 and "never holds" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "ran").exists()


def test_mnist_files_may_be_gzip_compressed_only(tmp_path):
    """torchvision's layout with only the four .gz files (what travels to a GPU machine) loads the same arrays."""
    written = write_idx(tmp_path / "plain", "MNIST", n_train=30, n_test=8, gz=True)
    (tmp_path / "gz" / "MNIST").mkdir(parents=True)
    os.rename(tmp_path / "plain" / "MNIST" / "raw", tmp_path / "gz" / "MNIST" / "raw")
    for path in (tmp_path / "gz" / "MNIST" / "raw").iterdir():
        if path.suffix != ".gz":
            path.unlink()
    data.check_files("mnist", str(tmp_path / "gz"))
    a = load("mnist", str(tmp_path / "gz"))
    assert np.array_equal(a.train_images[:, 0].numpy(), written["train"][0])
    assert np.array_equal(a.test_labels.numpy(), written["t10k"][1]) and a.test_labels.dtype == torch.int64
    raw = tmp_path / "gz" / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz"
    import gzip

    raw.write_bytes(gzip.compress(gzip.decompress(raw.read_bytes())[:-5]))  # one image cut short
    with pytest.raises(DataError, match="cut short"):
        data._read_idx_release("MNIST", "MNIST")(str(tmp_path / "gz"), False)


def test_the_idx_reader_reads_what_torchvision_reads(mnist_root):
    import torchvision.datasets as tvd

    ours = data._read_idx_release("MNIST", "MNIST")(mnist_root, False)
    theirs = tvd.MNIST(mnist_root, train=True)
    assert torch.equal(ours.train_images[:, 0], theirs.data) and torch.equal(ours.train_labels, theirs.targets)
