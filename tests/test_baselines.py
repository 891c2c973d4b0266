"""The small-loss baselines (SPEC §6): the schedules of the reference main.py files, the kept count, the
cross update of Co-teaching and the joint-loss selection of JoCoR on scripted losses, and the loop
that ties them together. (Running, recording and resuming: tests/test_methods.py, from the registry.)"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from memomentum.config import TrialConfig
from memomentum.methods import METHODS, make_trial
from memomentum.methods.coteaching import coteaching_loss
from memomentum.methods.jocor import jocor_loss
from memomentum.methods.small_loss import adam_plan, forget_schedule, kept_count, resolved_forget_rate
from tests.conftest import DEVICE_CONFIG

TINY = {"dataset": "digits", "noise_type": "symmetric", "noise_rate": 0.4, "seed": 3, **DEVICE_CONFIG,
        "epochs_per_stage": 5, "num_gradual": 3, "decay_start": 2}


def test_forget_rate_schedule_is_the_references_linspace():
    rates = forget_schedule(0.4, 200, 10, 1)
    assert len(rates) == 200 and rates[0] == 0.0
    assert np.allclose(rates[:10], np.arange(10) * 0.4 / 9)  # linspace(0, 0.4, 10): epoch 9 already at 0.4
    assert (rates[10:] == 0.4).all()
    # c = 2: the ramp ends at forget_rate ** 2, then the rate jumps to forget_rate (as the references)
    squared = forget_schedule(0.4, 20, 5, 2)
    assert np.isclose(squared[4], 0.16) and squared[5] == 0.4
    assert np.allclose(forget_schedule(0.2, 4, 10, 1), np.linspace(0, 0.2, 10)[:4])  # ramp longer than the run


def test_adam_plan_decays_linearly_and_switches_beta1():
    alpha, beta1 = adam_plan(0.001, 200, 80)
    assert alpha[:80] == [0.001] * 80 and beta1[:80] == [0.9] * 80
    assert alpha[80] == 0.001 and np.isclose(alpha[140], 0.001 * 60 / 120) and np.isclose(alpha[199], 0.001 / 120)
    assert beta1[80:] == [0.1] * 120


@pytest.mark.parametrize("rate, batch, kept", [(0.0, 128, 128), (0.2, 128, 102), (0.4, 128, 76), (0.45, 128, 70),
                                               (0.4, 7, 4), (0.999, 128, 1)])
def test_kept_count_per_batch(rate, batch, kept):
    assert kept_count(rate, batch) == kept


def _scripted(ce_values, num_classes=4):
    """Logits whose cross-entropy against label 0 is exactly ce_values (one row per example)."""
    rows = []
    for ce in ce_values:
        # p(label) = exp(-ce); spread the rest evenly over the other classes
        p0 = float(np.exp(-ce))
        p = [p0] + [(1 - p0) / (num_classes - 1)] * (num_classes - 1)
        rows.append(np.log(p))
    return torch.tensor(np.array(rows), dtype=torch.float32, requires_grad=True)


def test_coteaching_updates_each_network_on_what_the_other_kept():
    ce1 = [0.1, 2.0, 0.3, 3.0, 0.2, 1.5]  # network 1 keeps 0, 4, 2
    ce2 = [2.5, 0.1, 0.2, 0.3, 3.0, 1.0]  # network 2 keeps 1, 2, 3
    logits1, logits2 = _scripted(ce1), _scripted(ce2)
    labels = torch.zeros(6, dtype=torch.long)
    loss, keep1, keep2 = coteaching_loss(logits1, logits2, labels, 3)
    assert set(keep1.tolist()) == {0, 2, 4} and set(keep2.tolist()) == {1, 2, 3}
    assert np.isclose(loss.item(), np.mean([ce1[i] for i in (1, 2, 3)]) + np.mean([ce2[i] for i in (0, 2, 4)]),
                      atol=1e-5)
    loss.backward()
    rows1 = set(torch.nonzero(logits1.grad.abs().sum(1)).flatten().tolist())
    rows2 = set(torch.nonzero(logits2.grad.abs().sum(1)).flatten().tolist())
    assert rows1 == {1, 2, 3}  # network 1 learns from network 2's picks
    assert rows2 == {0, 2, 4}  # and vice versa
    double, _, _ = coteaching_loss(logits1, logits2, labels, 3, double_mean=True)
    assert np.isclose(double.item(), loss.item() / 3)  # the reference's extra division, as an option


def test_jocor_selects_by_the_joint_loss_and_updates_both_networks():
    torch.manual_seed(0)
    labels = torch.zeros(6, dtype=torch.long)
    logits1 = torch.randn(6, 4, requires_grad=True)
    logits2 = logits1.detach().clone()
    with torch.no_grad():
        logits1[0] = torch.tensor([6.0, 0, 0, 0])  # confident and right ...
        logits2[0] = torch.tensor([0.0, 6, 0, 0])  # ... but the networks disagree: a large KL
    logits2.requires_grad_(True)
    for lam in (0.0, 0.9):
        p1, p2 = F.softmax(logits1, 1), F.softmax(logits2, 1)
        ce = F.cross_entropy(logits1, labels, reduction="none") + F.cross_entropy(logits2, labels, reduction="none")
        kl = (p2 * (p2.log() - p1.log())).sum(1) + (p1 * (p1.log() - p2.log())).sum(1)
        joint = ((1 - lam) * ce + lam * kl).detach()
        loss, keep = jocor_loss(logits1, logits2, labels, 3, lam)
        assert set(keep.tolist()) == set(torch.argsort(joint)[:3].tolist())
        assert np.isclose(loss.item(), joint[keep].mean().item(), atol=1e-5)
    assert 0 not in keep.tolist()  # at lambda 0.9 the disagreement on example 0 rules it out
    logits1.grad = logits2.grad = None
    loss.backward()
    for grad in (logits1.grad, logits2.grad):  # one selection, both networks learn from it
        assert set(torch.nonzero(grad.abs().sum(1)).flatten().tolist()) == set(keep.tolist())


@pytest.mark.parametrize("method", ["coteaching", "jocor"])
@pytest.mark.parametrize("noise_type, rate", [("symmetric", 0.2), ("symmetric", 0.4), ("pairflip", 0.2),
                                              ("pairflip", 0.4), ("pairflip", 0.45), ("instance", 0.2),
                                              ("instance", 0.4)])
def test_the_forget_rate_is_the_full_noise_rate_for_every_noise_type(method, noise_type, rate):
    """The references' rule (SPEC §6, corrected): forget_rate = the noise rate, pair-flip included; JoCoR's
    algorithm/jocor.py halves it only for its own `asymmetric` class-map noise, which this project lacks. Once
    ramped up (epoch >= Tk - 1), a batch of 128 keeps int((1 - rate) * 128): 102 / 76 / 70 at 0.2 / 0.4 / 0.45."""
    cfg = TrialConfig.from_dict({**TINY, "method": method, "noise_type": noise_type, "noise_rate": rate})
    resolved = resolved_forget_rate(cfg.options, cfg.noise_type, cfg.noise_rate)
    assert resolved == rate
    schedule = forget_schedule(resolved, 200, 10, 1)
    assert all(kept_count(float(r), 128) == int((1 - rate) * 128) for r in schedule[9:])
    assert kept_count(float(schedule[9]), 128) == {0.2: 102, 0.4: 76, 0.45: 70}[rate]
    assert resolved_forget_rate(cfg.options, "human", 0.0, realized=0.0901) == 0.0901  # CIFAR-N: the label set's
    given = TrialConfig.from_dict({**TINY, "method": method, "noise_type": noise_type, "noise_rate": rate,
                                   "forget_rate": 0.3})
    assert resolved_forget_rate(given.options, noise_type, rate) == 0.3


def test_jocor_is_at_version_2_so_sweeps_rerun_its_cells():
    """Version 1 halved the forget rate under pair-flip noise: its finished cells must run again."""
    assert METHODS["jocor"].version == 2 and METHODS["coteaching"].version == 1


def test_official_settings_of_the_baselines():
    for method in ("coteaching", "jocor"):
        cfg = TrialConfig.from_dict({"dataset": "cifar10", "method": method})
        assert (cfg.lr, cfg.weight_decay, cfg.epochs_per_stage, cfg.options.decay_start, cfg.batch_size) == \
            (0.001, 0.0, 200, 80, 128)
        assert cfg.model == "resnet18" and cfg.differences() == {}
        c100 = TrialConfig.from_dict({"dataset": "cifar100", "method": method})
        assert c100.options.decay_start == 100 and c100.model == "resnet34"
    assert TrialConfig.from_dict({"dataset": "cifar10", "method": "jocor"}).options.co_lambda == 0.9
    assert TrialConfig.from_dict({"dataset": "cifar100", "method": "jocor"}).options.co_lambda == 0.85
    assert TrialConfig.from_dict({"dataset": "digits", "method": "memomentum"}).lr == 0.01  # untouched


@pytest.mark.parametrize("noise_type", ["symmetric", "pairflip"])
@pytest.mark.parametrize("method", ["coteaching", "jocor"])
def test_every_batch_is_full_and_keeps_the_scheduled_count(method, noise_type, monkeypatch):
    cfg = TrialConfig.from_dict({**TINY, "method": method, "noise_type": noise_type})
    trial = make_trial(cfg)
    seen = []
    select = type(trial).select_and_loss

    def spy(self, logits1, logits2, labels, n_keep):
        seen.append((self.s.epoch + 1, len(labels), n_keep))
        return select(self, logits1, logits2, labels, n_keep)

    monkeypatch.setattr(type(trial), "select_and_loss", spy)
    records = [r for r in trial.records() if r["kind"] == "epoch"]
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]  # the references' range(1, n_epoch)
    schedule = forget_schedule(0.4, 5, 3, 1)  # 0, 0.2, 0.4, 0.4, 0.4
    n_train = len(trial.data.train_idx)
    per_epoch = n_train // 128  # drop_last: no short batch
    assert len(seen) == 4 * per_epoch
    for epoch, batch, n_keep in seen:
        assert batch == 128 and n_keep == int((1 - schedule[epoch]) * 128)
    assert [r["forget_rate"] for r in records] == list(schedule[1:])
    assert np.allclose([r["lr"] for r in records], [0.001, 0.001, 0.001 * 2 / 3, 0.001 / 3])  # decay from epoch 2
    for r in records:  # the share of clean labels among the kept: a diagnostic in [0, 100]
        assert 0 <= r["kept_precision"] <= 100
    # with the noise filtered out, the kept examples are cleaner than the batch (60% clean at 40% noise)
    assert records[-1]["kept_precision"] > 100 * (1 - trial.data.realized_noise_rate)


def test_the_better_network_sets_the_test_accuracy(monkeypatch):
    """The reported test accuracy belongs to the network with the better validation score."""
    cfg = TrialConfig.from_dict({**TINY, "method": "coteaching", "epochs_per_stage": 3})
    calls = []

    def scorer(model):  # network 2 always scores higher
        calls.append(model)
        return 50.0 if len(calls) % 2 == 1 else 60.0

    trial = make_trial(cfg, scorer=scorer)
    measured = []
    accuracy = trial.feed.test_accuracy
    monkeypatch.setattr(trial.feed, "test_accuracy", lambda m: measured.append(m) or accuracy(m))
    result = list(trial.records())[-1]
    assert result["best_val_score"] == 60.0 and result["best_stage"] == "coteaching"
    assert measured[0] is calls[1]  # the first improvement measured network 2
