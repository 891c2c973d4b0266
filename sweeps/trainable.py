"""The Tune function trainable: one grid cell = one complete memomentum trial.

For every epoch it calls `tune.report`; at every resumable point (round boundaries, and every
`checkpoint_every` epochs) it attaches a `tune.Checkpoint` holding the trial state, so that Tune's
FailureConfig retries continue where the trial stopped. Its own outputs go straight to the sweep
storage, atomically:
    <sweep>/trials/<key>/trial.json     cell, resolved config, status, records so far, final result
    <sweep>/tensorboard/<key>/          TensorBoard scalars (local or NFS storage)
A trial.json whose status is "finished" is what marks a cell as done for every later run.
"""
import io
import json
import logging
import os
import tempfile
import time
from typing import List, Optional

import torch

from sweeps.storage import Storage

TRIAL_FILE = "trial.json"
STATE_FILE = "state.pt"


def train_cell(config: dict, cells: dict, storage: str, sweep: str) -> None:
    """config["cell"] is the cell key; `cells` maps keys to cell specs (Cell.to_dict + resume_from)."""
    from ray import tune
    import ray

    from memomentum.config import TrialConfig
    from memomentum.procedure import make_trial, trial_document

    # one line per checkpoint from Ray would drown the per-round progress lines
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    cell = cells[config["cell"]]
    store = Storage(storage)
    torch.set_num_threads(max(1, int(cell["cpu"])))
    cfg = TrialConfig.from_dict(cell["trial"])

    state, source = _find_state(tune.get_checkpoint(), cell.get("resume_from") or [], store)
    records = _previous_records(store, sweep, cell["key"], state)
    trial = make_trial(cfg, state=state)
    doc = trial_document(trial, records, cell=cell, node_id=ray.get_runtime_context().get_node_id(),
                         pid=os.getpid(), resumed_from=source, started=time.time())
    writer = _tensorboard(store, sweep, cell["key"], trial.s["step"])
    print(f"[{cell['name']}] on {trial.device} (node {doc['node_id'][:8]}), "
          f"{'resuming at epoch ' + str(trial.s['step']) + ' from ' + source if source else 'fresh start'}",
          flush=True)

    pending = None  # the last epoch record, reported once its round (if it ends one) is merged in
    for record in trial.records():
        kind = record["kind"]
        if kind == "epoch":
            if pending is not None:
                _report(tune, pending, None)
            doc["records"].append(_plain(record))
            _log_epoch(writer, record)
            pending = {**record}
            if record.get("resumable"):
                pending = _checkpoint(tune, trial, store, sweep, doc, pending)
        elif kind == "round":
            doc["records"].append(_plain(record))
            _log_round(writer, record)
            print(f"[{cell['name']}] round {record['outer']}.{record['inner']}: confident "
                  f"{record['n_confident']} ({record['precision']:.1f}% clean), val {record['val_score']:.2f}, "
                  f"test {record['test_acc']:.2f}", flush=True)
            pending.update({f"round_{k}": v for k, v in record.items()
                            if isinstance(v, (int, float)) and not isinstance(v, bool)})
            if not trial.s["done"]:
                pending = _checkpoint(tune, trial, store, sweep, doc, pending)
        else:  # the result
            doc.update(status="finished", finished=time.time(), result=_plain(record))
            _write_doc(store, sweep, doc)
            writer.close()
            final = {k: v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            _report(tune, {**(pending or {}), **{f"final_{k}": v for k, v in final.items()}, "finished": 1}, None)


def _checkpoint(tune, trial, store, sweep, doc, pending):
    """Write trial.json, then report the epoch with a checkpoint of the trial state."""
    _write_doc(store, sweep, doc)
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(trial.state_dict(), os.path.join(tmp, STATE_FILE))
        _report(tune, pending, tune.Checkpoint.from_directory(tmp))
    return None


def _report(tune, record: Optional[dict], checkpoint) -> None:
    if record is None:
        return
    metrics = {k: v for k, v in record.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}
    metrics["improved"] = int(bool(record.get("improved")))
    tune.report(metrics, checkpoint=checkpoint)


def _find_state(checkpoint, candidates: List[str], store: Storage):
    """The trial state to continue from: Tune's own checkpoint (a retry inside this run), else the
    newest readable checkpoint an earlier run of the sweep left for this cell, else None."""
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            return torch.load(os.path.join(d, STATE_FILE), weights_only=True), "tune retry"
    for path in candidates:
        data = store.read(*path.split("/"))
        if data is None:
            continue
        try:
            return torch.load(io.BytesIO(data), weights_only=True), path
        except Exception:  # a checkpoint cut short by a crash: fall back to the one before
            continue
    return None, None


def _previous_records(store: Storage, sweep: str, key: str, state: Optional[dict]) -> list:
    """Records an earlier attempt wrote, up to the epoch the resumed state stands at (a later
    checkpoint may have been lost while its trial.json was already written)."""
    if state is None:
        return []
    raw = store.read(sweep, "trials", key, TRIAL_FILE)
    records = json.loads(raw)["records"] if raw else []
    return [r for r in records if r["step"] <= state["step"]]


def _write_doc(store: Storage, sweep: str, doc: dict) -> None:
    store.write_atomic(json.dumps(doc).encode(), sweep, "trials", doc["key"], TRIAL_FILE)


def _plain(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "resumable"}


# --- TensorBoard ----------------------------------------------------------------------------------
class _NullWriter:
    def add_scalar(self, *a, **k):
        pass

    def flush(self):
        pass

    def close(self):
        pass


def _tensorboard(store: Storage, sweep: str, key: str, resume_step: int):
    """A SummaryWriter under <sweep>/tensorboard/<key>; purge_step drops points an interrupted
    attempt logged beyond the resumed epoch, so the curves stay single-valued."""
    from ray import tune
    from torch.utils.tensorboard import SummaryWriter

    log_dir = store.local(sweep, "tensorboard", key)
    if log_dir is None:  # cloud storage: Tune uploads the trial folder's artifacts
        log_dir = os.path.join(tune.get_context().get_trial_dir(), "tensorboard")
    try:
        return SummaryWriter(log_dir=log_dir, purge_step=resume_step + 1 if resume_step else None)
    except OSError:
        return _NullWriter()


def _log_epoch(writer, r: dict) -> None:
    step = r["step"]
    writer.add_scalar("train/loss", r["train_loss"], step)
    writer.add_scalar("train/acc_noisy", r["train_acc"], step)
    writer.add_scalar("train/n_examples", r["n_train"], step)
    writer.add_scalar("train/lr", r["lr"], step)
    writer.add_scalar("val/score", r["val_score"], step)
    writer.add_scalar("val/best", r["best_val_score"], step)
    writer.add_scalar("test/acc_at_best_val", r["best_test_acc"], step)
    if r.get("test_acc") is not None:
        writer.add_scalar("test/acc_measured", r["test_acc"], step)


def _log_round(writer, r: dict) -> None:
    step = r["step"]
    for name in ("n_confident", "precision", "recall", "n_hard", "hard_precision", "val_score"):
        if r.get(name) is not None:
            writer.add_scalar(f"round/{name}", r[name], step)
    writer.flush()
