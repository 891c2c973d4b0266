"""Generated from the method registry, as timm tests every model: every registered method runs a few
epochs (on the embedded digits, or on a Clothing1M stand-in for methods that stream from disk), emits
the records the tables need, and resumes from every resumable record with identical records. A new
method gets these tests by being registered."""
import io
import json
import subprocess
import sys

import pytest
import torch

import memomentum
from memomentum.config import TrialConfig
from memomentum.data import DATASETS
from memomentum.errors import ConfigError
from memomentum import records as fields
from memomentum.methods import METHODS, columns, make_trial
from sweeps.results import EPOCHS, ROUNDS, TRIALS, _doc_tables
from tests.conftest import CLOTHING_TINY, DEVICE_CONFIG, write_clothing

DIGITS = {"dataset": "digits", "noise_type": "pairflip", "noise_rate": 0.3, "seed": 2, **DEVICE_CONFIG,
          "epochs_per_stage": 4, "checkpoint_every": 2}
LOOPS = {"max_outer": 2, "max_inner": 3}  # for the methods that have them
SHARED = {"epoch": fields.EPOCH, "round": fields.ROUND, "result": fields.RESULT}
SCHEMA = {"epoch": EPOCHS, "round": ROUNDS, "result": TRIALS}


def declared(name: str, kind: str) -> set:
    """The fields a record of `kind` of method `name` must hold: the shared ones and the method's own."""
    return {c.name for c in SHARED[kind]} | {c.name for c in METHODS[name].columns.get(kind, ())}


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("clothing-release")
    write_clothing(root)
    return str(root)


def config_for(name: str, release: str, **extra) -> TrialConfig:
    """A small config of method `name` on a data set it runs on."""
    if METHODS[name].supports(DATASETS["digits"]):
        loops = {k: v for k, v in LOOPS.items() if k in METHODS[name].options.field_types()}
        return TrialConfig.from_dict({**DIGITS, **loops, **METHODS[name].quick, "method": name, **extra})
    return TrialConfig.from_dict({"dataset": "clothing1m", "data_root": release, **CLOTHING_TINY,
                                  "checkpoint_every": 1, "method": name, **extra})


def strip(records):
    return [{k: v for k, v in r.items() if k not in ("seconds", "resumable")} for r in records]


def test_the_registry_holds_the_paper_method_its_baseline_and_the_clothing_variant():
    assert {"memomentum", "ce", "classwise"} <= set(METHODS)
    assert list(METHODS)[0] == "memomentum"  # the paper's method first in tables and figures
    for name, method in METHODS.items():
        assert method.name == name and method.summary and isinstance(method.trial, type)
        assert any(method.supports(info) for info in DATASETS.values()), name
    out = subprocess.run([sys.executable, "-c", "import memomentum; print(sorted(memomentum.METHODS))"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and eval(out.stdout) == sorted(METHODS)  # noqa: S307 - our own list repr


def test_list_methods_on_the_command_line():
    out = subprocess.run([sys.executable, "-m", "memomentum", "--list-methods"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    for name in METHODS:
        assert f"\n{name} " in "\n" + out.stdout
    assert "data sets: clothing1m" in out.stdout  # classwise


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_runs_and_emits_the_records_the_tables_need(name, release):
    cfg = config_for(name, release)
    records = list(make_trial(cfg).records())
    epochs = [r for r in records if r["kind"] == "epoch"]
    rounds = [r for r in records if r["kind"] == "round"]
    result = records[-1]
    assert result["kind"] == "result" and records.count(result) == 1
    assert epochs and rounds and [r["step"] for r in epochs] == list(range(1, len(epochs) + 1))
    for kind, rs in (("epoch", epochs), ("round", rounds), ("result", [result])):
        for r in rs:  # every declared field is there, and every field has a column (none is dropped silently)
            assert declared(name, kind) <= set(r), declared(name, kind) - set(r)
            untabled = set(r) - set(SCHEMA[kind].names) - set(fields.NOT_FIELDS) - set(fields.RESULT_ONLY)
            assert not untabled, f"{kind} fields without a column: {untabled}"
    assert result["method"] == name and result["epochs"] == len(epochs)
    assert result["method_version"] == METHODS[name].version and result["code_version"]
    assert len(result["rounds"]) == len(rounds) == result["n_rounds"]
    doc = {"key": cfg.trial_key(), "name": cfg.trial_name(), "config": cfg.to_dict(), "status": "finished",
           "records": [{k: v for k, v in r.items() if k != "resumable"} for r in records[:-1]], "result": result}
    tables = _doc_tables(json.loads(json.dumps(doc)))  # what the collector does with its trial.json
    assert tables["epochs"].num_rows == len(epochs) and tables["rounds"].num_rows == len(rounds)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_resumes_from_every_resumable_record_with_identical_records(name, release):
    cfg = config_for(name, release)
    trial = make_trial(cfg)
    full, states = [], []
    for record in trial.records():
        full.append(record)
        if record.get("resumable"):
            buffer = io.BytesIO()
            torch.save(trial.state_dict(), buffer)
            states.append((len(full), buffer.getvalue()))
    assert len(states) >= 2, "too few resumable points to test"
    for cut, data in states:
        state = torch.load(io.BytesIO(data), weights_only=True)
        tail = list(make_trial(cfg, state=state).records())
        assert strip(full[:cut]) + strip(tail) == strip(full), f"resuming after record {cut} changed the records"


@pytest.mark.parametrize("name", sorted(METHODS))
def test_a_checkpoint_of_another_method_is_refused(name, release):
    cfg = config_for(name, release)
    trial = make_trial(cfg)
    next(r for r in trial.records() if r.get("resumable"))
    state = trial.state_dict()
    other = next(m for m in METHODS if m != name and METHODS[m].supports(DATASETS[cfg.dataset]))
    with pytest.raises(ConfigError):
        make_trial(config_for(other, release), state=state)


def test_the_declared_columns_are_consistent():
    """Every method's extra columns have a valid type, do not shadow a shared field, and a name two methods
    declare has one type (columns() raises otherwise); their TensorBoard tags are unique."""
    for kind in fields.KINDS:
        merged = columns(kind)
        assert len({c.name for c in merged}) == len(merged)
        tags = [c.tag for c in merged if c.tag]
        assert len(tags) == len(set(tags)), tags
    for name, method in METHODS.items():
        own = method.options.field_types()
        assert not set(own) & set(TrialConfig.__dataclass_fields__), f"{name} options shadow shared fields"
        assert all(kind in fields.KINDS for kind in method.columns)
        for dataset, values in method.defaults.items():
            assert dataset == "*" or dataset in DATASETS
            TrialConfig.from_dict({"dataset": dataset if dataset != "*" else next(
                d for d, info in DATASETS.items() if method.supports(info)), "method": name, **values})


def test_methods_only_run_where_they_can():
    with pytest.raises(ConfigError, match="method memomentum does not run on clothing1m .* methods for clothing1m: "
                                          "ce, classwise"):
        TrialConfig.from_dict({"dataset": "clothing1m", "method": "memomentum"})
    with pytest.raises(ConfigError, match="method classwise does not run on digits"):
        TrialConfig.from_dict({"dataset": "digits", "method": "classwise"})
    assert TrialConfig.from_dict({"dataset": "clothing1m"}).method == "classwise"  # the data set's default
    assert TrialConfig.from_dict({"dataset": "digits"}).method == "memomentum"
    assert memomentum.DATASETS is DATASETS
