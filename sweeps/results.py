"""Collect a sweep's per-trial files into Arrow tables, written atomically as Parquet:

    <sweep>/results/trials.parquet       one row per trial (cell keys, status, accuracies, noise, ...)
    <sweep>/results/rounds.parquet       one row per round (confident-set size, precision, recall, hard)
    <sweep>/results/epochs.parquet       one row per epoch
    <sweep>/results/paper_table.parquet  mean +- std over seeds beside the published numbers
    <sweep>/results/paper_table.md       the same, rendered
    <sweep>/results/selections.parquet/  the examples each round selected, one row per (trial, round, example):
                                         a Parquet dataset, one part per trial (memomentum/selections.py)

Works on finished and partial sweeps alike: unfinished trials appear with their status and records
so far. Each file is replaced by one rename, so a crash while collecting leaves the previous tables.
The schemas are derived from the record fields memomentum declares (memomentum/records.py) and the
columns each registered method adds (Method.columns); nothing here names a method's field.
"""
import io
import json
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pyarrow as pa
import yaml
import pyarrow.compute as pc
import pyarrow.parquet as pq

from memomentum import exports, selections
from memomentum.config import stored_config
from memomentum.errors import clip, short
from memomentum.methods import columns
from sweeps import tables, tuning
from sweeps import layout
from sweeps.storage import Storage, StorageError

CELL = [("key", pa.string()), ("name", pa.string()), ("dataset", pa.string()), ("noise_type", pa.string()),
        ("noise_rate", pa.float64()), ("noise_label", pa.string()), ("seed", pa.int64()), ("method", pa.string())]
# trials.parquet around the result's fields: what the trial document and its config say
TRIAL_HEAD = [("status", pa.string()), ("model", pa.string()), ("precision_mode", pa.string()), ("compile", pa.bool_())]
TRIAL_TAIL = [("node_id", pa.string()), ("device", pa.string()), ("matmul_precision", pa.string()),
              ("resumed", pa.bool_()), ("error", pa.string()), ("config_json", pa.string()),
              ("data_fingerprint", pa.string()),  # a data set given by a path: the version of its files (else null)
              ("finished_at", pa.float64()),  # when the trial finished (seconds since the epoch; null: not yet)
              ("data_superseded", pa.bool_()),  # made from files its data set has since replaced (a newer fingerprint)
              ("tuned", pa.bool_())]  # with the settings a `tune:` search chose (sweeps/tuning.py)


def arrow_fields(kind: str) -> List[Tuple[str, pa.DataType]]:
    """The columns of record kind `kind`: the shared fields and every registered method's (memomentum.records)."""
    return [(c.name, pa.type_for_alias(c.type)) for c in columns(kind)]


TRIALS = pa.schema(CELL + TRIAL_HEAD + arrow_fields("result") + TRIAL_TAIL)
ROUNDS = pa.schema(CELL + arrow_fields("round"))
EPOCHS = pa.schema(CELL + arrow_fields("epoch"))
SELECTIONS = pa.schema(CELL + [(f, pa.int64()) for f in selections.FIELDS]
                       + [("index", pa.int64()), ("noisy_label", pa.int64()), ("clean", pa.bool_()),
                          ("example", pa.string()), ("noisy_class", pa.string())])
# the label issues of a trial with `export` (memomentum/exports.py), named as its data set names its examples
ISSUES = pa.schema(CELL + [("index", pa.int64()), ("example", pa.string()), ("given_label", pa.int64()),
                           ("given_class", pa.string()), ("predicted_label", pa.int64()),
                           ("predicted_class", pa.string()), ("predicted_prob", pa.float64()),
                           ("label_quality", pa.float64()), ("rounds_kept", pa.int64()),
                           ("in_final_selection", pa.bool_()), ("is_label_issue", pa.bool_()), ("clean", pa.bool_())])
# across the finished trials of one data set, noise setting and seed (the same labels and split): one row per example
CONSENSUS = pa.schema([("dataset", pa.string()), ("noise_type", pa.string()), ("noise_rate", pa.float64()),
                       ("noise_label", pa.string()), ("seed", pa.int64()), ("index", pa.int64()),
                       ("example", pa.string()), ("given_label", pa.int64()), ("given_class", pa.string()),
                       ("trials", pa.int64()), ("flagged", pa.int64()), ("flagged_by", pa.list_(pa.string())),
                       ("label_quality", pa.float64()), ("is_label_issue", pa.bool_()), ("clean", pa.bool_())])


class Collector:
    """Reads trial files (re-parsing only those that changed since the last call) and writes tables.

    A file that cannot be used (cut short, not a trial document, values the tables cannot hold) is
    left out and named in `skipped`, one line each, for the caller to print: never silently, never
    with a traceback. A cell whose trial failed before writing trial.json still gets a row, from the
    error.json the runner wrote for it."""

    def __init__(self, store: Storage, sweep: str):
        self.store, self.sweep = store, sweep
        self._cache: Dict[str, tuple] = {}  # key -> (stamps, (doc, tables) or None, reason)
        self._parts: Dict[str, tuple] = {}  # key -> the stamps of the round files its selections part was made of
        self._issue_parts: Dict[str, tuple] = {}  # key -> the stamp of the label-issues file its part was made of
        self._names: Dict[tuple, tuple] = {}  # (data set, fingerprint) -> (example names, class names) or (None, None)
        self.skipped: List[str] = []  # trial files left out by the latest collection
        self.selection_warnings: List[str] = []  # selection round files found missing or damaged, each said once

    def _entries(self) -> List[Tuple[dict, Dict[str, pa.Table]]]:
        out, self.skipped = [], []
        for key in self.store.listdir(self.sweep, layout.TRIALS):
            stamps = (self.store.stamp(self.sweep, *layout.trial_file(key)),
                      self.store.stamp(self.sweep, *layout.error_file(key)))
            if stamps == (None, None):
                continue
            cached = self._cache.get(key)
            if cached is None or cached[0] != stamps:
                try:
                    cached = (stamps, self._read(key, stamps[0] is not None, stamps[1] is not None), None)
                except ValueError as exc:
                    cached = (stamps, None, str(exc))
                self._cache[key] = cached
            if cached[1] is None:
                self.skipped.append(f"{self.store.uri(self.sweep, layout.TRIALS, key)}: {cached[2]}")
            else:
                out.append(cached[1])
        return out

    def _read(self, key: str, has_trial: bool, has_error: bool):
        """(doc, per-trial tables) of one trial folder; ValueError saying why it cannot be used."""
        error = _read_error(self.store.read(self.sweep, *layout.error_file(key))) if has_error else None
        if has_trial:
            doc = _parse_doc(self.store.read(self.sweep, *layout.trial_file(key)), key)
        elif error is not None and error.get("cell"):  # failed before its first record
            cell = error["cell"]
            doc = {"key": key, "name": cell.get("name", key), "config": cell.get("trial"), "status": "error",
                   "records": []}
            _check_doc(doc, key)
        else:
            raise ValueError("only an error.json without the cell it belongs to; delete the folder if unwanted")
        if error is not None and doc["status"] != "finished":
            doc["status"], doc["error"] = "error", error.get("error") or "unknown error"
        return doc, _doc_tables(doc)

    def trial_docs(self) -> List[dict]:
        return [doc for doc, _ in self._entries()]

    def tables(self) -> Dict[str, pa.Table]:
        parts = [t for _, t in self._entries()]
        out = {name: pa.concat_tables([p[name] for p in parts]) if parts else schema.empty_table()
               for name, schema in (("trials", TRIALS), ("rounds", ROUNDS), ("epochs", EPOCHS))}
        out["trials"] = _mark_tuned(_mark_superseded_data(out["trials"]),
                                    tuning.latest(tuning.read_chosen(self.store, self.sweep)))
        out["paper_table"] = tables.paper_table(out["trials"])
        return out

    def markdown(self, t: Dict[str, pa.Table]) -> str:
        """paper_table.md of the tables `t`."""
        return tables.render_markdown(t["paper_table"], t["trials"], title=f"Sweep `{self.sweep}`")

    def write(self, t: Optional[Dict[str, pa.Table]] = None) -> Dict[str, pa.Table]:
        """Rebuild every results file (from the tables `t`, or collected now); returns the tables. All files are
        serialised before the first one is replaced, and each replacement is one rename."""
        t = t if t is not None else self.tables()
        files = {}
        for name in ("trials", "rounds", "epochs", "paper_table"):
            files[f"{name}.parquet"] = _parquet(t[name])
        files["paper_table.md"] = self.markdown(t).encode()
        for name, data in files.items():
            self.store.write_atomic(data, self.sweep, layout.RESULTS, name)
        self.write_selections()
        self.write_label_issues()
        self.write_tuning()
        return t

    def write_tuning(self) -> None:
        """results/tuning.parquet (every tuning trial of the sweep's searches) and results/tuned.yaml (the settings
        each finished search chose), when the sweep has searches (sweeps/tuning.py)."""
        groups = [g for g in self.store.listdir(self.sweep, tuning.FOLDER) if g != "trials"]
        if not groups:
            return
        chosen = tuning.read_chosen(self.store, self.sweep)
        rows = []
        for group in groups:
            picked = chosen.get(group, {}).get("trial")
            for r in tuning.read_records(self.store, self.sweep, group):
                rows.append({**{k: r.get(k) for k in ("group", "label", "method", "key", "status", "best_val_score",
                                                     "running_val_score", "epochs", "seconds", "error")},
                             "trial": r["index"], "settings": json.dumps(r.get("settings"), sort_keys=True),
                             "stopped_early": r["status"] == "stopped", "chosen": picked == r["index"]})
        self.store.write_atomic(_parquet(pa.Table.from_pylist(rows, schema=TUNING)), self.sweep, layout.RESULTS,
                                "tuning.parquet")
        tuned = {}
        for doc in tuning.latest(chosen).values():
            dataset, kind, setting, method = _label_parts(doc["label"], doc["method"])
            tuned.setdefault(dataset, {}).setdefault(f"{kind} {setting}", {})[method] = doc["settings"]
        text = ("# The settings each method's search chose (sweeps/tuning.py): per data set and noise setting, ready "
                "for a grid's\n# method_config (one data set and noise setting) or method_config per cell.\n"
                + yaml.safe_dump(tuned, sort_keys=True))
        self.store.write_atomic(text.encode(), self.sweep, layout.RESULTS, "tuned.yaml")

    def names(self, doc: dict) -> tuple:
        """(each training example's name, the class names) of a trial's data set given by a path, from the sweep's
        datasets/ folder; (None, None) for a built-in data set, or when that table is missing."""
        config = doc["config"]
        key = (config.get("dataset"), config.get("data_fingerprint"))
        if not key[1]:
            return None, None
        if key not in self._names:
            raw = self.store.read(self.sweep, *layout.examples_file(*key))
            self._names[key] = (None, None)
            if raw is not None:
                try:
                    table = pq.read_table(io.BytesIO(raw))
                    classes = json.loads((table.schema.metadata or {}).get(b"classes", b"[]"))
                    self._names[key] = (np.asarray(table.column("example").to_pylist(), dtype=object),
                                        np.asarray(classes, dtype=object))
                except (pa.ArrowException, ValueError, KeyError):
                    pass
        return self._names[key]

    def write_label_issues(self) -> None:
        """Bring results/label_issues.parquet/ (a part per exporting trial, most likely mislabelled first) and
        results/label_issues_consensus.parquet (across the finished trials of each data set, noise setting and seed)
        up to date."""
        table = (self.sweep, layout.RESULTS, layout.ISSUES_TABLE)
        docs = {doc["key"]: doc for doc in self.trial_docs()}
        changed = False
        for key, doc in docs.items():
            stamp = self.store.stamp(self.sweep, layout.TRIALS, key, layout.ISSUES_FILE)
            if stamp is None or self._issue_parts.get(key) == stamp:
                continue
            made = self.store.mtime(*table, f"{key}.parquet")
            if key not in self._issue_parts and made is not None and made * 1e9 > stamp[0]:
                self._issue_parts[key] = stamp
                continue
            columns = exports.decode_issues(self.store.read(self.sweep, layout.TRIALS, key, layout.ISSUES_FILE) or b"")
            if columns is None:
                self._warn(f"{self.store.uri(self.sweep, layout.TRIALS, key, layout.ISSUES_FILE)} is not a label-issues "
                           f"file (cut short?); run the cell afresh to export it again")
                self._issue_parts[key] = stamp
                continue
            self.store.write_atomic(_parquet(self._issues_part(doc, columns), compression="zstd"), *table, f"{key}.parquet")
            self._issue_parts[key] = stamp
            changed = True
        for part in self.store.listdir(*table):
            if part.endswith(".parquet") and part[:-len(".parquet")] not in docs:
                self.store.delete(*table, part)
                self._issue_parts.pop(part[:-len(".parquet")], None)
                changed = True
        consensus = (self.sweep, layout.RESULTS, layout.CONSENSUS_TABLE)
        if changed or (self._issue_parts and self.store.stamp(*consensus) is None):
            stale = {r["key"] for r in self.tables()["trials"].to_pylist() if tables.superseded(r)}
            current = [k for k, d in docs.items() if d["status"] == "finished" and k in self._issue_parts
                       and k not in stale]
            parts = [_read_issues(self.store.read(*table, f"{k}.parquet")) for k in current]
            self.store.write_atomic(_parquet(consensus_table([p for p in parts if p is not None])), *consensus)

    def _issues_part(self, doc: dict, c: dict) -> pa.Table:
        cell, n = _cell_columns(doc), len(c["index"])
        names, classes = self.names(doc)

        def named(values, source, unknown=None):
            if source is None:
                return pa.array([None] * n, type=pa.string())
            return pa.array(source[np.maximum(values, 0)], type=pa.string(), mask=unknown)

        order = np.argsort(c["label_quality"], kind="stable")  # most likely mislabelled first
        c = {k: v[order] for k, v in c.items()}
        table = pa.table({**{k: pa.array([cell[k]] * n, type=ISSUES.field(k).type) for k, _ in CELL},
                          "index": pa.array(c["index"]), "example": named(c["index"], names),
                          "given_label": pa.array(c["given_label"]), "given_class": named(c["given_label"], classes),
                          "predicted_label": pa.array(c["predicted_label"], mask=c["predicted_label"] < 0),
                          "predicted_class": named(c["predicted_label"], classes, c["predicted_label"] < 0),
                          "predicted_prob": pa.array(c["predicted_prob"].astype(np.float64), from_pandas=True),
                          "label_quality": pa.array(c["label_quality"].astype(np.float64), from_pandas=True),
                          "rounds_kept": pa.array(c["rounds_kept"], mask=c["rounds_kept"] < 0),
                          "in_final_selection": pa.array(c["in_final_selection"] == 1, mask=c["in_final_selection"] < 0),
                          "is_label_issue": pa.array(c["is_label_issue"] == 1),
                          "clean": pa.array(c["clean"] == 1, mask=c["clean"] < 0)}, schema=ISSUES)
        return table

    def write_selections(self) -> None:
        """Bring results/selections.parquet/ up to date: a trial's part is rewritten when its round files changed
        since the part was made (a part of a trial whose folder is gone is removed). Each part is one rename.

        A round file that is missing or cannot be read (cut short, overwritten) never costs the rows the part
        already holds: they are kept, and the file is written back from them. Every such file is named in one line
        of `selection_warnings` (for the caller to print), with what was done and what to do."""
        table = (self.sweep, layout.RESULTS, layout.SELECTIONS_TABLE)
        docs = {doc["key"]: doc for doc in self.trial_docs()}
        for key, doc in docs.items():
            present = [n for n in self.store.listdir(self.sweep, *layout.selection_dir(key)) if n.endswith(".npz")]
            part = f"{key}.parquet"
            made = self.store.mtime(*table, part)
            if not present and made is None:
                continue  # a method that selects nothing (or a trial from before selections were exported)
            expected = [selections.file_name(r) for r in range(_round_count(doc))] if present or made else []
            files = sorted(set(present) | set(expected))
            stamps = tuple(self.store.stamp(self.sweep, *layout.selection_file(key, n)) for n in files)
            if self._parts.get(key) == stamps:
                continue
            if (key not in self._parts and made is not None and None not in stamps
                    and made * 1e9 > max(s[0] for s in stamps)):
                self._parts[key] = stamps  # made by an earlier run from these very files
                continue
            rows = self._selection_part(doc, files, table)
            self.store.write_atomic(_parquet(rows, compression="zstd"), *table, part)
            self._parts[key] = tuple(self.store.stamp(self.sweep, *layout.selection_file(key, n)) for n in files)
        for part in self.store.listdir(*table):
            if part.endswith(".parquet") and part[:-len(".parquet")] not in docs:
                self.store.delete(*table, part)
                self._parts.pop(part[:-len(".parquet")], None)

    def _selection_part(self, doc: dict, files: List[str], table: tuple) -> pa.Table:
        """One trial's selections as rows. A round file that is missing or unreadable takes its rows from the part
        the table already holds (written back to the file), or is named as lost."""
        key, cell, parts, old = doc["key"], _cell_columns(doc), [], None
        names, classes = self.names(doc)
        for name in files:
            where = self.store.uri(self.sweep, *layout.selection_file(key, name))
            raw = self.store.read(self.sweep, *layout.selection_file(key, name))
            picked = selections.decode(raw) if raw is not None else None
            if picked is None:
                if old is None:
                    old = _read_part(self.store.read(*table, f"{key}.parquet"))
                number = int(name[len("round-"):-len(".npz")])
                kept = old.filter(pc.equal(old["round"], number)) if old.num_rows else old
                what = "is missing" if raw is None else "is not a selection file (cut short or overwritten)"
                if kept.num_rows:
                    parts.append(kept)
                    try:
                        self.store.write_atomic(selections.encode(_selection_of(kept)), self.sweep,
                                                *layout.selection_file(key, name))
                        done = "written back from"
                    except (OSError, StorageError):  # a read-only folder: the part keeps them all the same
                        done = "kept from"
                    self._warn(f"{where} {what}; its {kept.num_rows} rows are {done} "
                               f"{self.store.uri(*table, f'{key}.parquet')} (nothing else to do)")
                else:
                    self._warn(f"{where} {what}, and no table holds its rows: that round's selection is lost (every "
                               f"other table is complete); to export it again, run the cell afresh: remove "
                               f"{self.store.uri(self.sweep, layout.TRIALS, key)} and its tune/*/{key} folders, then "
                               f"run the sweep")
                continue
            n = len(picked["index"])
            clean = picked["clean"]
            parts.append(pa.table(
                {**{k: pa.array([cell[k]] * n, type=SELECTIONS.field(k).type) for k, _ in CELL},
                 **{f: pa.array(np.full(n, picked[f], dtype=np.int64)) for f in selections.FIELDS},
                 "index": pa.array(picked["index"]), "noisy_label": pa.array(picked["noisy"]),
                 "clean": pa.array(clean == 1, mask=clean < 0),
                 "example": pa.array(names[picked["index"]] if names is not None else [None] * n, type=pa.string()),
                 "noisy_class": pa.array(classes[picked["noisy"]] if classes is not None else [None] * n,
                                         type=pa.string())}, schema=SELECTIONS))
        return pa.concat_tables(parts) if parts else SELECTIONS.empty_table()

    def _warn(self, line: str) -> None:
        if line not in self.selection_warnings:
            self.selection_warnings.append(line)

    def warnings(self) -> List[str]:
        """Every file this collector could not use as it was: trial files left out (`skipped`, of the latest
        collection) and selection round files kept or lost (`selection_warnings`, since it was made)."""
        return self.skipped + self.selection_warnings

    def __getstate__(self):
        """A pickled collector (Tune pickles its callbacks) carries its location, not its caches: they rebuild."""
        return {"store": self.store, "sweep": self.sweep}

    def __setstate__(self, state):
        self.__init__(state["store"], state["sweep"])

    def finished_keys(self) -> set:
        return {d["key"] for d in self.trial_docs() if d["status"] == "finished"}


TUNING = pa.schema([("group", pa.string()), ("label", pa.string()), ("method", pa.string()), ("trial", pa.int64()),
                    ("settings", pa.string()), ("key", pa.string()), ("status", pa.string()),
                    ("best_val_score", pa.float64()), ("running_val_score", pa.float64()), ("epochs", pa.int64()),
                    ("stopped_early", pa.bool_()), ("seconds", pa.float64()), ("chosen", pa.bool_()),
                    ("error", pa.string())])


def _label_parts(label: str, method: str) -> tuple:
    """(data set, noise type, rate or label set, method) of a search's label "<dataset>-<type>-<setting>-<method>"."""
    head = label[: -len(method) - 1]
    dataset_kind, _, setting = head.rpartition("-")
    dataset, _, kind = dataset_kind.rpartition("-")
    return dataset, kind, setting, method


def _mark_tuned(trials: pa.Table, chosen: Dict[str, dict]) -> pa.Table:
    """Mark the trials whose settings a finished search chose (their config, seed and execution settings aside, is
    the search's tuned config)."""
    if not chosen:
        return trials
    wanted = {json.dumps(doc.get("tuned_config"), sort_keys=True) for doc in chosen.values()}
    flags = [json.dumps(tuning.comparable(json.loads(config) if config else {}), sort_keys=True) in wanted
             for config in trials.column("config_json").to_pylist()]
    return trials.set_column(trials.schema.get_field_index("tuned"), "tuned", pa.array(flags, type=pa.bool_()))


def _mark_superseded_data(trials: pa.Table) -> pa.Table:
    """A data set given by a path whose files changed has finished trials of two fingerprints: those of the files
    its newest finished trial used are current, the others are marked `data_superseded` (kept, never mixed in)."""
    rows = trials.select(["dataset", "status", "data_fingerprint", "finished_at"]).to_pylist()
    newest = {}
    for r in rows:
        if r["data_fingerprint"] and r["status"] == "finished":
            known = newest.get(r["dataset"])
            if known is None or (r["finished_at"] or 0) > known[0]:
                newest[r["dataset"]] = (r["finished_at"] or 0, r["data_fingerprint"])
    flags = [bool(r["data_fingerprint"]) and r["dataset"] in newest and r["data_fingerprint"] != newest[r["dataset"]][1]
             for r in rows]
    index = trials.schema.get_field_index("data_superseded")
    return trials.set_column(index, "data_superseded", pa.array(flags, type=pa.bool_()))


def _read_issues(raw: Optional[bytes]) -> Optional[pa.Table]:
    try:
        return pq.read_table(io.BytesIO(raw)).select(ISSUES.names).cast(ISSUES) if raw else None
    except (pa.ArrowException, KeyError, ValueError):
        return None


def consensus_table(parts: List[pa.Table]) -> pa.Table:
    """Per data set, noise setting, seed and training example, across the trials that exported label issues (the
    same noisy labels and split, methods side by side): how many trials judged it, how many flagged it and which,
    the mean label quality, and the majority's verdict; most likely mislabelled first."""
    if not parts:
        return CONSENSUS.empty_table()
    issues = pa.concat_tables(parts)
    keys = ["dataset", "noise_type", "noise_rate", "noise_label", "seed", "index"]
    flagged = pc.if_else(issues["is_label_issue"], issues["method"], pa.scalar(None, pa.string()))
    issues = issues.append_column("flagged_method", flagged)
    grouped = issues.group_by(keys, use_threads=False).aggregate([
        ("label_quality", "mean"), ("is_label_issue", "sum"), ("is_label_issue", "count"), ("flagged_method", "list"),
        ("example", "first"), ("given_label", "first"), ("given_class", "first"), ("clean", "first")])
    trials, flags = grouped["is_label_issue_count"], grouped["is_label_issue_sum"]
    by = [sorted(m for m in methods if m is not None) for methods in grouped["flagged_method_list"].to_pylist()]
    out = pa.table({**{k: grouped[k] for k in keys[:-1]}, "index": grouped["index"],
                    "example": grouped["example_first"], "given_label": grouped["given_label_first"],
                    "given_class": grouped["given_class_first"], "trials": trials, "flagged": flags,
                    "flagged_by": pa.array(by, type=pa.list_(pa.string())),
                    "label_quality": grouped["label_quality_mean"],
                    "is_label_issue": pc.greater(pc.multiply(flags, 2), trials), "clean": grouped["clean_first"]},
                   schema=CONSENSUS)
    return out.sort_by([(k, "ascending") for k in keys[:-1]] + [("label_quality", "ascending")])


def _round_count(doc: dict) -> int:
    """The rounds a trial document records: its selections are round-0000.npz .. of as many files."""
    return sum(1 for r in doc["records"] if r["kind"] == "round")


def _read_part(raw: Optional[bytes]) -> pa.Table:
    """A trial's part of selections.parquet as it is (an empty table if it is missing or unreadable; columns added
    since it was written, null)."""
    try:
        table = pq.read_table(io.BytesIO(raw)) if raw else SELECTIONS.empty_table()
        for name in SELECTIONS.names:
            if name not in table.column_names:
                table = table.append_column(name, pa.nulls(table.num_rows, SELECTIONS.field(name).type))
        return table.select(SELECTIONS.names).cast(SELECTIONS)
    except (pa.ArrowException, KeyError, ValueError):
        return SELECTIONS.empty_table()


def _selection_of(rows: pa.Table) -> dict:
    """A round's selection (memomentum/selections.py) from its rows of the table."""
    first = rows.slice(0, 1).to_pylist()[0]
    clean = rows["clean"].to_pylist()
    return {**{f: first[f] for f in selections.FIELDS}, "index": rows["index"].to_numpy(),
            "noisy": rows["noisy_label"].to_numpy(), "clean": [-1 if c is None else int(c) for c in clean]}


def _parse_doc(raw: Optional[bytes], key: str) -> dict:
    try:
        doc = json.loads(raw)
    except (TypeError, ValueError, RecursionError):
        raise ValueError(f"{layout.TRIAL_FILE} is not valid JSON (cut short?); the next sweep run continues the cell "
                         f"from its newest checkpoint") from None
    _check_doc(doc, key)
    return doc


def _check_doc(doc: Any, key: str) -> None:
    """ValueError unless `doc` has the shape of a trial document of cell `key`."""
    def bad(what):
        raise ValueError(f"{layout.TRIAL_FILE} is not a trial document ({what}); the next sweep run continues the cell "
                         f"from its newest checkpoint")

    if not isinstance(doc, dict):
        bad(f"a {type(doc).__name__}, not a mapping")
    if doc.get("key") != key:
        bad(f"key {short(doc.get('key'))} does not match its folder")
    if doc.get("status") not in ("running", "finished", "error"):
        bad(f"status {short(doc.get('status'))}")
    config = doc.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("dataset"), str):
        bad("no config with a data set")
    records = doc.get("records")
    if not isinstance(records, list) or not all(isinstance(r, dict) and r.get("kind") in ("epoch", "round")
                                                for r in records):
        bad("no list of epoch and round records")
    if doc["status"] == "finished" and not isinstance(doc.get("result"), dict):
        bad("finished without a result")


def _read_error(raw: Optional[bytes]) -> Optional[dict]:
    """error.json as a mapping; a damaged one still marks the trial as failed."""
    if raw is None:
        return None
    try:
        error = json.loads(raw)
    except (TypeError, ValueError, RecursionError):
        error = None
    return error if isinstance(error, dict) else {"error": f"the trial failed; its {layout.ERROR_FILE} is unreadable"}


def _doc_tables(doc: dict) -> Dict[str, pa.Table]:
    """One trial's rows as Arrow tables; ValueError if a value does not fit the schema."""
    try:
        cell = _cell_columns(doc)
        rounds = [{**cell, **r} for r in doc["records"] if r["kind"] == "round"]
        epochs = [{**cell, **r} for r in doc["records"] if r["kind"] == "epoch"]
        return {"trials": _table([_trial_row(doc, cell)], TRIALS), "rounds": _table(rounds, ROUNDS),
                "epochs": _table(epochs, EPOCHS)}
    except (pa.ArrowException, TypeError, ValueError, KeyError, OverflowError) as exc:
        raise ValueError(f"holds values the tables cannot take ({type(exc).__name__}: "
                         f"{clip(exc, 100)})") from None


def _config(doc: dict) -> dict:
    """The trial's config, flat, with fields added since the file was written at their defaults."""
    return stored_config(doc["config"])


def _cell_columns(doc: dict) -> dict:
    c = _config(doc)
    return {"key": doc["key"], "name": doc["name"], "dataset": c["dataset"], "noise_type": c["noise_type"],
            "noise_rate": c["noise_rate"], "noise_label": c.get("noise_label") or "", "seed": c["seed"],
            "method": c["method"]}


def _trial_row(doc: dict, cell: dict) -> dict:
    """A trial's row: its result's fields (for a trial still running, what its records show so far) between
    what its document and config say."""
    result = doc.get("result") or {}
    records = doc["records"]
    rounds = [r for r in records if r["kind"] == "round"]
    last_round = rounds[-1] if rounds else {}
    last_epoch = next((r for r in reversed(records) if r["kind"] == "epoch"), {})
    so_far = {"test_acc": last_epoch.get("best_test_acc"), "best_val_score": last_epoch.get("best_val_score"),
              "epochs": last_epoch.get("step", 0), "seconds": last_epoch.get("seconds"), "n_rounds": len(rounds),
              "final_n_confident": last_round.get("n_confident"), "final_precision": last_round.get("precision"),
              "final_recall": last_round.get("recall"), "realized_noise_rate": doc.get("realized_noise_rate"),
              "label_hash": doc.get("label_hash"), "config_hash": doc["key"].rsplit("-", 1)[-1],
              "code_version": doc.get("code_version"), "method_version": doc.get("method_version")}
    config = _config(doc)
    return {**cell, "status": doc["status"], "model": config["model"], "precision_mode": config["precision"],
            "compile": config["compile"],
            **{name: result.get(name, so_far.get(name)) for name, _ in arrow_fields("result")},
            "node_id": doc.get("node_id"), "device": doc.get("device"), "matmul_precision": config.get("matmul_precision"),
            "resumed": bool(doc.get("resumed_from")), "error": doc.get("error"),
            "config_json": json.dumps(config, sort_keys=True), "data_fingerprint": config.get("data_fingerprint") or None,
            "finished_at": doc.get("finished") if isinstance(doc.get("finished"), (int, float)) else None,
            "data_superseded": False, "tuned": False}


def _parquet(table: pa.Table, **options) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, **options)
    return buf.getvalue()


def _table(rows: List[dict], schema: pa.Schema) -> pa.Table:
    names = schema.names
    return pa.Table.from_pylist([{k: row.get(k) for k in names} for row in rows], schema=schema)
