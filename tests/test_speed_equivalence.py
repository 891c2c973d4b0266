"""Speed work changes no result: for a fixed model and un-augmented data, memomentum's engine and the
standard pipeline of the official code (PIL + DataLoader, per-sample scoring) give the same
validation score and the same confident set."""
import pytest
import torch

from benchmarks import standard
from memomentum import trial as trial_mod
from memomentum.config import TrialConfig
from memomentum.data import DATASETS
from memomentum.engine import Engine, sgd
from memomentum.methods import make_trial
from memomentum.models import create_model

CPU = torch.device("cpu")


def digits_case():
    cfg = TrialConfig.from_dict({"dataset": "digits", "noise_rate": 0.4, "device": "cpu"})
    d = trial_mod.prepare(cfg, CPU)
    return d.info, "digitsnet", d.images, d.noisy_labels, d.train_idx, d.val_idx, 3


def cifar_case():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (300, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (300,), generator=g)
    return DATASETS["cifar10"], "resnet18", images, labels, torch.arange(0, 300, 3), torch.arange(1, 300, 3), 0


@pytest.mark.parametrize("case", [digits_case, cifar_case], ids=["digits-digitsnet", "cifar-resnet18"])
def test_engine_and_standard_pipeline_agree_without_augmentation(case):
    info, name, images, noisy, train_idx, val_idx, train_epochs = case()
    engine = Engine(device=CPU, mean=info.mean, std=info.std, crop_padding=info.crop_padding, flip=info.flip,
                    num_classes=info.num_classes, batch_size=128, eval_batch_size=256, seed=0)
    torch.manual_seed(0)
    model = create_model(name, info.num_classes, images.shape[1])
    opt = sgd(model, 0.05, 0.9, 1e-4)
    for _ in range(train_epochs):  # a model that predicts something other than one class
        engine.train_epoch(model, opt, images, noisy, train_idx)

    plain = standard.official_transforms(info.mean, info.std, info.crop_padding, info.flip, images.shape[-1],
                                         augment=False)
    ours_val = engine.val_score(model, images, noisy, val_idx, augment=False)
    theirs_val = standard.val_score(
        model, standard.loader(images[val_idx], noisy[val_idx], plain, 256, False, 0, CPU), info.num_classes, CPU)
    assert ours_val == theirs_val

    preds_ours = engine.predict(model, images, train_idx, augment=False)
    ours_set = train_idx[preds_ours == noisy[train_idx]]  # what extract_confident computes
    preds = standard.predict(model, standard.loader(images[train_idx], noisy[train_idx], plain, 256, False, 0, CPU),
                             CPU)
    theirs_set = train_idx[torch.from_numpy(preds) == noisy[train_idx]]
    assert torch.equal(ours_set, theirs_set)
    assert 0 < len(ours_set) < len(train_idx) or name == "resnet18"


def test_compiled_model_keeps_its_state_dict_and_outputs():
    cfg = TrialConfig.from_dict({"dataset": "digits", "device": "cpu", "compile": True})
    plain_cfg = cfg.replace(compile=False)
    data = trial_mod.prepare(plain_cfg, CPU)
    compiled = make_trial(cfg, data=data).fresh_model(1)
    plain = make_trial(plain_cfg, data=data).fresh_model(1)
    assert list(compiled.state_dict()) == list(plain.state_dict())
    x = torch.randn(8, 1, 8, 8)
    torch.testing.assert_close(compiled(x), plain(x), rtol=1e-4, atol=1e-5)
