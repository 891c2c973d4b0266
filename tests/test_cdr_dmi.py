"""CDR (SPEC §8.3) and DMI (SPEC §8.1) against transcriptions of their reference functions, on scripted inputs."""
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from memomentum.config import TrialConfig
from memomentum.engine import lr_at
from memomentum.methods import make_trial
from memomentum.methods.cdr import critical_mask
from memomentum.methods.dmi import dmi_loss
from tests.conftest import DEVICE_CONFIG


# --- CDR ----------------------------------------------------------------------------------------------
def reference_mask(net, nonzero_ratio, clip):
    """xiaoboxia/CDR main.py train_one_step, the part between backward() and step() (CPU tensors)."""
    to_concat_g, to_concat_v = [], []
    for name, param in net.named_parameters():
        if param.dim() in [2, 4]:
            to_concat_g.append(param.grad.data.view(-1))
            to_concat_v.append(param.data.view(-1))
    all_g, all_v = torch.cat(to_concat_g), torch.cat(to_concat_v)
    metric = torch.abs(all_g * all_v)
    nz = int(nonzero_ratio * all_v.size(0))
    top_values, _ = torch.topk(metric, nz)
    thresh = top_values[-1]
    for name, param in net.named_parameters():
        if param.dim() in [2, 4]:
            mask = (torch.abs(param.data * param.grad.data) >= thresh).type(torch.FloatTensor)
            mask = mask * clip
            param.grad.data = mask * param.grad.data


def scripted_net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(12, 4))
    x = torch.randn(5, 2, 4, 4)
    F.cross_entropy(net(x), torch.tensor([0, 1, 2, 3, 0])).backward()
    return net


@pytest.mark.parametrize("tau", [0.2, 0.4, 0.45])
def test_cdr_keeps_the_top_share_of_weight_times_gradient_scaled_by_one_minus_tau(tau):
    ours, theirs = scripted_net(), scripted_net()
    untouched = {n: p.grad.clone() for n, p in ours.named_parameters() if p.dim() not in (2, 4)}
    critical_mask(ours, tau, scale=True)
    reference_mask(theirs, 1 - tau, 1 - tau)
    for (name, mine), (_, ref) in zip(ours.named_parameters(), theirs.named_parameters()):
        assert torch.allclose(mine.grad, ref.grad), name
    for name, grad in untouched.items():  # BatchNorm weights and every bias: untouched
        assert torch.equal(dict(ours.named_parameters())[name].grad, grad)
    weights = [p for p in ours.parameters() if p.dim() in (2, 4)]
    kept = sum(int((p.grad != 0).sum()) for p in weights)
    total = sum(p.numel() for p in weights)
    assert kept == int((1 - tau) * total)  # exactly the top (1 - tau) share (no ties in random data)
    nonzero = torch.cat([p.grad[p.grad != 0] for p in weights])
    original = scripted_net()
    before = torch.cat([p.grad[q.grad != 0] for p, q in zip(original.parameters(), ours.parameters()) if p.dim() in (2, 4)])
    assert torch.allclose(nonzero, before * (1 - tau))
    unscaled = scripted_net()
    critical_mask(unscaled, tau, scale=False)
    assert torch.allclose(torch.cat([p.grad.flatten() for p in unscaled.parameters() if p.dim() in (2, 4)]),
                          torch.cat([p.grad.flatten() for p in weights]) / (1 - tau))


@pytest.mark.filterwarnings("ignore:Detected call of")  # the reference's order, on purpose
def test_cdr_lr_milestones_reproduce_a_scheduler_stepped_at_the_start_of_each_epoch():
    for milestones, ours, epochs in (([40, 80], (39, 79), 200), ([10, 20], (9, 19), 100)):
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.01)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)
        for epoch in range(epochs):
            sched.step()  # the reference: scheduler1.step() before the epoch's training
            assert np.isclose(opt.param_groups[0]["lr"], lr_at(epoch, 0.01, ours, 0.1)), epoch
    for dataset, batch, n, milestones in (("cifar10", 64, 200, (39, 79)), ("mnist", 32, 100, (9, 19))):
        cfg = TrialConfig.from_dict({"dataset": dataset, "method": "cdr"})
        assert (cfg.batch_size, cfg.epochs_per_stage, cfg.lr_milestones, cfg.weight_decay, cfg.lr) == \
            (batch, n, milestones, 1e-3, 0.01)
        assert cfg.options.tau == -1.0 and cfg.options.cdr_scale_grad and cfg.differences() == {}


def test_cdr_trains_with_the_mask_and_tau_is_the_noise_rate(monkeypatch):
    from memomentum.methods import cdr

    seen = []
    real = cdr.critical_mask
    monkeypatch.setattr(cdr, "critical_mask", lambda model, tau, scale: (seen.append(tau), real(model, tau, scale)))
    cfg = TrialConfig.from_dict({"dataset": "digits", "method": "cdr", "noise_type": "pairflip", "noise_rate": 0.35,
                                 "epochs_per_stage": 1, **DEVICE_CONFIG})
    list(make_trial(cfg).records())
    steps = -(-int(0.9 * 1437) // 32)  # batch 32, the short last batch kept
    assert seen == [0.35] * steps


# --- DMI ----------------------------------------------------------------------------------------------
def reference_dmi(output, target, num_classes, mean=False):
    """Newbeeer/L_DMI CIFAR-10/DMI.py DMI_loss (fashion/main.py divides mat by the batch size)."""
    outputs = F.softmax(output, dim=1)
    targets = target.reshape(target.size(0), 1).cpu()
    y_onehot = torch.FloatTensor(target.size(0), num_classes).zero_()
    y_onehot.scatter_(1, targets, 1)
    mat = y_onehot.transpose(0, 1) @ outputs
    if mean:
        mat = mat / target.size(0)
    return -1.0 * torch.log(torch.abs(torch.det(mat.float())) + 0.001)


@pytest.mark.parametrize("mean", [False, True])
def test_dmi_loss_is_the_references(mean):
    torch.manual_seed(1)
    logits = torch.randn(64, 10, requires_grad=True)
    labels = torch.arange(64) % 10
    ours, singular, _ = dmi_loss(logits, labels, 10, mean=mean)
    theirs = reference_dmi(logits, labels, 10, mean=mean)
    assert torch.allclose(ours, theirs) and not bool(singular)
    g1, = torch.autograd.grad(ours, logits)
    g2, = torch.autograd.grad(theirs, logits)
    assert torch.allclose(g1, g2, atol=1e-6)


def test_a_class_absent_from_the_batch_gives_det_zero_a_constant_loss_and_no_gradient():
    torch.manual_seed(2)
    logits = torch.randn(30, 10, requires_grad=True)
    labels = torch.arange(30) % 9  # class 9 absent: M has a zero row
    for logdet in (False, True):
        loss, singular, flat = dmi_loss(logits, labels, 10, logdet=logdet)
        assert bool(singular) and bool(flat)
        grad, = torch.autograd.grad(loss, logits)
        assert torch.count_nonzero(grad) == 0 and torch.isfinite(loss)
    assert np.isclose(dmi_loss(logits, labels, 10)[0].item(), -np.log(0.001))
    assert 100 * (1 - 0.99 ** 256) == pytest.approx(92.4, abs=0.1)  # SPEC: a CIFAR-100 batch of 256 holds ~92 classes


def test_dmi_counts_singular_batches_and_starts_from_the_warm_ups_best_checkpoint(monkeypatch):
    """Warm-up selection with `>=` (the later of equal scores wins), the DMI round from that checkpoint, every
    batch of 8 (never all 10 classes) singular and counted."""
    from memomentum.methods.dmi import DMITrial

    cfg = TrialConfig.from_dict({"dataset": "digits", "method": "dmi", "noise_type": "symmetric", "noise_rate": 0.2,
                                 "epochs_per_stage": 3, "dmi_epochs": 2, "dmi_batch_size": 8, **DEVICE_CONFIG})
    scores = iter([50.0, 40.0, 50.0, 10.0, 60.0])
    trial = make_trial(cfg, scorer=lambda model: next(scores))
    snapshots, entry = {}, []
    real = DMITrial._dmi_epoch

    def spy(self):
        if not entry:
            entry.append({k: v.clone() for k, v in self._model.state_dict().items()})
        return real(self)

    monkeypatch.setattr(DMITrial, "_dmi_epoch", spy)
    records = []
    for r in trial.records():
        records.append(r)
        if r["kind"] == "epoch" and r["inner"] == 0 and r["epoch"] < 3:
            snapshots[r["epoch"]] = {k: v.clone() for k, v in trial._model.state_dict().items()}
        if r["kind"] == "round" and r["stage"] == "ce":
            snapshots["keep"] = {k: v.clone() for k, v in trial.s.keep.items()}
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [r["improved"] for r in epochs] == [True, False, True, False, True]  # >= in the warm-up, > after it
    assert all(torch.equal(entry[0][k], snapshots["keep"][k]) for k in entry[0])  # the DMI round began from keep
    assert not all(torch.equal(snapshots["keep"][k], snapshots[1][k]) for k in entry[0])  # ... of epoch 3, not 1
    assert [r["dmi_singular_share"] for r in epochs] == [None, None, None, 1.0, 1.0]
    result = records[-1]
    assert result["dmi_singular_share"] == 1.0 and result["best_stage"] == "dmi" and result["best_val_score"] == 60.0


def test_dmi_official_settings_per_data_set():
    c10 = TrialConfig.from_dict({"dataset": "cifar10", "method": "dmi"})
    assert (c10.lr, c10.batch_size, c10.epochs_per_stage, c10.lr_milestones, c10.weight_decay) == (0.1, 256, 120, (40, 80), 1e-4)
    assert (c10.options.dmi_epochs, c10.options.dmi_lr, c10.options.dmi_optimizer, c10.options.dmi_mean) == \
        (100, 1e-6, "sgd", False)
    mnist = TrialConfig.from_dict({"dataset": "mnist", "method": "dmi"})
    assert (mnist.lr, mnist.batch_size, mnist.epochs_per_stage, mnist.weight_decay) == (1e-4, 128, 20, 0.0)
    assert (mnist.options.dmi_epochs, mnist.options.dmi_optimizer, mnist.options.dmi_mean) == (20, "adam", False)
    assert not c10.options.dmi_keep_optimizer and not mnist.options.dmi_keep_optimizer


# --- DMI: the MNIST-like recipe's M, a new optimizer every epoch, bf16, non-finite losses ---------------------------
DMI_DIGITS = {"dataset": "digits", "method": "dmi", "noise_type": "pairflip", "noise_rate": 0.4, "seed": 1,
              "epochs_per_stage": 3, "dmi_epochs": 3, **DEVICE_CONFIG}


def dmi_round_weights(monkeypatch, **extra):
    """(the trial's result, the weights the DMI round started from, the weights it ended with)."""
    from memomentum.methods.dmi import DMITrial

    snaps = {}
    real = DMITrial._end_round

    def spy(self):
        if self.s.inner == 1:
            snaps["end"] = {k: v.detach().clone() for k, v in self._model.named_parameters()}
            snaps["start"] = {k: v for k, v in self.s.keep.items() if k in snaps["end"]}
        return real(self)

    monkeypatch.setattr(DMITrial, "_end_round", spy)
    records = list(make_trial(TrialConfig.from_dict({**DMI_DIGITS, **extra})).records())
    return records, snaps["start"], snaps["end"]


def test_the_mnist_like_dmi_round_trains_with_m_and_is_a_no_op_with_m_over_b(monkeypatch):
    """With M / B (the binary Fashion script's, 10 classes) |det| <= 1e-10 << 0.001: the loss is constant, Adam moves
    no weight, and the trial says so (flat share 1.0, a note); with the CIFAR scripts' M (the default) it trains."""
    records, start, end = dmi_round_weights(monkeypatch, dmi_mean=True)
    assert all(torch.equal(start[k], end[k]) for k in start)  # the DMI round moved no weight at all
    result = records[-1]
    assert result["dmi_flat_share"] == 1.0 and result["dmi_moved"] is False
    assert "the DMI round moved no weight" in result["note"] and "warm-up's" in result["note"]
    assert [r["dmi_flat_share"] for r in records if r["kind"] == "epoch" and r["inner"] == 1] == [1.0] * 3
    records, start, end = dmi_round_weights(monkeypatch)
    assert not all(torch.equal(start[k], end[k]) for k in start)
    assert records[-1]["dmi_moved"] is True and records[-1]["note"] is None


def test_dmi_builds_a_new_optimizer_every_epoch_as_the_references(monkeypatch):
    """L_DMI CIFAR-10/CE.py and DMI.py build a new SGD inside the epoch loop, fashion/main.py a new Adam: every epoch
    starts with fresh moments and step counter. dmi_keep_optimizer keeps one per round."""
    from memomentum.methods.dmi import DMITrial

    steps = []
    real = DMITrial._end_epoch

    def spy(self, *a, **k):
        steps.append(max(int(st["step"]) for st in self._optimizer.state.values()))
        return (yield from real(self, *a, **k))

    monkeypatch.setattr(DMITrial, "_end_epoch", spy)
    per_epoch = -(-1293 // 128)  # digits' training split in batches of 128 (the last short batch kept)
    list(make_trial(TrialConfig.from_dict(DMI_DIGITS)).records())
    assert len(set(steps)) == 1 and steps[0] <= per_epoch  # Adam's counter restarts every epoch
    steps.clear()
    list(make_trial(TrialConfig.from_dict({**DMI_DIGITS, "dmi_keep_optimizer": True})).records())
    assert steps[:3] == [steps[0], 2 * steps[0], 3 * steps[0]]  # one Adam per round: its counter runs on


def test_dmi_runs_under_bf16_with_its_determinant_in_float32():
    """Under bf16 autocast torch.det gets a bf16 matrix and has no kernel for it: the loss is computed outside
    autocast, in float32, so a bf16 trial runs; in fp32 nothing changes (the reference's values, above)."""
    logits = torch.randn(64, 10, requires_grad=True)
    labels = torch.arange(64) % 10
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _, _ = dmi_loss(logits, labels, 10)
    assert loss.dtype == torch.float32 and torch.equal(loss, dmi_loss(logits, labels, 10)[0])
    result = list(make_trial(TrialConfig.from_dict({**DMI_DIGITS, "precision": "bf16", "device": "cpu",
                                                    "deterministic": False})).records())[-1]
    assert result["epochs"] == 6 and result["precision_mode"] == "bf16"


def test_a_dmi_loss_that_is_not_finite_never_reaches_the_optimizer(monkeypatch):
    """det M beyond float32 (a batch holding every class of 100, a confident network) makes the loss -inf and its
    gradients NaN: such a batch is skipped, counted, and said in the trial's note; the weights stay finite."""
    from memomentum.methods import dmi

    assert dmi.may_overflow(1024, 100) and not dmi.may_overflow(256, 100) and not dmi.may_overflow(256, 10)
    big = torch.full((1024, 100), -30.0)
    labels = torch.arange(1024) % 100
    big[torch.arange(1024), labels] = 30.0  # confident and right: det M ~ prod of the class counts ~ 1e101
    assert not torch.isfinite(dmi_loss(big, labels, 100)[0])
    real, calls = dmi.dmi_loss, []

    def every_other_overflows(logits, labels, num_classes, mean=False, logdet=False):
        calls.append(1)
        loss, singular, flat = real(logits, labels, num_classes, mean, logdet)
        return (loss * float("inf") if len(calls) % 2 else loss), singular, flat

    monkeypatch.setattr(dmi, "dmi_loss", every_other_overflows)
    records, start, end = dmi_round_weights(monkeypatch)
    result = records[-1]
    assert result["dmi_skipped"] == (len(calls) + 1) // 2 > 0 and "were skipped" in result["note"]
    assert all(torch.isfinite(v).all() for v in end.values())


def test_a_dmi_batch_that_can_overflow_requires_logdet():
    from memomentum.errors import ConfigError

    with pytest.raises(ConfigError, match="usually holds every class, and det M can then exceed float32"):
        TrialConfig.from_dict({"dataset": "cifar100", "method": "dmi", "dmi_batch_size": 1024})
    TrialConfig.from_dict({"dataset": "cifar100", "method": "dmi", "dmi_batch_size": 1024, "dmi_logdet": True})
    TrialConfig.from_dict({"dataset": "cifar100", "method": "dmi"})  # 256: rarely every class; skipped if it overflows
