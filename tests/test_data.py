import os

import numpy as np
import pytest
import torch

from memomentum import data
from memomentum.config import ConfigError
from memomentum.data import DataError, check_files, load
from tests.conftest import write_cifar, write_idx


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
