"""What a finished trial hands back beside its records when its config has `export` (on by default for a data set
given by a path): the selected model as one file, and the label-issues table of its training examples.

The selected model is the one the trial reports (the best noisy-validation score's; two networks: the better one).
The label-issues table, one row per training example (validation examples are never judged), in cleanlab's
vocabulary where it fits:

    index               the example's position in the data set's training set (as selections.parquet)
    given_label         the label it was given (the noisy one the methods trained on)
    predicted_label     the selected model's prediction (eval mode, no augmentation)
    predicted_prob      its probability
    label_quality       the selected model's probability of the given label (cleanlab's self-confidence): sort by it,
                        lowest first, for "most likely mislabelled first"
    rounds_kept         how many of the trial's rounds selected it (-1: a method that selects nothing)
    in_final_selection  1 / 0 whether the last round selected it (-1: a method that selects nothing)
    is_label_issue      1 when flagged: the method's own answer where it has one (SELFIE: a label it corrected to another
                        class, or an example its last epoch left out); else left out of the final selection (a method
                        that selects: Me-Momentum's answer, its final confident set); else the prediction differs
                        from the given label
    clean               1 / 0 whether the given label is the clean one (-1 unknown): a diagnostic only

The model file is a dict that `torch.load(path, weights_only=True)` reads: "state_dict", "network", "num_classes",
"in_channels", "image_size", "mean", "std", "class_names", "dataset", "trial", "test_acc", "best_val_score";
memomentum/predict.py turns it into a network and predicts new images with it.
"""
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

MODEL_FORMAT = "memomentum-model/1"
FIELDS = ("index", "given_label", "predicted_label", "predicted_prob", "label_quality", "rounds_kept",
          "in_final_selection", "is_label_issue", "clean")


def make(trial) -> Optional[dict]:
    """{"model": the model file's dict, "label_issues": the table's columns (numpy)} of a finished trial. When no epoch
    ever set a best validation score (Me-Momentum's official rule on a tiny validation set) there is no selected
    model: no model file, and a method that selects still gets its table, from its selections alone (the model's
    columns unknown); None for the others."""
    s, cfg, data = trial.s, trial.cfg, trial.data
    if s.best_model is None:
        if not (trial.selects and s.final_selection is not None and hasattr(trial.feed, "logits")):
            return None
        return {"model": None, "label_issues": _issues(trial, None)}
    model = trial.engine.prepare_model(trial.initial_weights(0))
    model.load_state_dict(s.best_model)
    info = data.info
    classes = _class_names(cfg.dataset, info.num_classes)
    state = {k: v.detach().cpu() for k, v in s.best_model.items()}
    out = {"model": {"format": MODEL_FORMAT, "state_dict": state, "network": cfg.model, "num_classes": info.num_classes,
                     "in_channels": trial.feed.in_channels, "image_size": _side(trial), "mean": list(info.mean),
                     "std": list(info.std), "class_names": classes, "dataset": cfg.dataset, "trial": cfg.trial_key(),
                     "test_acc": trial._reported_test(), "best_val_score": s.best_val}, "label_issues": None}
    if hasattr(trial.feed, "logits"):  # a data set streamed from disk: the model file only
        out["label_issues"] = _issues(trial, model)
    return out


def _issues(trial, model) -> dict:
    """The label-issues table's columns; the model's (prediction, probabilities) -1 / NaN without a model."""
    s, data = trial.s, trial.data
    idx = data.train_idx
    given = data.noisy_labels[idx]
    if model is not None:
        probs = F.softmax(trial.feed.logits(model, idx, False).float(), 1)
        top, predicted = probs.max(1)
        quality = probs.gather(1, given[:, None])[:, 0]
    else:
        top = quality = torch.full(idx.shape, float("nan"), device=idx.device)
        predicted = torch.full_like(idx, -1)
    final = None
    if trial.selects and s.final_selection is not None:
        rounds = s.kept_rounds[idx]
        final = torch.isin(idx, s.final_selection)
        flagged, in_final = ~final, final.long()
    else:
        rounds = torch.full_like(idx, -1)
        in_final = torch.full_like(idx, -1)
        flagged = predicted != given
    own = trial.label_issues(given, final)  # a method with its own answer (SELFIE: the labels it corrected)
    if own is not None:
        flagged = own
    clean = data.clean_labels[idx]
    mark = torch.where(clean < 0, torch.full_like(clean, -1), (given == clean).long())
    columns = {"index": idx, "given_label": given, "predicted_label": predicted, "predicted_prob": top,
               "label_quality": quality, "rounds_kept": rounds, "in_final_selection": in_final,
               "is_label_issue": flagged.long(), "clean": mark}
    return {k: v.detach().cpu().numpy() for k, v in columns.items()}


def _side(trial) -> int:
    images = getattr(trial.data, "images", None)
    return int(images.shape[-1]) if images is not None else int(trial.cfg.image_size)


def _class_names(dataset: str, num_classes: int) -> list:
    from memomentum import owndata

    own = owndata.registered(dataset)
    return list(own.index.classes) if own is not None else [str(c) for c in range(num_classes)]


def encode_issues(columns: dict) -> bytes:
    """The label-issues table as compressed .npz bytes (trials/<key>/label_issues.npz)."""
    import io

    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{k: np.asarray(columns[k]) for k in FIELDS})
    return buffer.getvalue()


def decode_issues(raw: bytes) -> Optional[dict]:
    """The columns of `encode_issues`' bytes, or None if they are not such a table."""
    import io

    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            out = {k: z[k] for k in FIELDS}
    except Exception:
        return None
    return out if len({len(v) for v in out.values()}) == 1 else None


def encode_model(payload: dict) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


__all__ = ["make", "encode_issues", "decode_issues", "encode_model", "FIELDS", "MODEL_FORMAT"]
