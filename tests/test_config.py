import dataclasses

import pytest

from memomentum.config import ConfigError, TrialConfig, parse_assignments


@pytest.mark.parametrize("dataset, model", [("mnist", "lenet"), ("fashionmnist", "lenet"), ("cifar10", "resnet18"),
                                            ("cifar100", "resnet34"), ("digits", "digitsnet")])
def test_official_defaults_per_dataset(dataset, model):
    cfg = TrialConfig.from_dict({"dataset": dataset})
    assert cfg.model == model
    assert (cfg.lr, cfg.momentum, cfg.weight_decay, cfg.batch_size) == (0.01, 0.9, 1e-4, 128)
    assert (cfg.epochs_per_stage, cfg.max_outer, cfg.max_inner, cfg.train_fraction) == (100, 3, 20, 0.9)
    assert cfg.lr_milestones == (40, 80) and cfg.lr_gamma == 0.1
    assert cfg.val_augment and cfg.extract_augment and cfg.precision == "fp32"


def test_config_is_frozen_and_round_trips():
    cfg = TrialConfig.from_dict({"dataset": "mnist", "noise_rate": 0.4, "lr_milestones": [10, 20]})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 0.1
    assert TrialConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.replace(seed=2).config_hash() != cfg.config_hash()
    assert cfg.replace(device="cpu").config_hash() == cfg.config_hash()  # execution-only field


@pytest.mark.parametrize("values, fragment", [
    ({"dataset": "mnist", "epochs": 5}, "unknown config field 'epochs'"),
    ({"dataset": "mnist", "learning_rate": 0.1}, "valid:"),
    ({"dataset": "mnist", "epochs_per_stage": "5"}, "must be a whole number"),
    ({"dataset": "mnist", "epochs_per_stage": 5.0}, "must be a whole number"),
    ({"dataset": "mnist", "noise_rate": True}, "must be a number"),
    ({"dataset": "mnist", "val_augment": 1}, "must be true or false"),
    ({"dataset": "mnist", "noise_rate": 1.0}, "outside [0, 1)"),
    ({"dataset": "mnist", "noise_rate": -0.1}, "outside [0, 1)"),
    ({"dataset": "mnsit"}, "did you mean 'mnist'"),
    ({"dataset": "mnist", "noise_type": "asym"}, "unknown noise_type"),
    ({"dataset": "mnist", "method": "coteachng"}, "unknown method"),
    ({"dataset": "mnist", "model": "vgg"}, "unknown model"),
    ({"dataset": "mnist", "precision": "fp16"}, "unknown precision"),
    ({"dataset": "mnist", "train_fraction": 1.0}, "strictly between"),
    ({"dataset": "mnist", "max_outer": 0}, "at least 1"),
    ({"dataset": "mnist", "device": "tpu"}, "device='tpu'"),
])
def test_bad_values_are_rejected_with_a_clear_message(values, fragment):
    with pytest.raises(ConfigError) as err:
        TrialConfig.from_dict(values)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_parse_assignments_types_values():
    got = parse_assignments(["epochs_per_stage=5", "val_augment=false", "lr=0.1", "lr_milestones=10,20",
                             "precision=bf16"])
    assert got == {"epochs_per_stage": 5, "val_augment": False, "lr": 0.1, "lr_milestones": (10, 20),
                   "precision": "bf16"}
    for bad in (["epochs_per_stage=five"], ["nonsense=1"], ["lr"], ["val_augment=maybe"]):
        with pytest.raises(ConfigError):
            parse_assignments(bad)


def test_config_hash_only_sees_settings_that_differ_from_the_official_ones():
    official = TrialConfig.from_dict({"dataset": "mnist"})
    assert official.config_hash() == TrialConfig.from_dict({"dataset": "mnist", "lr": 0.01}).config_hash()
    assert official.config_hash() != TrialConfig.from_dict({"dataset": "fashionmnist"}).config_hash()
    assert official.config_hash() != official.replace(lr=0.02).config_hash()
    clothing = TrialConfig.from_dict({"dataset": "clothing1m"})
    assert clothing.config_hash() != clothing.replace(lr=0.01).config_hash()  # 0.01 is not clothing's default
