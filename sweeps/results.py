"""Collect a sweep's per-trial files into Arrow tables, written atomically as Parquet:

    <sweep>/results/trials.parquet       one row per trial (cell keys, status, accuracies, noise, ...)
    <sweep>/results/rounds.parquet       one row per round (confident-set size, precision, recall, hard)
    <sweep>/results/epochs.parquet       one row per epoch
    <sweep>/results/paper_table.parquet  mean +- std over seeds beside the published numbers
    <sweep>/results/paper_table.md       the same, rendered

Works on finished and partial sweeps alike: unfinished trials appear with their status and records
so far. Each file is replaced by one rename, so a crash while collecting leaves the previous tables.
"""
import io
import json
from typing import Dict, List, Optional

import pyarrow as pa
import pyarrow.parquet as pq

from memomentum.config import official_defaults
from sweeps import tables
from sweeps.storage import Storage
from sweeps.trainable import TRIAL_FILE

CELL = [("key", pa.string()), ("name", pa.string()), ("dataset", pa.string()), ("noise_type", pa.string()),
        ("noise_rate", pa.float64()), ("seed", pa.int64()), ("method", pa.string())]
TRIALS = pa.schema(CELL + [
    ("status", pa.string()), ("model", pa.string()), ("precision_mode", pa.string()),
    ("select_stage_a", pa.bool_()), ("compile", pa.bool_()), ("test_acc", pa.float64()), ("best_val_score", pa.float64()),
    ("best_stage", pa.string()), ("realized_noise_rate", pa.float64()), ("n_rounds", pa.int64()), ("epochs", pa.int64()), ("final_n_confident", pa.int64()),
    ("final_precision", pa.float64()), ("final_recall", pa.float64()), ("seconds", pa.float64()),
    ("node_id", pa.string()), ("device", pa.string()), ("config_hash", pa.string()), ("label_hash", pa.string()),
    ("resumed", pa.bool_()), ("error", pa.string()), ("config_json", pa.string())])
ROUNDS = pa.schema(CELL + [
    ("outer", pa.int64()), ("inner", pa.int64()), ("stage", pa.string()), ("epochs", pa.int64()),
    ("step", pa.int64()), ("n_confident", pa.int64()), ("precision", pa.float64()), ("recall", pa.float64()),
    ("n_hard", pa.int64()), ("hard_precision", pa.float64()), ("val_score", pa.float64()),
    ("stage_best", pa.float64()), ("best_val_score", pa.float64()), ("test_acc", pa.float64())])
EPOCHS = pa.schema(CELL + [
    ("outer", pa.int64()), ("inner", pa.int64()), ("epoch", pa.int64()), ("step", pa.int64()),
    ("lr", pa.float64()), ("n_train", pa.int64()), ("train_loss", pa.float64()), ("train_acc", pa.float64()),
    ("val_score", pa.float64()), ("improved", pa.bool_()), ("test_acc", pa.float64()),
    ("best_val_score", pa.float64()), ("best_test_acc", pa.float64()), ("seconds", pa.float64())])
RESULT_FILES = ("trials.parquet", "rounds.parquet", "epochs.parquet", "paper_table.parquet", "paper_table.md")


class Collector:
    """Reads trial files (re-parsing only those that changed since the last call) and writes tables."""

    def __init__(self, store: Storage, sweep: str):
        self.store, self.sweep = store, sweep
        self._cache: Dict[str, tuple] = {}

    def trial_docs(self) -> List[dict]:
        docs = []
        for key in self.store.listdir(self.sweep, "trials"):
            stamp = self.store.mtime_ns(self.sweep, "trials", key, TRIAL_FILE)
            if stamp is None:
                continue
            cached = self._cache.get(key)
            if cached is None or cached[0] != stamp:
                raw = self.store.read(self.sweep, "trials", key, TRIAL_FILE)
                try:
                    doc = json.loads(raw)
                except (TypeError, ValueError):
                    continue  # unreadable: skipped rather than failing the whole collection
                cached = (stamp, doc)
                self._cache[key] = cached
            doc = dict(cached[1])
            error = self.store.read(self.sweep, "trials", key, "error.json")
            if error and doc["status"] != "finished":
                doc["status"], doc["error"] = "error", json.loads(error).get("error", "")
            docs.append(doc)
        return docs

    def tables(self, docs: Optional[List[dict]] = None) -> Dict[str, pa.Table]:
        docs = self.trial_docs() if docs is None else docs
        trials, rounds, epochs = [], [], []
        for doc in docs:
            cell = _cell_columns(doc)
            trials.append(_trial_row(doc, cell))
            for r in doc["records"]:
                (rounds if r["kind"] == "round" else epochs).append({**cell, **r})
        out = {"trials": _table(trials, TRIALS), "rounds": _table(rounds, ROUNDS), "epochs": _table(epochs, EPOCHS)}
        out["paper_table"] = tables.paper_table(out["trials"])
        return out

    def write(self) -> Dict[str, pa.Table]:
        """Rebuild every results file; returns the tables. All files are serialised before the first
        one is replaced, and each replacement is one rename."""
        t = self.tables()
        files = {}
        for name in ("trials", "rounds", "epochs", "paper_table"):
            buf = io.BytesIO()
            pq.write_table(t[name], buf)
            files[f"{name}.parquet"] = buf.getvalue()
        markdown = tables.render_markdown(t["paper_table"], t["trials"], title=f"Sweep `{self.sweep}`")
        files["paper_table.md"] = markdown.encode()
        for name, data in files.items():
            self.store.write_atomic(data, self.sweep, "results", name)
        return t

    def finished_keys(self) -> set:
        return {d["key"] for d in self.trial_docs() if d["status"] == "finished"}


def _config(doc: dict) -> dict:
    """The trial's config, with fields added since the file was written at their defaults."""
    return {**official_defaults(doc["config"]["dataset"]), **doc["config"]}


def _cell_columns(doc: dict) -> dict:
    c = _config(doc)
    return {"key": doc["key"], "name": doc["name"], "dataset": c["dataset"], "noise_type": c["noise_type"],
            "noise_rate": c["noise_rate"], "seed": c["seed"], "method": c["method"]}


def _trial_row(doc: dict, cell: dict) -> dict:
    result = doc.get("result") or {}
    records = doc["records"]
    rounds = [r for r in records if r["kind"] == "round"]
    last_round = rounds[-1] if rounds else {}
    last_epoch = next((r for r in reversed(records) if r["kind"] == "epoch"), {})
    config = _config(doc)
    return {**cell, "status": doc["status"], "model": config["model"],
            "precision_mode": config["precision"], "select_stage_a": config["select_stage_a"],
            "compile": config["compile"],
            "best_stage": result.get("best_stage"),
            "test_acc": result.get("test_acc", last_epoch.get("best_test_acc")),
            "best_val_score": result.get("best_val_score", last_epoch.get("best_val_score")),
            "realized_noise_rate": doc.get("realized_noise_rate"), "n_rounds": len(rounds),
            "epochs": result.get("epochs", last_epoch.get("step", 0)),
            "final_n_confident": last_round.get("n_confident"), "final_precision": last_round.get("precision"),
            "final_recall": last_round.get("recall"),
            "seconds": result.get("seconds", last_epoch.get("seconds")), "node_id": doc.get("node_id"),
            "device": doc.get("device"), "config_hash": result.get("config_hash", doc["key"].rsplit("-", 1)[-1]),
            "label_hash": doc.get("label_hash"), "resumed": bool(doc.get("resumed_from")),
            "error": doc.get("error"), "config_json": json.dumps(config, sort_keys=True)}


def _table(rows: List[dict], schema: pa.Schema) -> pa.Table:
    names = schema.names
    return pa.Table.from_pylist([{k: row.get(k) for k in names} for row in rows], schema=schema)
