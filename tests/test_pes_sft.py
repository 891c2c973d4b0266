"""PES (SPEC §8.4) and SFT (SPEC §8.6) against transcriptions of their reference functions and behaviour."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from memomentum.config import TrialConfig
from memomentum.methods import make_trial
from memomentum.methods.pes import pes_class_weights
from memomentum.methods.sft import confidence, fluctuation, train_penalty, warmup_penalty
from memomentum.models import HEADS
from tests.conftest import DEVICE_CONFIG

PES_TINY = {"dataset": "digits", "method": "pes", "noise_type": "pairflip", "noise_rate": 0.3, "seed": 4,
            "epochs_per_stage": 5, "t1": 2, "t2": 1, "t3": 1, "batch_size": 64, **DEVICE_CONFIG}


# --- PES ----------------------------------------------------------------------------------------------
def test_pes_class_weights_are_the_references():
    labels = torch.tensor([0, 0, 0, 1, 3, 3])
    train_nums = np.bincount(labels.numpy(), minlength=5)
    with np.errstate(divide="ignore"):  # tmllab/PES PES_cs.py update_trainloader
        cw = np.mean(train_nums[train_nums != 0]) / train_nums
        cw[cw == np.inf] = 0
    assert np.allclose(pes_class_weights(labels, 5).numpy(), cw)


def run_pes(**extra):
    """(records, the network at the end of the refinement, the network at the last epoch)."""
    trial = make_trial(TrialConfig.from_dict({**PES_TINY, **extra}))
    snaps, records = {}, []
    for r in trial.records():
        records.append(r)
        if r["kind"] == "round" and r["stage"] == "refine":
            snaps["refined"] = {k: v.clone() for k, v in trial._model.state_dict().items()}
        if r["kind"] == "epoch" and r["step"] == PES_TINY["epochs_per_stage"] - 1:
            snaps["before_last"] = {k: v.clone() for k, v in trial._model.state_dict().items()}
    return records, snaps


def test_pes_rounds_and_the_head_it_leaves_out_of_the_optimiser():
    """After the refinement the re-initialised head is in no optimiser: it stays fixed while conv1 .. layer3
    (here digitsnet's convolutions) train on; pes_train_head lets the SGD train it too."""
    records, snaps = run_pes()
    rounds = [r for r in records if r["kind"] == "round"]
    assert [r["stage"] for r in rounds] == ["ce", "refine", "pes"] and [r["epochs"] for r in rounds] == [2, 1, 2]
    assert [r["lr"] for r in records if r["kind"] == "epoch"][2] == 1e-4  # the refinement's Adam
    head = [k for k in snaps["refined"] if k.split(".")[0] in HEADS["digitsnet"][0]]
    body = [k for k in snaps["refined"] if k not in head]
    assert head and body
    assert all(torch.equal(snaps["refined"][k], snaps["before_last"][k]) for k in head)
    assert not all(torch.equal(snaps["refined"][k], snaps["before_last"][k]) for k in body)
    _, trained = run_pes(pes_train_head=True)
    assert not all(torch.equal(trained["refined"][k], trained["before_last"][k]) for k in head)


def test_pes_refinement_re_initialises_the_head_and_trains_only_it(monkeypatch):
    from memomentum.methods import pes

    seen = []
    real = pes.PESTrial._refine

    def spy(self):
        before = {k: v.clone() for k, v in self._model.state_dict().items()}
        out = real(self)
        after = self._model.state_dict()
        seen.append({k for k in before if not torch.equal(before[k], after[k])})
        return out

    monkeypatch.setattr(pes.PESTrial, "_refine", spy)
    run_pes()
    changed = seen[0]
    assert changed == {f"{m}.{p}" for m in HEADS["digitsnet"][0] for p in ("weight", "bias")}  # conv layers frozen


def test_pes_confident_set_is_the_two_view_mean_softmax_agreement(monkeypatch):
    from memomentum.methods.pes import two_view_confident

    trial = make_trial(TrialConfig.from_dict(PES_TINY))
    model = trial.fresh_model(1)
    idx = trial.data.train_idx
    got = two_view_confident(trial.feed, model, idx)
    # digits has no crop / flip: both views are the image itself, so it is the plain argmax agreement
    preds = trial.feed.predict(model, idx, False)
    assert torch.equal(got, idx[preds == trial.data.noisy_labels[idx]])


def test_pes_settings():
    c10, c100 = (TrialConfig.from_dict({"dataset": d, "method": "pes"}) for d in ("cifar10", "cifar100"))
    assert (c10.lr, c10.weight_decay, c10.batch_size, c10.epochs_per_stage, c10.lr_milestones) == (0.1, 1e-4, 128, 200,
                                                                                                   (100, 150))
    assert (c10.options.t1, c100.options.t1, c10.options.t2, c10.options.t3, c10.options.pes_lr) == (25, 30, 7, 5, 1e-4)
    with pytest.raises(Exception, match="at least t1 \\+ 2"):
        TrialConfig.from_dict({"dataset": "digits", "method": "pes", "epochs_per_stage": 20})


def test_a_long_refinement_says_how_far_it_is(monkeypatch):
    """The refinement yields no record for its T2 + T3 epochs: it prints progress lines instead (at most every
    PROGRESS_EVERY_S seconds; here every epoch), so a long one never looks hung."""
    from memomentum import trial as trial_mod

    monkeypatch.setattr(trial_mod, "PROGRESS_EVERY_S", 0.0)
    lines = []
    trial = make_trial(TrialConfig.from_dict({**PES_TINY, "t2": 3, "t3": 2}), progress=lines.append)
    for _ in trial.records():
        pass
    deep, last = HEADS["digitsnet"]
    assert [line.split(":")[0] for line in lines] == [f"refinement of {'+'.join(deep)}"] * 3 + \
        [f"refinement of {'+'.join(last)}"] * 2
    assert lines[0].startswith(f"refinement of {'+'.join(deep)}: epoch 1 of 3, loss ")


# --- SFT ----------------------------------------------------------------------------------------------
def reference_eval_train(outputs, targets, memory_bank, k, selection):
    """1998v7/Self-Filtering function.py eval_train on one batch of logits (its per-example loop)."""
    max_probs, pred = outputs.max(1)
    result = torch.zeros(len(targets))
    fluctuation_ = [0] * len(targets)
    for b in range(len(targets)):
        result[b] = max_probs[b] if pred[b] == targets[b] else 0
        if selection:
            last = memory_bank[-1]
            fluctuation_[b] = 0 if (last[b] > result[b] and result[b] == 0) else 1
    if selection:
        for i in range(k - 1):
            memory_bank[i] = memory_bank[i + 1]
        memory_bank[-1] = result
        smooth = sum(memory_bank)
        prob = (smooth.numpy() + np.array(fluctuation_)) / (k + 1)
        return prob > 0.5, memory_bank
    memory_bank.append(result) if len(memory_bank) < k else None
    return None, memory_bank


def test_sft_selects_by_logit_confidence_and_fluctuation_as_the_reference():
    torch.manual_seed(3)
    k, n = 2, 40
    labels = torch.randint(0, 5, (n,))
    passes = [torch.randn(n, 5) * 2 for _ in range(4)]
    bank, ours = [], []
    for epoch, logits in enumerate(passes):
        selection = epoch >= k
        ref, bank = reference_eval_train(logits, labels, bank, k, selection)
        r = confidence(logits, labels)
        if selection:
            f = fluctuation(ours[-1], r)
            ours = ours[1:] + [r]
            mine = (torch.stack(ours).sum(0) + f) / (k + 1) > 0.5
            assert torch.equal(mine, torch.from_numpy(ref)), epoch
        else:
            ours.append(r)
    # logits, not probabilities: a right prediction with a max logit above 1.5 stays selected one wrong epoch later
    assert confidence(torch.tensor([[3.0, 0.0]]), torch.tensor([0])).item() == 3.0
    assert confidence(torch.tensor([[3.0, 0.0]]), torch.tensor([1])).item() == 0.0
    assert confidence(torch.tensor([[3.0, 0.0]]), torch.tensor([0]), probabilities=True).item() < 1


def reference_warmup_penalty(outputs, targets, T):
    """penalty_f2, mode 'warm_up' (function.py): a (B,) times a (B, 1) tensor, then .mean()."""
    loss_ce = F.cross_entropy(outputs, targets)
    pseudo_label = torch.softmax(outputs, dim=1)
    values, index = pseudo_label.topk(k=2, dim=1)
    latent_label = index[:, 1]
    latent_lam = torch.zeros(pseudo_label.size(0), 1).float()
    for i in range(values.size(0)):
        x = values[i]
        latent_lam[i] = max(T - min(x) / max(x), 0.0)
    conf_penalty = 0.5 * (F.cross_entropy(outputs, latent_label, reduction='none') * latent_lam).mean()
    return loss_ce + conf_penalty


def reference_train_penalty(outputs, targets, T, num_class):
    loss_ce = F.cross_entropy(outputs, targets)
    bs = outputs.size()[0]
    pseudo_label = torch.softmax(outputs, dim=1)
    latent_labels = torch.zeros((bs, num_class))
    for i in range(bs):
        confident = pseudo_label[i]
        max_ = confident[targets[i]]
        confident = T - confident / max_
        mask = (confident >= 0.0)
        latent_labels[i] = confident * mask
    log_prob = torch.nn.functional.log_softmax(outputs, dim=1)
    return loss_ce + 0.1 * (-torch.sum(log_prob * latent_labels) / outputs.size(0)) / (num_class - 1)


@pytest.mark.parametrize("penalty", ["warm_up", "train"])
def test_sft_penalties_and_their_gradients_are_the_references(penalty):
    torch.manual_seed(5)
    logits = (torch.randn(16, 10) * 0.3).requires_grad_(True)  # flat enough that many lam and w are non-zero
    labels = torch.randint(0, 10, (16,))
    if penalty == "warm_up":
        ours, theirs = warmup_penalty(logits, labels, 0.8), reference_warmup_penalty(logits, labels, 0.8)
        per_example = warmup_penalty(logits, labels, 0.8, per_example=True)
        assert not torch.isclose(per_example, ours)  # the collapsed product of means is not the per-example mean
    else:
        ours, theirs = train_penalty(logits, labels, 0.2), reference_train_penalty(logits, labels, 0.2, 10)
    assert torch.allclose(ours, theirs, atol=1e-6)
    g1, = torch.autograd.grad(ours, logits)
    g2, = torch.autograd.grad(theirs, logits)
    assert torch.allclose(g1, g2, atol=1e-6)  # lam and w are not detached in either


def test_sft_trains_on_every_example_then_on_the_filtered_ones():
    cfg = TrialConfig.from_dict({"dataset": "digits", "method": "sft", "noise_type": "instance", "noise_rate": 0.3,
                                 "epochs_per_stage": 8, "sft_warm_up": 6, **DEVICE_CONFIG})
    records = [r for r in make_trial(cfg).records() if r["kind"] == "epoch"]
    n = int(0.9 * 1437)
    assert [r["n_train"] for r in records][:6] == [n] * 6 and all(0 < r["n_train"] < n for r in records[6:])
    # the filtered examples are cleaner than the split (70% clean at 30% noise)
    assert all(r["kept_precision"] > records[0]["kept_precision"] + 10 for r in records[6:])
    assert cfg.batch_size == 32 and cfg.options.sft_warmup_batch_size == 128
    assert TrialConfig.from_dict({"dataset": "cifar100", "method": "sft"}).options.sft_warm_up == 30


# --- the reference's edge cases (PES_cs.py noisy_refine, its loaders' drop_last; SFT's float64 threshold) --------
def reference_noisy_refine_runs(refine_times: int) -> bool:
    """tmllab/PES PES_cs.py:106-107, transcribed: `if refine_times <= 0: return model` comes before any
    re-initialisation or freezing."""
    return not refine_times <= 0


@pytest.mark.parametrize("t2, t3", [(0, 1), (1, 0), (0, 0)])
def test_pes_skips_a_refinement_phase_of_zero_epochs_whole(monkeypatch, t2, t3):
    """A phase the reference skips (refine_times <= 0) re-initialises nothing and freezes nothing: its modules come
    out of the refinement as they went in and stay in the main SGD; the phases that ran replace theirs."""
    from memomentum.methods import pes

    seen = {}
    real = pes.PESTrial._refine

    def spy(self):
        before = {k: v.clone() for k, v in self._model.named_parameters()}
        out = real(self)
        seen["changed"] = {k.split(".")[0] for k, v in self._model.named_parameters() if not torch.equal(before[k], v)}
        seen["in_sgd"] = {n.split(".")[0] for n, p in self._model.named_parameters()
                          if any(p is q for g in self._optimizer.param_groups for q in g["params"])}
        seen["trainable"] = all(p.requires_grad for p in self._model.parameters())
        return out

    monkeypatch.setattr(pes.PESTrial, "_refine", spy)
    run_pes(t2=t2, t3=t3)
    deep, last = HEADS["digitsnet"]
    replaced = (set(deep) if reference_noisy_refine_runs(t2) else set()) | \
        (set(last) if reference_noisy_refine_runs(t3) else set())
    assert seen["changed"] == replaced  # a skipped phase leaves its modules untouched, nothing else moves
    every = {n.split(".")[0] for n, _ in make_trial(TrialConfig.from_dict(PES_TINY)).fresh_model(1).named_parameters()}
    assert seen["in_sgd"] == every - replaced and seen["trainable"]


def test_pes_takes_no_step_on_a_confident_set_shorter_than_a_batch(monkeypatch):
    """The reference's loaders drop the short last batch (drop_last=True): a confident set of fewer examples than a
    batch gives no step that iteration, so no weight moves (BatchNorm statistics aside)."""
    from memomentum.methods import pes

    monkeypatch.setattr(pes, "two_view_confident", lambda feed, model, idx: idx[:PES_TINY["batch_size"] - 1])
    records, snaps = run_pes()
    epochs = [r for r in records if r["kind"] == "epoch" and r["inner"] == 2]
    assert epochs and all(r["n_train"] == PES_TINY["batch_size"] - 1 for r in epochs)
    assert all(r["train_loss"] is None for r in epochs)  # no batch trained: unknown, never 0
    weights = [k for k, _ in make_trial(TrialConfig.from_dict(PES_TINY)).fresh_model(1).named_parameters()]
    assert all(torch.equal(snaps["refined"][k], snaps["before_last"][k]) for k in weights)  # the first pes epoch


def reference_sft_select(memory_bank, fluctuation_, k):
    """1998v7/Self-Filtering function.py:119-125, transcribed (memory_bank: k float32 tensors, fluctuation_: a list
    of 0 / 1)."""
    confidence_smooth = torch.zeros_like(memory_bank[0])
    for i in range(k):
        confidence_smooth += memory_bank[i]
    prob = (confidence_smooth.numpy() + np.array(fluctuation_)) / (k + 1)
    return prob > 0.5


def test_sft_threshold_is_the_references_float64_rule_within_a_float32_step_of_one_half():
    from memomentum.methods.sft import selected

    step = np.float32(np.nextafter(np.float32(0.5), np.float32(1)) - np.float32(0.5))  # 2**-24
    values = [0.5 + d * step for d in range(-3, 4)] + [1.5 + d * 2 * step for d in range(-3, 4)] + [0.0, 0.75, 3.0]
    rows = torch.tensor([[v, 0.0] for v in values] + [[0.0, v] for v in values], dtype=torch.float32).T
    for f_value in (0, 1):
        f = [f_value] * rows.shape[1]
        ours = selected(rows, torch.tensor(f, dtype=torch.float32)).numpy()
        theirs = reference_sft_select(list(rows), f, 2)
        assert (ours == theirs).all()
    # the float32 rule it replaces differs there: (0.5 + 2**-24) + 1 rounds to 1.5 in float32
    bank = torch.tensor([[0.5 + step], [0.0]], dtype=torch.float32)
    one = torch.ones(1)
    assert bool(selected(bank, one)) and not bool((bank.sum(0) + one) / 3 > 0.5)
