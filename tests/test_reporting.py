"""Nothing that only reports can lose a result: every formatter takes records whose optional fields are
missing or None (shown as n/a), JSON never holds NaN, and a reporting failure is one warning line while
the trial's result is still printed."""
import json
import math

import pyarrow as pa
import pytest

from memomentum import progress
from memomentum.progress import ReportGuard, dumps, fmt, format_record
from sweeps import report, tables, trainable
from sweeps.results import EPOCHS, ROUNDS, TRIALS, _doc_tables

EPOCH_FIELDS = ("outer", "inner", "epoch", "step", "lr", "n_train", "train_loss", "train_acc", "val_score",
                "improved", "test_acc", "best_val_score", "best_test_acc", "seconds", "kept_precision")
ROUND_FIELDS = ("outer", "inner", "stage", "epochs", "step", "n_confident", "precision", "recall", "n_hard",
                "hard_precision", "val_score", "stage_best", "best_val_score", "test_acc")


def sparse_records():
    """Epoch and round records with every optional field None, and with every field missing."""
    return [{"kind": "epoch", **{k: None for k in EPOCH_FIELDS}}, {"kind": "epoch"},
            {"kind": "round", **{k: None for k in ROUND_FIELDS}}, {"kind": "round"},
            {"kind": "epoch", "step": 3, "val_score": float("nan"), "train_loss": float("inf")}]


def test_fmt_shows_unknown_values_as_na():
    assert fmt(None, ".2f") == fmt(float("nan"), ".2f") == fmt(float("inf"), ".1f") == "n/a"
    assert fmt(12.345, ".1f") == "12.3" and fmt(3, "3d") == "  3" and fmt("x", ".2f") == "x"


@pytest.mark.parametrize("record", sparse_records())
def test_progress_lines_take_any_record(record):
    line = format_record(record)
    assert isinstance(line, str) and "None" not in line
    if record.get("kind") == "round" and "precision" in record:
        assert "precision n/a%" in line and "recall n/a%" in line


def test_tensorboard_writers_skip_unknown_values():
    class Writer:
        def __init__(self):
            self.points = []

        def add_scalar(self, tag, value, step):
            assert value is not None and math.isfinite(value)
            self.points.append((tag, value, step))

        def flush(self):
            pass

    writer = Writer()
    for record in sparse_records():
        (trainable._log_epoch if record["kind"] == "epoch" else trainable._log_round)(writer, record)
    assert writer.points == []  # nothing known, nothing drawn (the inf / NaN record included)
    trainable._log_round(writer, {"kind": "round", "step": 4, "n_confident": 10, "precision": None})
    assert writer.points == [("round/n_confident", 10, 4)]


def sparse_doc(status="finished"):
    return {"key": "digits-symmetric-0.2-s1-ce-abc", "name": "digits-symmetric-0.2-s1-ce", "status": status,
            "config": {"dataset": "digits", "noise_type": "symmetric", "noise_rate": 0.2, "seed": 1, "method": "ce"},
            "records": [{**r, "step": r.get("step")} for r in sparse_records()], "result": {"test_acc": None}}


def test_tables_figures_and_report_take_sparse_trials():
    parts = _doc_tables(sparse_doc())
    trials = parts["trials"]
    assert trials.num_rows == 1 and parts["epochs"].num_rows == 3 and parts["rounds"].num_rows == 2
    rows = [{k: None for k in TRIALS.names} | {"status": s, "key": f"k{i}", "name": f"n{i}"}
            for i, s in enumerate(("finished", "running", "error"))]
    sparse = pa.Table.from_pylist(rows, schema=TRIALS)
    paper = tables.paper_table(sparse)
    markdown = tables.render_markdown(paper, sparse)
    assert "No finished trials yet" in markdown
    all_tables = {"trials": sparse, "rounds": parts["rounds"], "epochs": parts["epochs"], "paper_table": paper}
    text = report.render_report("s", all_tables, [])
    assert "| n0 | finished | – |" in text
    assert report.accuracy_figure(sparse) is None
    report.rounds_figures(pa.Table.from_pylist([], schema=ROUNDS))
    report.extraction_figure(pa.Table.from_pylist([], schema=ROUNDS))
    assert pa.Table.from_pylist([], schema=EPOCHS).num_rows == 0


def test_json_never_holds_nan():
    text = dumps({"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": -float("inf")}, "e": 2.5})
    assert json.loads(text) == {"a": None, "b": [1.0, None], "c": {"d": None}, "e": 2.5}
    assert "NaN" not in text and "Infinity" not in text


def test_report_guard_turns_a_failure_into_one_warning():
    lines = []
    guard = ReportGuard(lines.append)

    def boom():
        raise TypeError("unsupported format string passed to NoneType.__format__")

    assert guard("a progress line", boom) is None
    assert guard("a progress line", boom) is None  # the same failure is reported once
    assert guard("TensorBoard", lambda: 7) == 7
    assert len(lines) == 1 and lines[0].startswith("warning: a progress line failed (TypeError")


def test_cli_prints_its_result_when_every_progress_line_fails(monkeypatch, capsys):
    from memomentum import __main__ as cli

    def broken(record):
        raise ValueError("a formatter bug")

    monkeypatch.setattr(cli, "format_record", broken)
    code = cli.main(["--dataset", "digits", "--device", "cpu", "--set", "epochs_per_stage=1", "--set", "max_outer=1",
                     "--set", "max_inner=2", "--log-every", "1"])
    out, err = capsys.readouterr()
    assert code == 0
    result = json.loads(out.strip().splitlines()[-1])
    assert result["epochs"] == 2 and len(result["rounds"]) == 2
    assert err.count("warning: a progress line failed (ValueError: a formatter bug)") == 1
    assert progress.format_record is not broken  # only the CLI's reference was replaced
