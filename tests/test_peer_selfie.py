"""Peer Loss (SPEC §8.2) and SELFIE (SPEC §8.5) against transcriptions of their reference code."""
import math
import operator

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from memomentum.config import TrialConfig
from memomentum.methods import make_trial
from memomentum.methods.peer import PLANS, PeerOptions, alpha_schedule, ce_s, density
from memomentum.methods.selfie import clean_count, history_certainty, refurbish, running_stats_kept
from tests.conftest import DEVICE_CONFIG


# --- Peer Loss ----------------------------------------------------------------------------------------
def reference_alpha(kind):
    """f_alpha of weijiaheng/Multi-class-Peer-Loss-functions' runners, as arrays over their epochs."""
    ls = np.linspace
    return {"cifar10-sparse": np.concatenate((ls(0.0, 0.0, 20), ls(0.0, 1, 20), ls(1, 2, 50), ls(2, 5, 50),
                                              ls(5, 10, 100), ls(10, 20, 100))),
            "cifar10-dense": np.concatenate((ls(0.0, 0.0, 20), ls(0.0, 0.1, 20), ls(1, 2, 50), ls(2, 2.5, 50),
                                             ls(2.5, 3.3, 100), ls(3.3, 5, 100))),
            "cifar100-sparse": np.concatenate((ls(0.0, 0.0, 110), ls(0.0, 2, 20), ls(2, 10, 70), ls(10, 20, 50))),
            "cifar100-dense": np.concatenate((ls(0.0, 0.0, 100), ls(0.95, 0.95, 150))),
            "mnist-dense": np.concatenate((ls(0.0, 0.0, 120), ls(0.0, 1, 180)))}[kind]


@pytest.mark.parametrize("plan, kind, epochs", [("cifar10", "sparse", 300), ("cifar10", "dense", 300),
                                                ("cifar100", "sparse", 250), ("cifar100", "dense", 250),
                                                ("mnist", "dense", 300)])
def test_peer_alpha_schedules_are_the_references(plan, kind, epochs):
    """f_alpha(epoch) = alpha[epoch] for the epochs that run (CIFAR-10's pieces hold 340 values for 300 epochs)."""
    assert np.array_equal(alpha_schedule(PLANS[plan][kind], epochs), reference_alpha(f"{plan}-{kind}")[:epochs])


def test_peer_maps_noise_types_to_schedules_and_uses_the_references_cross_entropy():
    auto = PeerOptions()
    assert density(auto, "pairflip") == "sparse" and {density(auto, t) for t in ("symmetric", "instance", "human")} == \
        {"dense"}
    assert density(PeerOptions(peer_density="sparse"), "symmetric") == "sparse"
    torch.manual_seed(0)
    logits, labels = torch.randn(8, 10), torch.randint(0, 10, (8,))
    assert torch.allclose(ce_s(logits, labels), F.nll_loss(torch.log(F.softmax(logits, 1) + 1e-5), labels))


def test_peer_steps_forward_a_peer_batch_and_divide_the_lr_by_one_plus_alpha(monkeypatch):
    cfg = TrialConfig.from_dict({"dataset": "digits", "method": "peer", "noise_type": "symmetric", "noise_rate": 0.3,
                                 "epochs_per_stage": 3, "batch_size": 128, **DEVICE_CONFIG})
    trial = make_trial(cfg)
    trial.alpha = np.array([0.0, 0.5, 2.0])
    calls = []
    model_forward = type(trial.fresh_model(1)).forward
    monkeypatch.setattr(type(trial.fresh_model(1)), "forward", lambda self, x: (calls.append(len(x)),
                                                                               model_forward(self, x))[1])
    records = [r for r in trial.records() if r["kind"] == "epoch"]
    assert [r["peer_alpha"] for r in records] == [0.0, 0.5, 2.0]
    assert np.allclose([r["lr"] for r in records], [1e-4, 1e-4 / 1.5, 1e-4 / 3])  # MNIST-like: Adam 1e-4
    steps = int(0.9 * 1437) // 128  # the short batch skipped
    train = [n for n in calls if n == 128]
    assert len(train) == 2 * 3 * steps  # a peer forward beside every step, even at alpha 0


def test_peer_cifar100_warm_up_reloads_the_best_checkpoint(monkeypatch):
    from memomentum.methods.peer import PeerTrial

    cfg = TrialConfig.from_dict({"dataset": "digits", "method": "peer", "noise_type": "symmetric", "noise_rate": 0.3,
                                 "epochs_per_stage": 4, "peer_warmup": 2, "peer_plan": "cifar100", **DEVICE_CONFIG})
    scores = iter([50.0, 30.0, 20.0, 10.0])
    trial = make_trial(cfg, scorer=lambda model: next(scores))
    seen = []
    real = PeerTrial._epoch
    monkeypatch.setattr(PeerTrial, "_epoch", lambda self, alpha, peer: (seen.append(
        (peer, {k: v.clone() for k, v in self._model.state_dict().items()})), real(self, alpha, peer))[1])
    records = list(trial.records())
    assert [r["stage"] for r in records if r["kind"] == "round"] == ["warmup", "peer"]
    assert [peer for peer, _ in seen] == [False, False, True, True]
    keep = trial.s.keep
    assert all(torch.equal(seen[2][1][k], keep[k]) for k in keep)  # epoch 2 started from the best (epoch 1) model


# --- SELFIE -------------------------------------------------------------------------------------------
def reference_refurbish(ids, labels, loss_array, noise_rate, predictions, corrected, num_classes, history_length,
                        threshold):
    """kaist-dmlab/SELFIE method/self_correcter.py patch_clean_with_refurbishable_sample_batch (dict-based)."""
    num_clean = int(np.ceil(float(len(ids)) * (1.0 - noise_rate)))
    loss_map = dict(sorted({ids[i]: loss_array[i] for i in range(len(ids))}.items(), key=operator.itemgetter(1)))
    label_map = {ids[i]: labels[i] for i in range(len(ids))}
    clean = [key for index, key in enumerate(loss_map) if index < num_clean]
    max_certainty = -np.log(1.0 / float(num_classes))
    corrected_batch = {}
    for i in ids:
        p = np.bincount(predictions[i], minlength=num_classes) / float(history_length)
        certainty = -sum(v * np.log(v) for v in p if v > 0) / max_certainty
        if certainty <= threshold:
            corrected[i] = int(np.argmax(p))
            corrected_batch[i] = corrected[i]
        elif corrected[i] != -1:
            corrected_batch[i] = corrected[i]
    final = dict(corrected_batch)
    for i in clean:
        if i not in final:
            final[i] = corrected[i] if corrected[i] != -1 else label_map[i]
    return final


def test_selfie_selection_and_correction_are_the_references():
    rng = np.random.default_rng(7)
    n, c, q = 32, 4, 5
    labels = rng.integers(0, c, n)
    losses = rng.random(n)
    history = rng.integers(0, c, (n, q))
    history[:6] = rng.integers(0, c, 6)[:, None]  # six examples whose history agrees: corrected now
    corrected = np.full(n, -1)
    corrected[[8, 9, 20]] = [1, 2, 3]  # corrected in an earlier batch: reused
    expected = reference_refurbish(list(range(n)), labels.tolist(), losses.tolist(), 0.3, history, corrected.copy(),
                                   c, q, 0.05)
    step, target, fixed = refurbish(torch.tensor(losses), torch.tensor(labels), torch.tensor(np.full(n, -1)).where(
        torch.tensor(corrected) < 0, torch.tensor(corrected)), torch.tensor(history), 0.3, 0.05, c)
    assert {i: int(target[i]) for i in np.flatnonzero(step.numpy())} == expected


def test_selfie_certainty_threshold_needs_a_unanimous_history_of_fifteen():
    assert clean_count(128, 0.4) == 77 and clean_count(128, 0.45) == 71  # ceil, not the small-loss int (76, 70)
    for classes, fourteen in ((10, 0.106), (100, 0.053)):
        unanimous = torch.zeros(1, 15, dtype=torch.long)
        one_off = unanimous.clone()
        one_off[0, 3] = 1
        assert history_certainty(unanimous, classes)[0].item() == 0
        assert history_certainty(one_off, classes)[0].item() == pytest.approx(fourteen, abs=0.001)
        assert history_certainty(one_off, classes)[0].item() > 0.05


def test_selfie_runs_restart_and_carry_corrections_and_the_noise_rate_estimate():
    cfg = TrialConfig.from_dict({"dataset": "digits", "method": "selfie", "noise_type": "symmetric", "noise_rate": 0.3,
                                 "epochs_per_stage": 4, "selfie_warm_up": 2, "selfie_restarts": 1,
                                 "selfie_history": 2, **DEVICE_CONFIG})
    trial = make_trial(cfg)
    records = list(trial.records())
    assert [r["stage"] for r in records if r["kind"] == "round"] == ["selfie", "selfie"]
    assert [r["lr"] for r in records if r["kind"] == "epoch"] == [0.1] * 8  # each run restarts the schedule
    n = len(trial.data.train_idx)
    corrected = int((trial.s.corrected >= 0).sum())
    assert corrected > 0 and trial.s.eps == pytest.approx(min(0.3, 1 - corrected / n), abs=0.02)
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert epochs[-1]["selfie_corrected"] == corrected and 0 <= epochs[-1]["selfie_correction_precision"] <= 100


def test_selfie_first_forward_leaves_batchnorm_statistics_alone():
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with running_stats_kept(net), torch.no_grad():
        net(torch.randn(16, 4) * 5 + 3)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    net(torch.randn(16, 4) * 5 + 3)  # an ordinary train-mode forward moves them
    assert not torch.equal(before["1.running_mean"], net.state_dict()["1.running_mean"])
    assert math.isclose(TrialConfig.from_dict({"dataset": "cifar10", "method": "selfie"}).lr_gamma, 0.2)
