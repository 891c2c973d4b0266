"""The Tune function trainable: one grid cell = one complete memomentum trial.

For every epoch it calls `tune.report`; at every resumable point (round boundaries, and every
`checkpoint_every` epochs) it attaches a `tune.Checkpoint` holding the trial state, so that Tune's
FailureConfig retries continue where the trial stopped. A checkpoint holds the trial state
(state.pt) and the records up to it (records.json), so resuming never depends on another file.
Its own outputs go straight to the sweep storage, atomically:
    <sweep>/trials/<key>/trial.json     cell, resolved config, status, records so far, final result
    <sweep>/tensorboard/<key>/          TensorBoard scalars (local or NFS storage)
A trial.json whose status is "finished" is what marks a cell as done for every later run; one that
is damaged or missing makes the next run continue the cell from its newest intact checkpoint.
Progress lines and TensorBoard only report: their failures are one warning line, never the trial's.
"""
import io
import json
import logging
import math
import os
import sys
import tempfile
import time
from typing import Iterator, List, Optional

import torch

from memomentum.methods import columns
from memomentum.progress import dumps
from sweeps import hparams
from memomentum import exports, selections
from sweeps.layout import (ISSUES_FILE, MODEL_FILE, RECORDS_FILE, SELECTIONS, STATE_FILE, TENSORBOARD, TRIAL_FILE,
                           TRIALS)
from sweeps.storage import Storage


def finish_a_swallowed_exit(unraisable) -> None:
    """sys.unraisablehook of a sweep's worker process. Ray stops a worker (at a sweep's end, or an actor Tune no
    longer needs) with SIGTERM, whose handler raises SystemExit; when the signal lands while the garbage collector
    runs a callback, Python can only report that exception ("Exception ignored in ... SystemExit: 1", a traceback
    in the sweep's terminal) and carries on. This completes the exit the signal asked for, without the report;
    every other unraisable exception goes to the previous hook. Nothing is lost: every trial file is written
    atomically, and a worker stopped mid-trial resumes from its checkpoint, as after any kill."""
    exc = unraisable.exc_value
    if isinstance(exc, SystemExit):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(exc.code if isinstance(exc.code, int) else 1)
    _PREVIOUS_UNRAISABLEHOOK(unraisable)


_PREVIOUS_UNRAISABLEHOOK = sys.unraisablehook


def train_cell(config: dict, cells: dict, storage: str, sweep: str) -> None:
    """config["cell"] is the cell key; `cells` maps keys to cell specs (Cell.to_dict + resume_from). A tuning trial's
    config names its search instead (config["group"], sweeps/searching.py) and carries the sampled settings."""
    sys.unraisablehook = finish_a_swallowed_exit  # this process is a Ray worker (see the function)
    from ray import tune
    import ray

    from memomentum.errors import ConfigError
    from memomentum.methods import make_trial
    from memomentum.progress import ReportGuard, format_record
    from memomentum.trial import trial_document

    # one line per checkpoint from Ray would drown the per-round progress lines
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    cell = cells[config["cell"]] if "cell" in config else tuning_cell(cells[config["group"]], config)
    name = cell["name"]
    root = cell.get("root") or TRIALS  # where its files go: trials/, or tuning/trials/ for a tuning trial
    say = lambda line: print(f"[{name}] {line}", flush=True)  # noqa: E731  (problems: always said)
    tell = say if cell.get("verbose") else (lambda line: None)  # progress: the driver's terminal says it, or --verbose
    guard = ReportGuard(say)
    store = Storage(storage)
    cfg = cell_config(cell)

    trial = None
    for state, records, source in _states(tune.get_checkpoint(), cell.get("resume_from") or [], store, sweep,
                                          cell["key"], say, root):
        try:
            trial = make_trial(cfg, state=state, progress=tell)
            break
        except ConfigError as exc:  # a checkpoint this trial cannot continue from: try the next one
            say(f"cannot resume from {source} ({exc}); trying an older checkpoint or a fresh start")
    doc = trial_document(trial, records, cell=cell, node_id=ray.get_runtime_context().get_node_id(),
                         pid=os.getpid(), resumed_from=source, started=time.time())
    writer = guard("opening TensorBoard", _tensorboard, store, sweep, cell["key"], trial.s.step) or _NullWriter()
    if trial.s.step == 0:  # the trial's HParams entry, once: a resumed trial has written it already
        guard("TensorBoard hparams", _summary, writer, hparams.session_summary(
            {**cfg.to_dict(), "phase": cell.get("phase") or "reference"}, cell["key"], cell.get("searched") or ()))
    if source:
        say(f"resuming at epoch {trial.s.step} from {source}")
    guard("the start line", lambda: tell(f"on {trial.device} (node {doc['node_id'][:8]}), " + (
        f"resuming at epoch {trial.s.step}" if source else "fresh start")))

    pending = None  # the last epoch record, reported once its round (if it ends one) is merged in
    # the best noisy-validation score of any epoch so far: what a search's early stopping compares (sweeps/tuning.py)
    best_seen = max((r.get("val_score") or 0.0 for r in doc["records"] if r["kind"] == "epoch"), default=0.0)
    for record in trial.records():
        kind = record["kind"]
        if kind == "epoch":
            if pending is not None:
                _report(tune, pending, None)
            doc["records"].append(_plain(record))
            guard("TensorBoard", _log_epoch, writer, record)
            best_seen = max(best_seen, record.get("val_score") or 0.0)
            pending = {**record, "tune_score": best_seen}
            if record.get("resumable"):
                pending = _checkpoint(tune, trial, store, sweep, doc, pending)
        elif kind == "round":
            doc["records"].append(_plain(record))
            selection = trial.selection()
            if selection is not None:  # before the round's checkpoint: a resumed trial never lacks it
                store.write_atomic(selections.encode(selection), sweep, root, cell["key"], SELECTIONS,
                                   selections.file_name(selection["round"]))
            guard("TensorBoard", _log_round, writer, record)
            guard("a progress line", lambda: tell(format_record(record)))
            pending.update({f"round_{k}": v for k, v in record.items()
                            if isinstance(v, (int, float)) and not isinstance(v, bool)})
            if not trial.s.done:
                pending = _checkpoint(tune, trial, store, sweep, doc, pending)
        else:  # the result: its exports first, so that a finished trial never lacks them
            made = trial.exports()
            if made is not None and made["model"] is not None:
                store.write_atomic(exports.encode_model(made["model"]), sweep, root, cell["key"], MODEL_FILE)
            if made is not None and made["label_issues"] is not None:
                store.write_atomic(exports.encode_issues(made["label_issues"]), sweep, root, cell["key"], ISSUES_FILE)
            doc.update(status="finished", finished=time.time(), result=_plain(record))
            _write_doc(store, sweep, doc)
            guard("TensorBoard hparams", _final_metrics, writer, record)
            guard("closing TensorBoard", writer.close)
            if record.get("note"):
                guard("the note line", lambda: say(f"note: {record['note']}"))
            final = {k: v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            if record.get("note"):
                final["note"] = record["note"]
            _report(tune, {**(pending or {}), **{f"final_{k}": v for k, v in final.items()}, "finished": 1}, None)


def tuning_cell(spec: dict, config: dict) -> dict:
    """The cell of a tuning trial: its search's base config with the settings Tune sampled (config)."""
    from sweeps.tuning import trial_of

    cfg = trial_of(spec["trial"], {k: config[k] for k in spec["searched"]})
    return {**spec, "key": cfg.trial_key(), "name": cfg.trial_name(), "trial": cfg.to_dict(), "resume_from": []}


def cell_config(cell: dict):
    """The trial config a cell runs with on the resources Ray gave it (execution-only changes: same key):
    DataLoader workers as many as its CPUs; torch's threads its CPUs less those workers (memomentum/threads.py:
    Ray's OMP_NUM_THREADS alone does not size torch's pools); a fractional GPU caps its share of the GPU's
    memory; a cell given no GPU never takes one (device auto would otherwise pick GPU 0 of a node it shares,
    uncounted by Ray)."""
    from memomentum.config import AUTO_WORKERS, TrialConfig
    from memomentum.stream import auto_workers
    from memomentum.threads import reserved_threads

    cfg = TrialConfig.from_dict(cell["trial"])
    gpu = cell.get("gpu", 0)
    if cfg.num_workers == AUTO_WORKERS:
        cfg = cfg.replace(num_workers=auto_workers(cell["cpu"]))
    cfg = cfg.replace(threads=reserved_threads(cfg, cell["cpu"]))
    if 0 < gpu < 1 and cfg.gpu_memory_fraction == 0:
        cfg = cfg.replace(gpu_memory_fraction=gpu)
    if gpu == 0 and cfg.device == "auto":
        cfg = cfg.replace(device="cpu")
    return cfg


def _checkpoint(tune, trial, store, sweep, doc, pending):
    """Write trial.json, then report the epoch with a checkpoint: the trial state plus the records
    up to it, so that resuming never depends on trial.json being intact."""
    _write_doc(store, sweep, doc)
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(trial.state_dict(), os.path.join(tmp, STATE_FILE))
        with open(os.path.join(tmp, RECORDS_FILE), "w") as fh:
            fh.write(dumps(doc["records"]))
        _report(tune, pending, tune.Checkpoint.from_directory(tmp))
    return None


def _report(tune, record: Optional[dict], checkpoint) -> None:
    if record is None:
        return
    metrics = {k: v for k, v in record.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}
    metrics["improved"] = int(bool(record.get("improved")))
    tune.report(metrics, checkpoint=checkpoint)


def _states(checkpoint, candidates: List[str], store: Storage, sweep: str, key: str, say,
            root: str = TRIALS) -> Iterator:
    """(state, records, source) to continue from, best first: Tune's own checkpoint (a retry inside
    this run), then the checkpoints earlier runs of the sweep left for this cell, newest first; last
    (None, [], None), a fresh start. A checkpoint is offered only with records that cover every epoch
    up to it, so a resumed trial can never finish with epochs missing from its tables."""
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            found = _load_checkpoint(lambda name: _read_local(os.path.join(d, name)), store, sweep, key, root)
        if found is not None:
            yield (*found, "tune retry")
        else:
            say("skipping Tune's checkpoint: unreadable, or without the records of its epochs")
    for path in candidates:
        folder = path.rsplit("/", 1)[0]
        found = _load_checkpoint(lambda name: store.read(*f"{folder}/{name}".split("/")), store, sweep, key, root)
        if found is None:
            say(f"skipping checkpoint {path}: unreadable, or without the records of its epochs")
            continue
        yield (*found, path)
    yield None, [], None


def _load_checkpoint(read, store: Storage, sweep: str, key: str, root: str = TRIALS):
    """(state, records) from a checkpoint folder, or None if it cannot be used (the trial's folder: <root>/<key>)."""
    data = read(STATE_FILE)
    if data is None:
        return None
    try:
        state = torch.load(io.BytesIO(data), weights_only=True)
        step = int(state["step"])
    except Exception:  # cut short by a crash, or not a trial state
        return None
    for source in (read(RECORDS_FILE), store.read(sweep, root, key, TRIAL_FILE)):
        records = _records_up_to(source, step)
        if records is not None:
            return state, records
    return None


def _records_up_to(raw: Optional[bytes], step: int) -> Optional[list]:
    """The records of epochs 1..step (and their rounds) from a records.json list or a trial.json
    document; None unless every one of those epochs is there exactly once."""
    try:
        loaded = json.loads(raw)
        records = loaded["records"] if isinstance(loaded, dict) else loaded
        kept = [r for r in records if r["step"] <= step]
        epochs = sorted(r["step"] for r in kept if r["kind"] == "epoch")
    except Exception:  # None, truncated JSON, a foreign document
        return None
    return kept if epochs == list(range(1, step + 1)) else None


def _read_local(path: str) -> Optional[bytes]:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return None


def _write_doc(store: Storage, sweep: str, doc: dict) -> None:
    store.write_atomic(dumps(doc).encode(), sweep, (doc.get("cell") or {}).get("root") or TRIALS, doc["key"], TRIAL_FILE)


def _plain(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "resumable"}


# --- TensorBoard ----------------------------------------------------------------------------------
def _summary(writer, summary) -> None:
    """Write one Summary protobuf (the hparams plugin's) into the trial's event file."""
    if hasattr(writer, "_get_file_writer"):
        writer._get_file_writer().add_summary(summary)
        writer.flush()


def _final_metrics(writer, result: dict) -> None:
    """The HParams metrics of a finished trial: one point each, at its last epoch."""
    for tag, value in hparams.final_metrics(result).items():
        writer.add_scalar(tag, value, result.get("epochs") or 0)
    writer.flush()


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

    log_dir = store.local(sweep, TENSORBOARD, key)
    if log_dir is None:  # cloud storage: Tune uploads the trial folder's artifacts
        log_dir = os.path.join(tune.get_context().get_trial_dir(), "tensorboard")
    try:
        return SummaryWriter(log_dir=log_dir, purge_step=resume_step + 1 if resume_step else None)
    except OSError:
        return _NullWriter()


# TensorBoard scalar tag -> record field, derived from the declared record fields (memomentum/records.py, and
# each method's own columns)
EPOCH_SCALARS = {c.tag: c.name for c in columns("epoch") if c.tag}
ROUND_SCALARS = {c.tag: c.name for c in columns("round") if c.tag}


def _scalars(writer, tags: dict, r: dict) -> None:
    """One point per tag whose value this record has (unknown values are left out, never NaN)."""
    step = r.get("step")
    for tag, key in tags.items():
        value = r.get(key)
        if (step is not None and isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(value)):
            writer.add_scalar(tag, value, step)


def _log_epoch(writer, r: dict) -> None:
    _scalars(writer, EPOCH_SCALARS, r)


def _log_round(writer, r: dict) -> None:
    _scalars(writer, ROUND_SCALARS, r)
    writer.flush()
