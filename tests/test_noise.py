import numpy as np
import pytest
import torch

from memomentum import noise
from memomentum.data import load


@pytest.mark.parametrize("kind", ["symmetric", "pairflip"])
@pytest.mark.parametrize("c", [2, 10, 100])
def test_transition_rows_sum_to_one(kind, c):
    t = noise.transition_matrix(kind, 0.3, c)
    np.testing.assert_allclose(t.sum(1), 1.0)
    np.testing.assert_allclose(np.diag(t), 0.7)
    assert (t >= 0).all()


def test_pairflip_moves_only_to_the_next_class():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 20000)
    noisy = noise.class_conditional_noise(y, "pairflip", 0.4, 10, np.random.default_rng(1))
    flipped = noisy != y
    assert (noisy[flipped] == (y[flipped] + 1) % 10).all()
    assert abs(flipped.mean() - 0.4) < 0.01


def test_symmetric_spreads_flips_uniformly():
    y = np.zeros(50000, dtype=np.int64)
    noisy = noise.class_conditional_noise(y, "symmetric", 0.45, 10, np.random.default_rng(2))
    shares = np.bincount(noisy, minlength=10) / len(y)
    assert abs(shares[0] - 0.55) < 0.01
    np.testing.assert_allclose(shares[1:], 0.05, atol=0.005)


def test_truncated_normal_stays_in_range_and_centred():
    q = noise.truncated_normal(0.4, 0.1, 20000, np.random.default_rng(0))
    assert q.min() >= 0 and q.max() <= 1
    assert abs(q.mean() - 0.4) < 0.005
    q_edge = noise.truncated_normal(0.95, 0.1, 20000, np.random.default_rng(0))
    assert q_edge.max() <= 1 and q_edge.mean() < 0.95  # truncation pulls the mean inwards


def test_instance_noise_follows_the_generator():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4000, 1, 6, 6), dtype=np.uint8)
    y = rng.integers(0, 5, 4000)
    noisy = noise.instance_noise(images, y, 0.3, 5, np.random.default_rng(3))
    assert abs((noisy != y).mean() - 0.3) < 0.03
    # raw 0..255 scores make softmax(s) nearly one-hot: each example has a favourite wrong class,
    # so the flips of one class concentrate on a few targets instead of spreading uniformly
    assert noise.make_noisy_labels("instance", 0.0, y, images, 5, 1).tolist() == y.tolist()


@pytest.mark.parametrize("kind", noise.NOISE_TYPES)
def test_seed_reproduces_and_differs(kind):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3000, 1, 4, 4), dtype=np.uint8)
    y = rng.integers(0, 10, 3000)
    a = noise.make_noisy_labels(kind, 0.4, y, images, 10, seed=7)
    b = noise.make_noisy_labels(kind, 0.4, y, images, 10, seed=7)
    c = noise.make_noisy_labels(kind, 0.4, y, images, 10, seed=8)
    assert (a == b).all() and (a != c).any()


def test_split_is_seeded_disjoint_and_complete():
    tr, va = noise.split(1000, 0.9, seed=1)
    assert len(tr) == 900 and len(va) == 100
    assert np.intersect1d(tr, va).size == 0 and np.union1d(tr, va).size == 1000
    tr2, _ = noise.split(1000, 0.9, seed=1)
    tr3, _ = noise.split(1000, 0.9, seed=2)
    assert (tr == tr2).all() and (tr != tr3).any()


def test_noise_is_injected_before_the_split():
    """Validation labels are noisy too: the realised rate on the validation part is near the target."""
    labels = torch.from_numpy(np.random.default_rng(0).integers(0, 10, 20000))
    images = torch.zeros(20000, 1, 2, 2, dtype=torch.uint8)
    ns = noise.noisy_split("toy", "symmetric", 0.4, 1, 0.9, labels, images, 10)
    val_rate = (ns.noisy_labels[ns.val_idx] != labels[ns.val_idx]).float().mean().item()
    assert abs(val_rate - 0.4) < 0.04


def test_noisy_split_is_cached_and_keyed_by_the_data(monkeypatch):
    labels = torch.from_numpy(np.random.default_rng(0).integers(0, 10, 500))
    images = torch.zeros(500, 1, 2, 2, dtype=torch.uint8)
    first = noise.noisy_split("toy", "pairflip", 0.2, 3, 0.9, labels, images, 10)

    def boom(*a, **k):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(noise, "make_noisy_labels", boom)
    again = noise.noisy_split("toy", "pairflip", 0.2, 3, 0.9, labels, images, 10)
    assert torch.equal(first.noisy_labels, again.noisy_labels) and first.label_hash == again.label_hash
    with pytest.raises(AssertionError, match="recomputed"):  # other labels under the same name: new key
        noise.noisy_split("toy", "pairflip", 0.2, 3, 0.9, (labels + 1) % 10, images, 10)


@pytest.mark.parametrize("kind", noise.NOISE_TYPES)
@pytest.mark.parametrize("rate", [0.2, 0.4])
def test_realised_rate_on_real_mnist_is_within_one_point(mnist_root, kind, rate):
    arrays = load("mnist", mnist_root)
    ns = noise.noisy_split("mnist", kind, rate, 1, 0.9, arrays.train_labels, arrays.train_images, 10)
    assert len(ns.noisy_labels) == 60000
    assert abs(ns.realized_noise_rate - rate) < 0.01, ns.realized_noise_rate


def test_split_sizes_are_checked_before_anything_runs():
    from memomentum.errors import ConfigError

    assert noise.check_split(1437, 0.9) == 1293
    with pytest.raises(ConfigError, match="leaves no training examples of the 1437"):
        noise.check_split(1437, 0.0001)
    with pytest.raises(ConfigError, match="leaves no training examples of the 1 in"):
        noise.check_split(1, 0.9)
    assert noise.check_split(10, 0.95) == 9  # one validation example is few, but a split


@pytest.mark.parametrize("damage", ["half", "empty", "zip-header", "foreign"])
def test_a_damaged_label_cache_is_recomputed_and_replaced(tmp_path, damage):
    labels = torch.from_numpy(np.random.default_rng(0).integers(0, 10, 500))
    images = torch.zeros(500, 1, 2, 2, dtype=torch.uint8)
    first = noise.noisy_split("toy", "symmetric", 0.3, 4, 0.9, labels, images, 10, cache_dir=str(tmp_path))
    (path,) = (tmp_path / "noise").glob("*.npz")
    good = path.read_bytes()
    damaged = {"half": good[: len(good) // 2], "empty": b"", "zip-header": b"PK\x03\x04" + b"junk" * 50,
               "foreign": None}[damage]
    if damaged is None:  # a valid archive holding labels of another data set size
        np.savez(path, noisy=np.zeros(7, dtype=np.int64), train_idx=np.arange(5), val_idx=np.arange(5, 7))
    else:
        path.write_bytes(damaged)
    again = noise.noisy_split("toy", "symmetric", 0.3, 4, 0.9, labels, images, 10, cache_dir=str(tmp_path))
    assert torch.equal(again.noisy_labels, first.noisy_labels) and again.label_hash == first.label_hash
    assert path.read_bytes() == good  # replaced by the recomputed file
    assert [p.name for p in (tmp_path / "noise").iterdir()] == [path.name]  # no temporary file left


def test_instance_noise_depends_on_the_image_and_symmetric_noise_does_not():
    """The same labels, seed and rate with other images: instance noise flips other examples to other
    classes (a class-level generator such as symmetric noise would give identical labels), and within a
    class the targets concentrate on a few classes instead of spreading uniformly."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4000, 1, 6, 6), dtype=np.uint8)
    other = rng.integers(0, 256, (4000, 1, 6, 6), dtype=np.uint8)
    y = rng.integers(0, 5, 4000)
    a = noise.make_noisy_labels("instance", 0.3, y, images, 5, seed=4)
    b = noise.make_noisy_labels("instance", 0.3, y, other, 5, seed=4)
    assert (a != b).mean() > 0.1
    sym = [noise.make_noisy_labels("symmetric", 0.3, y, imgs, 5, seed=4) for imgs in (images, other)]
    assert np.array_equal(*sym)
    flips = (a != y)
    for c in range(5):  # per example a favourite wrong class: far from uniform over the 4 wrong classes
        targets = np.bincount(a[flips & (y == c)], minlength=5)
        assert targets.max() > 1.5 * targets.sum() / 4
