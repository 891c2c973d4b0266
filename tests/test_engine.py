import pytest
import torch
import torch.nn.functional as F

from memomentum.config import ConfigError
from memomentum.engine import Engine, batch_crop, batch_flip, class_balanced_accuracy, lr_at, resolve_device
from tests.conftest import TEST_DEVICE


def test_class_balanced_accuracy_hand_computed():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2])
    preds = torch.tensor([0, 0, 0, 1, 1, 0, 2])
    # per class: 3/4, 1/2, 1/1 -> mean 75 %; plain accuracy would be 5/7 = 71.43 %
    assert class_balanced_accuracy(preds, labels, 4) == 75.0  # class 3 absent: left out of the mean
    assert class_balanced_accuracy(torch.tensor([1, 1, 1]), torch.tensor([0, 1, 2]), 3) == 33.33


def test_batch_crop_is_a_window_of_the_zero_padded_image():
    g = torch.Generator(device=TEST_DEVICE).manual_seed(0)
    x = torch.rand(64, 3, 8, 8, device=TEST_DEVICE) + 1.0  # strictly positive, so padding (0) is recognisable
    out = batch_crop(x, 2, g)
    padded = F.pad(x, (2, 2, 2, 2))
    seen = set()
    for i in range(64):
        hits = [(dy, dx) for dy in range(5) for dx in range(5)
                if torch.equal(out[i], padded[i, :, dy:dy + 8, dx:dx + 8])]
        assert len(hits) == 1
        seen.add(hits[0])
    assert len(seen) > 15  # offsets spread over the 5 x 5 possibilities


def test_batch_flip_mirrors_about_half():
    g = torch.Generator(device=TEST_DEVICE).manual_seed(0)
    x = torch.rand(400, 1, 4, 4, device=TEST_DEVICE)
    out = batch_flip(x, g)
    flipped = torch.tensor([torch.equal(o, xi.flip(2)) for o, xi in zip(out, x)])
    kept = torch.tensor([torch.equal(o, xi) for o, xi in zip(out, x)])  # (device-independent checks)
    assert (flipped ^ kept).all()
    assert 150 < int(flipped.sum()) < 250


def test_padding_happens_before_normalisation():
    eng = Engine(device=torch.device(TEST_DEVICE), mean=(0.5,), std=(0.25,), crop_padding=4, flip=False, num_classes=10,
                 batch_size=8, eval_batch_size=8)
    x = torch.full((256, 1, 6, 6), 255, dtype=torch.uint8, device=TEST_DEVICE)
    out = eng.batch(x, augment=True)
    assert set(out.unique().tolist()) <= {(0 - 0.5) / 0.25, (1 - 0.5) / 0.25}
    assert (out == -2.0).any()  # some crops reach into the black border
    assert torch.equal(eng.batch(x, augment=False).cpu(), torch.full((256, 1, 6, 6), 2.0))


def test_lr_schedule_matches_multisteplr():
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[40, 80], gamma=0.1)
    for epoch in range(100):
        assert lr_at(epoch, 0.01, (40, 80), 0.1) == pytest.approx(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()


def test_train_epoch_learns_and_predict_needs_no_grad():
    torch.manual_seed(0)
    eng = Engine(device=torch.device(TEST_DEVICE), mean=(0.5,), std=(0.5,), crop_padding=0, flip=False, num_classes=2,
                 batch_size=16, eval_batch_size=64)
    images = torch.randint(0, 256, (64, 1, 2, 2), dtype=torch.uint8).to(TEST_DEVICE)
    labels = (images.float().mean((1, 2, 3)) > 127).long()
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)).to(TEST_DEVICE)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    idx = torch.arange(64, device=TEST_DEVICE)
    losses = [eng.train_epoch(model, opt, images, labels, idx)[0] for _ in range(30)]
    assert losses[-1] < losses[0]
    preds = eng.predict(model, images, idx, augment=False)
    assert preds.shape == (64,) and not preds.requires_grad
    assert eng.accuracy(model, images, labels) > 80


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_asking_for_a_missing_gpu_is_a_config_error():
    with pytest.raises(ConfigError, match="sees 0 GPU"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"
