"""Which labels are wrong? Each method's answer beside cleanlab's, on a folder of images whose flipped labels are known.

    pip install cleanlab            # optional: only this benchmark uses it
    python benchmarks/bench_label_issues.py                       # digits, 30% pair-flip, seeds 1-3
    python benchmarks/bench_label_issues.py --noise symmetric --flip 0.4 --seeds 1 2

The folder is the example of the own-data path (`python -m memomentum.example_data`: digits as PNG files, a share of
the training labels flipped by the project's noise, the true label in `clean_label`), read through the manifest as a
user's data set. On its training split (the 90% of the seeded split; validation examples are never judged):

- each method that selects (Me-Momentum, Co-teaching, JoCoR, PES, SFT, SELFIE) flags every example its last round
  left out (Me-Momentum: outside its final confident set), at its reference settings (the MNIST recipe);
- plain cross-entropy flags the examples its selected model predicts differently from their label;
- cleanlab's `find_label_issues` (confident learning, default `filter_by="prune_by_noise_rate"`) flags from
  out-of-sample probabilities: 5-fold cross-validation of the same network with the `ce` recipe (each fold's model
  selected on the same noisy validation split), as cleanlab's documentation prescribes.

Precision = share of flagged labels that are really wrong; recall = share of wrong labels flagged. Seconds = wall
time of that method's answer (cleanlab: its 5 trainings plus find_label_issues). The last line printed is one JSON
object; figures go to benchmarks/RESULTS.md with machine, versions and date.
"""
import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from memomentum.config import TrialConfig  # noqa: E402
from memomentum.methods import make_trial  # noqa: E402

SELECTING = ("memomentum", "coteaching", "jocor", "pes", "sft", "selfie")
FOLDS = 5


def scores(flagged: np.ndarray, wrong: np.ndarray) -> dict:
    tp = int((flagged & wrong).sum())
    precision = tp / int(flagged.sum()) if flagged.any() else None
    recall = tp / int(wrong.sum()) if wrong.any() else None
    f1 = 2 * precision * recall / (precision + recall) if precision and recall else None
    return {"flagged": int(flagged.sum()), "precision": _r(precision), "recall": _r(recall), "f1": _r(f1)}


def _r(x):
    return None if x is None else round(100 * x, 2)


def method_answer(base: dict, method: str) -> dict:
    start = time.perf_counter()
    trial = make_trial(TrialConfig.from_dict({**base, "method": method, "export": True}))
    result = [r for r in trial.records()][-1]
    issues = trial.exports()["label_issues"]
    seconds = time.perf_counter() - start
    wrong = issues["clean"] == 0
    return {**scores(issues["is_label_issue"] == 1, wrong), "seconds": round(seconds, 1),
            "test_acc": result["test_acc"], "wrong_labels": int(wrong.sum())}


def cleanlab_answer(base: dict) -> dict:
    from cleanlab.filter import find_label_issues

    start = time.perf_counter()
    cfg = TrialConfig.from_dict({**base, "method": "ce", "export": True})
    first = make_trial(cfg)
    data = first.data
    train = data.train_idx
    order = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed))]
    probs = torch.zeros(len(data.noisy_labels), data.info.num_classes)
    for k in range(FOLDS):
        held = order[k::FOLDS]
        keep = train[~torch.isin(train, held)]
        trial = make_trial(cfg, data=dataclasses.replace(data, train_idx=keep))
        for _ in trial.records():
            pass
        model = trial.engine.prepare_model(trial.initial_weights(0))
        model.load_state_dict(trial.s.best_model)
        probs[held] = F.softmax(trial.feed.logits(model, held, False).float(), 1).cpu()
    given = data.noisy_labels[train].numpy()
    flagged = find_label_issues(given, probs[train].numpy())
    seconds = time.perf_counter() - start
    wrong = (data.noisy_labels[train] != data.clean_labels[train]).numpy()
    return {**scores(np.asarray(flagged, dtype=bool), wrong), "seconds": round(seconds, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--flip", type=float, default=0.3)
    p.add_argument("--noise", default="pairflip", choices=("pairflip", "symmetric"))
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--methods", nargs="+", default=list(SELECTING) + ["ce"])
    p.add_argument("--no-cleanlab", action="store_true", help="leave cleanlab's row out")
    args = p.parse_args()
    torch.set_num_threads(1)
    from memomentum.example_data import write

    folder = tempfile.mkdtemp(prefix="label-issues-")
    write("digits", os.path.join(folder, "digits-own"), args.flip, args.noise, 1)
    path = os.path.join(folder, "digits-own", "manifest.csv")
    rows = []
    for seed in args.seeds:
        base = {"dataset": "digits-own", "data_path": path, "seed": seed, "device": "cpu"}
        for method in args.methods:
            rows.append({"seed": seed, "answer": method, **method_answer(base, method)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        if args.no_cleanlab:
            continue
        try:
            rows.append({"seed": seed, "answer": "cleanlab", **cleanlab_answer(base)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        except ImportError:
            print("cleanlab is not installed (pip install cleanlab): its row is left out", file=sys.stderr)
    summary = {}
    for answer in dict.fromkeys(r["answer"] for r in rows):
        mine = [r for r in rows if r["answer"] == answer]
        summary[answer] = {k: round(float(np.mean([r[k] for r in mine if r[k] is not None])), 2)
                           for k in ("precision", "recall", "f1", "flagged", "seconds")
                           if any(r[k] is not None for r in mine)}
    print(json.dumps({"benchmark": "bench_label_issues", "data": f"digits, {args.noise} {args.flip:g} (example_data)",
                      "seeds": args.seeds, "torch": torch.__version__, "rows": rows, "mean": summary}))


if __name__ == "__main__":
    main()
