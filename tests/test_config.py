import dataclasses

import pytest

from memomentum.config import ConfigError, TrialConfig, parse_assignments


@pytest.mark.parametrize("dataset, model", [("mnist", "lenet"), ("fashionmnist", "lenet"), ("cifar10", "resnet18"),
                                            ("cifar100", "resnet34"), ("digits", "digitsnet")])
def test_official_defaults_per_dataset(dataset, model):
    cfg = TrialConfig.from_dict({"dataset": dataset})
    assert cfg.model == model
    assert (cfg.lr, cfg.momentum, cfg.weight_decay, cfg.batch_size) == (0.01, 0.9, 1e-4, 128)
    assert (cfg.epochs_per_stage, cfg.options.max_outer, cfg.options.max_inner, cfg.train_fraction) == (100, 3, 20, 0.9)
    assert cfg.lr_milestones == (40, 80) and cfg.lr_gamma == 0.1
    assert cfg.val_augment and cfg.options.extract_augment and cfg.precision == "fp32"


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


# --- a method owns its settings ---------------------------------------------------------------------
def test_a_methods_settings_are_routed_to_its_options_and_written_flat():
    cfg = TrialConfig.from_dict({"dataset": "digits", "method": "jocor", "forget_rate": 0.3, "lr": 0.002})
    assert cfg.options.forget_rate == 0.3 and cfg.options.co_lambda == 0.9 and cfg.lr == 0.002
    flat = cfg.to_dict()
    assert flat["forget_rate"] == 0.3 and flat["lr"] == 0.002 and "options" not in flat
    assert TrialConfig.from_dict(flat) == cfg
    memo = TrialConfig.from_dict({"dataset": "digits"}).to_dict()
    assert "forget_rate" not in memo and "co_lambda" not in memo and memo["max_outer"] == 3


@pytest.mark.parametrize("values, fragment", [
    ({"method": "memomentum", "forget_rate": 0.3}, "'forget_rate' is a setting of coteaching, jocor, not of memomentum"),
    ({"method": "ce", "co_lambda": 0.5}, "'co_lambda' is a setting of jocor, not of ce"),
    ({"method": "jocor", "coteaching_double_mean": True}, "a setting of coteaching, not of jocor"),
    ({"method": "coteaching", "max_outer": 2}, "'max_outer' is a setting of memomentum, classwise, not of coteaching"),
    ({"method": "jocor", "co_lambda": 2.0}, "co_lambda=2.0 must lie in [0, 1]"),
    ({"method": "jocor", "forget_rate": 1.5}, "forget_rate=1.5 must lie in [0, 1)"),
    ({"method": "coteaching", "num_gradual": 0}, "num_gradual=0 must be at least 1"),
    ({"method": "memomentum", "max_inner": 0}, "max_inner=0 must be at least 1"),
    ({"method": "jocor", "forget_rate": "0.3"}, "must be a number"),
    ({"method": "memomentum", "forget_rat": 0.3}, "unknown config field 'forget_rat'"),
    # a warm-up covering the whole trial makes SFT its warm-up cross-entropy
    ({"method": "sft", "epochs_per_stage": 5}, "sft_warm_up=10 covers the whole trial of epochs_per_stage=5"),
    ({"method": "sft", "sft_warm_up": 20, "epochs_per_stage": 20}, "no epoch would filter"),
    # counts beyond what memory or a run can hold (memomentum/limits.py)
    ({"method": "selfie", "selfie_history": 10 ** 9}, "selfie_history=1000000000 is beyond the limit of 1,000"),
    ({"method": "selfie", "selfie_history": 10 ** 30}, "is beyond the limit of 1,000 predictions per example"),
    ({"method": "sft", "sft_k": 10 ** 9}, "sft_k=1000000000 is beyond the limit of 1,000 epochs"),
    ({"method": "selfie", "selfie_restarts": 10 ** 30}, "beyond the limit of 1,000 restarts"),
    ({"method": "pes", "t2": 10 ** 30}, "(31 characters) is beyond the limit of 100,000 epochs"),
    ({"method": "pes", "t3": 10 ** 6}, "t3=1000000 is beyond the limit of 100,000 epochs"),
    ({"method": "ce", "epochs_per_stage": 10 ** 30}, "epochs_per_stage=100000000"),
    ({"method": "ce", "batch_size": 10 ** 9}, "batch_size=1000000000 is beyond the limit of 1,048,576 examples"),
    ({"method": "ce", "checkpoint_every": 10 ** 9}, "checkpoint_every=1000000000 is beyond the limit"),
    ({"method": "ce", "lr_milestones": [40, 10 ** 9]}, "lr_milestones=[40, 1000000000] must be whole epochs from 1"),
    ({"method": "memomentum", "max_outer": 10 ** 9}, "max_outer=1000000000 is beyond the limit of 1,000 loops"),
    ({"method": "coteaching", "num_gradual": 10 ** 9}, "num_gradual=1000000000 is beyond the limit"),
    ({"method": "peer", "peer_warmup": 10 ** 9}, "peer_warmup=1000000000 is beyond the limit"),
    ({"method": "dmi", "dmi_epochs": 10 ** 9}, "dmi_epochs=1000000000 is beyond the limit of 100,000 epochs"),
    ({"method": "dmi", "dmi_epochs": 0}, "dmi_epochs=0 leaves no DMI epoch"),
    ({"method": "dmi", "dmi_batch_size": 10 ** 9}, "dmi_batch_size=1000000000 is beyond the limit"),
])
def test_settings_a_method_does_not_have_or_out_of_range_are_refused(values, fragment):
    with pytest.raises(ConfigError) as err:
        TrialConfig.from_dict({"dataset": "digits", **values})
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_cli_set_routes_to_the_method_and_refuses_another_methods_setting(capsys):
    from memomentum.__main__ import config_from_args, build_parser, main

    args = build_parser().parse_args(["--dataset", "digits", "--method", "coteaching", "--set", "forget_rate=0.25",
                                      "--set", "epochs_per_stage=3"])
    cfg = config_from_args(args)
    assert cfg.options.forget_rate == 0.25 and cfg.epochs_per_stage == 3
    assert main(["--dataset", "digits", "--set", "co_lambda=0.5"]) == 2
    assert "'co_lambda' is a setting of jocor, not of memomentum" in capsys.readouterr().err


def test_replace_and_stored_configs():
    cfg = TrialConfig.from_dict({"dataset": "digits", "method": "coteaching", "forget_rate": 0.1})
    assert cfg.replace(seed=3).options.forget_rate == 0.1
    assert cfg.replace(method="ce").options == TrialConfig.from_dict({"dataset": "digits", "method": "ce",
                                                                      "lr": 0.001, "weight_decay": 0.0,
                                                                      "epochs_per_stage": 200}).options
    # a trial file written before methods owned their settings held every method's fields: read leniently
    old = {**TrialConfig.from_dict({"dataset": "digits", "method": "ce"}).to_dict(), "forget_rate": -1.0,
           "co_lambda": 0.9, "decay_start": 80, "max_outer": 3, "beta": 0.45}
    assert TrialConfig.from_stored(old) == TrialConfig.from_dict({"dataset": "digits", "method": "ce"})
    with pytest.raises(ConfigError):
        TrialConfig.from_dict(old)


# Keys of cells made before methods owned their settings (read off the release before the change): a finished
# sweep keeps them, so a rerun re-runs nothing.
RELEASED_KEYS = {
    ("digits", "memomentum", "pairflip", 0.4, 1): "digits-pairflip-0.4-s1-memomentum-9ae0f45f",
    ("digits", "ce", "pairflip", 0.4, 1): "digits-pairflip-0.4-s1-ce-58a502fd",
    ("digits", "coteaching", "pairflip", 0.4, 1): "digits-pairflip-0.4-s1-coteaching-84ba19f0",
    ("cifar100", "jocor", "symmetric", 0.2, 1): "cifar100-symmetric-0.2-s1-jocor-50116477",
    ("cifar100", "coteaching", "instance", 0.4, 3): "cifar100-instance-0.4-s3-coteaching-ec4222fb",
    ("mnist", "memomentum", "instance", 0.4, 3): "mnist-instance-0.4-s3-memomentum-b8eddc33",
    ("clothing1m", "classwise", None, None, 1): "clothing1m-real-0-s1-classwise-b0da021c",
    ("clothing1m", "ce", None, None, 1): "clothing1m-real-0-s1-ce-07683346",
}


@pytest.mark.parametrize("cell", sorted(RELEASED_KEYS, key=str))
def test_keys_of_cells_made_by_the_earlier_release_are_unchanged(cell, monkeypatch):
    """At the method versions they were made with (1: before versions existed); a raised version changes them."""
    from memomentum.methods import METHODS

    for name, m in list(METHODS.items()):
        monkeypatch.setitem(METHODS, name, dataclasses.replace(m, version=1))
    dataset, method, kind, rate, seed = cell
    values = {"dataset": dataset, "method": method, "seed": seed}
    if kind:
        values.update(noise_type=kind, noise_rate=rate)
    assert TrialConfig.from_dict(values).trial_key() == RELEASED_KEYS[cell]


def test_raising_a_methods_version_changes_the_keys_of_its_trials_only(monkeypatch):
    from memomentum.methods import METHODS

    cells = {m: TrialConfig.from_dict({"dataset": "digits", "method": m}) for m in ("memomentum", "ce", "jocor")}
    before = {m: c.trial_key() for m, c in cells.items()}
    monkeypatch.setitem(METHODS, "ce", dataclasses.replace(METHODS["ce"], version=2))
    after = {m: c.trial_key() for m, c in cells.items()}
    assert after["ce"] != before["ce"] and after["ce"].startswith("digits-symmetric-0.2-s1-ce-")
    assert {m: after[m] for m in ("memomentum", "jocor")} == {m: before[m] for m in ("memomentum", "jocor")}
    assert cells["ce"].method_version() == 2 and cells["ce"].differences() == {}  # a version is not a variant


def test_import_memomentum_loads_neither_torch_nor_ray():
    import subprocess
    import sys

    code = ("import sys, memomentum; from memomentum.config import TrialConfig; "
            "print('torch' in sys.modules, 'ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.split() == ["False", "False"], out.stderr
