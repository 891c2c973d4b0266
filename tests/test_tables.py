import dataclasses
import json
import math

import pyarrow as pa

from memomentum.config import TrialConfig
from memomentum.methods import METHODS
from sweeps import runner, tables
from sweeps.results import TRIALS


def trials(rows):
    """Trial rows as the collector writes them; made by the current version of their method unless given."""
    base = {k: None for k in TRIALS.names}
    current = lambda r: METHODS[r["method"]].version if r.get("method") in METHODS else None  # noqa: E731
    return pa.Table.from_pylist([{**base, "status": "finished", "precision_mode": "fp32", "method_version": current(r),
                                  **r} for r in rows], schema=TRIALS)


def test_mean_std_over_seeds_with_published_reference_and_delta():
    t = trials([{"dataset": "cifar10", "method": "memomentum", "noise_type": "symmetric", "noise_rate": 0.2,
                 "seed": s, "test_acc": a} for s, a in ((1, 90.0), (2, 91.0), (3, 92.0))] +
               [{"dataset": "cifar10", "method": "memomentum", "noise_type": "symmetric", "noise_rate": 0.2,
                 "seed": 4, "test_acc": 10.0, "status": "running"}])
    row = tables.paper_table(t).to_pylist()[0]
    assert row["n"] == 3 and row["seeds"] == [1, 2, 3]
    assert row["mean"] == 91.0 and math.isclose(row["std"], 1.0)
    assert (row["ref_mean"], row["ref_std"]) == (91.44, 0.33)
    assert math.isclose(row["delta"], 91.0 - 91.44)


def test_no_reference_means_na_never_a_number():
    t = trials([{"dataset": "mnist", "method": "memomentum", "noise_type": "pairflip", "noise_rate": 0.45,
                 "seed": 1, "test_acc": 97.5},
                {"dataset": "cifar10", "method": "ce", "noise_type": "symmetric", "noise_rate": 0.2,
                 "seed": 1, "test_acc": 80.0}])
    table = tables.paper_table(t)
    assert all(r["ref_mean"] is None and r["delta"] is None for r in table.to_pylist())
    md = tables.render_markdown(table, t)
    assert "| mnist | memomentum | – | 97.50 (1) / n/a / n/a |" in md or "97.50 (1) / n/a / n/a" in md
    assert "| cifar10 | ce |" in md and "Co-teaching (published)" in md


def test_bf16_runs_are_kept_apart_and_labelled():
    rows = [{"dataset": "cifar10", "method": "memomentum", "noise_type": "symmetric", "noise_rate": 0.4,
             "seed": 1, "test_acc": 88.0, "precision_mode": mode} for mode in ("fp32", "bf16")]
    table = tables.paper_table(trials(rows))
    assert table.num_rows == 2
    bf16 = [r for r in table.to_pylist() if r["variant"] == "bf16"][0]
    assert bf16["ref_mean"] is None  # published numbers are compared with the faithful setting only
    assert "memomentum [bf16]" in tables.render_markdown(table)


def test_empty_sweep_renders():
    md = tables.render_markdown(tables.paper_table(trials([])), trials([]))
    assert "No finished trials yet" in md


def test_zero_by_official_rule_is_footnoted():
    t = trials([{"dataset": "digits", "method": "memomentum", "noise_type": "symmetric", "noise_rate": 0.2,
                 "seed": s, "test_acc": a, "best_stage": b} for s, a, b in ((1, 96.0, "B"), (2, 0.0, None))])
    md = tables.render_markdown(tables.paper_table(t), t)
    assert "Note: 1 trial(s) report 0" in md
    config = TrialConfig.from_dict({"dataset": "digits", "select_stage_a": True}).to_dict()
    staged = trials([{"dataset": "digits", "method": "memomentum", "noise_type": "symmetric", "noise_rate": 0.2,
                      "seed": 1, "test_acc": 96.0, "best_stage": "A", "config_json": json.dumps(config)}])
    assert tables.paper_table(staged).to_pylist()[0]["variant"] == "select_stage_a=True"


def test_welch_verdicts_against_the_published_numbers():
    def cell(method, accs):
        t = trials([{"dataset": "cifar10", "method": method, "noise_type": "pairflip", "noise_rate": 0.4,
                     "seed": s, "test_acc": a, "last_test_acc": a - 1, "last10_test_acc": a - 0.5}
                    for s, a in enumerate(accs, 1)])
        return tables.paper_table(t).to_pylist()[0]

    same = cell("memomentum", [87.0, 87.5, 88.0])  # published 87.49 +- 0.56
    assert same["verdict"] == "matches" and same["p_value"] > 0.05
    low = cell("memomentum", [80.0, 80.5, 81.0])
    assert low["verdict"] == "below" and low["p_value"] < 0.05
    high = cell("jocor", [90.0, 90.2, 90.4])  # published 83.91, no std: a one-sample test
    assert high["verdict"] == "above" and high["ref_std"] is None
    assert (high["last_mean"], high["last10_mean"], high["last_n"]) == (89.2, 89.7, 3)
    one = cell("memomentum", [87.0])
    assert one["verdict"] is None and one["p_value"] is None  # one seed: no test
    md = tables.render_markdown(tables.paper_table(trials([])), trials([]))
    assert "No finished trials" in md


def test_a_trial_off_the_official_settings_is_a_labelled_variant():
    faithful = TrialConfig.from_dict({"dataset": "cifar10", "method": "coteaching", "noise_type": "symmetric",
                                      "noise_rate": 0.2, "compile": True, "device": "cpu"})
    short = faithful.replace(epochs_per_stage=100, decay_start=40)
    rows = [{"dataset": "cifar10", "method": "coteaching", "noise_type": "symmetric", "noise_rate": 0.2, "seed": 1,
             "test_acc": 85.0, "config_json": json.dumps(cfg.to_dict())} for cfg in (faithful, short)]
    table = tables.paper_table(trials(rows)).to_pylist()
    variants = {r["variant"]: r for r in table}
    assert set(variants) == {"", "decay_start=40, epochs_per_stage=100"}  # compile and device are not variants
    assert variants[""]["ref_mean"] == 87.16 and variants["decay_start=40, epochs_per_stage=100"]["ref_mean"] is None
    md = tables.render_markdown(tables.paper_table(trials(rows)))
    assert "coteaching [decay_start=40, epochs_per_stage=100]" in md and "Welch" in md


def test_mixed_code_versions_and_superseded_method_versions_are_said_and_kept_apart(monkeypatch):
    cell = {"dataset": "cifar10", "method": "jocor", "noise_type": "symmetric", "noise_rate": 0.2}
    v = METHODS["jocor"].version
    rows = [{**cell, "seed": 1, "test_acc": 80.0, "code_version": "git:aaa", "method_version": v},
            {**cell, "seed": 2, "test_acc": 82.0, "code_version": "git:bbb", "method_version": v},
            {**cell, "seed": 3, "test_acc": 84.0, "code_version": "git:bbb", "method_version": v}]
    t = trials(rows)
    assert runner.paper.code_versions_line(t).startswith("Note: the finished trials come from 2 code versions: "
                                                        "git:bbb (2), git:aaa (1)")
    assert tables.code_versions_line(trials(rows[1:])) is None
    md = tables.render_markdown(tables.paper_table(t), t)
    assert "2 code versions" in md
    # an earlier version of the method: kept in trials, left out of the table, with a note
    monkeypatch.setitem(METHODS, "jocor", dataclasses.replace(METHODS["jocor"], version=v + 1))
    newer = trials(rows + [{**cell, "seed": 1, "test_acc": 90.0, "code_version": "git:ccc", "method_version": v + 1}])
    table = tables.paper_table(newer).to_pylist()
    assert len(table) == 1 and table[0]["n"] == 1 and table[0]["mean"] == 90.0
    md = tables.render_markdown(tables.paper_table(newer), newer)
    assert "Note: 3 finished trial(s) were made by another version of their method than this code's (3 by an " \
           "earlier version)" in md
    assert "code versions" not in md  # the table shows one code version's trials: nothing mixed


def test_a_newer_or_unknown_method_version_is_never_current():
    """A finished trial from a newer release of a method, or with a version no method has (0), is never taken for
    this code's: left out of the table, with a note that says which."""
    cell = {"dataset": "cifar10", "method": "jocor", "noise_type": "symmetric", "noise_rate": 0.2}
    v = METHODS["jocor"].version
    assert tables.version_mismatch("jocor", v) is None and tables.version_mismatch("jocor", v + 1) == "newer"
    assert tables.version_mismatch("jocor", 0) == "unknown" and tables.version_mismatch("jocor", "2") == "unknown"
    assert tables.version_mismatch("jocor", None) == (None if v == 1 else "earlier")  # files from before versions
    rows = [{**cell, "seed": 1, "test_acc": 80.0, "method_version": v + 1},
            {**cell, "seed": 2, "test_acc": 82.0, "method_version": 0},
            {**cell, "seed": 3, "test_acc": 84.0, "method_version": v}]
    t = trials(rows)
    table = tables.paper_table(t).to_pylist()
    assert len(table) == 1 and table[0]["seeds"] == [3]
    md = tables.render_markdown(tables.paper_table(t), t)
    assert "Note: 2 finished trial(s) were made by another version of their method than this code's (1 by a newer " \
           "version, 1 by an unknown version)" in md


def test_every_row_of_the_reference_table_is_compared_and_the_optimistic_section_stands_apart():
    from memomentum.methods import METHODS as registry

    published = {m.published for m in registry.values() if m.published}
    assert {"DMI", "Peer Loss", "Co-teaching", "JoCoR", "SELFIE", "CDR", "Me-Momentum", "PES", "SFT"} <= published
    rows = [{"dataset": "cifar10", "method": method, "noise_type": "instance", "noise_rate": 0.4, "seed": s,
             "test_acc": 85.0 + s, "best_test_acc": 88.0 + s} for method in ("pes", "sft", "dmi") for s in (1, 2, 3)]
    t = trials(rows)
    table = {r["method"]: r for r in tables.paper_table(t).to_pylist()}
    assert (table["pes"]["ref_mean"], table["sft"]["ref_mean"], table["dmi"]["ref_mean"]) == (89.73, 89.97, 84.78)
    assert table["pes"]["verdict"] in ("matches", "above", "below") and table["sft"]["best_mean"] == 90.0
    md = tables.render_markdown(tables.paper_table(t), t)
    assert "Optimistic: the best test accuracy" in md and "90.00 ± 1.00" in md
    assert "PES's published \"sym 40%\" column is the PES paper's symmetric 50% value" in md
    assert "SFT's published row is its best TEST accuracy" in md
    only_dmi = trials([r for r in rows if r["method"] == "dmi"])
    assert "PES's published" not in tables.render_markdown(tables.paper_table(only_dmi), only_dmi)


def test_a_trials_note_reaches_the_paper_table_and_its_brief_form():
    cell = {"dataset": "digits", "method": "dmi", "noise_type": "pairflip", "noise_rate": 0.4}
    note = "the DMI round moved no weight (...): this result is its cross-entropy warm-up's"
    rows = [{**cell, "seed": s, "test_acc": 70.0 + s, "note": note if s < 3 else None} for s in (1, 2, 3)]
    t = trials(rows)
    for brief in (False, True):
        md = tables.render_markdown(tables.paper_table(t), t, brief=brief)
        said = [line for line in md.splitlines() if line.startswith("Note: 2 dmi trial(s)")]
        assert len(said) == 1 and "digits pair 40% seed 1, digits pair 40% seed 2" in said[0] and note in said[0]


def test_a_data_set_without_a_trusted_test_set_is_shown_and_ranked_by_its_validation_score():
    cell = {"dataset": "pets", "noise_type": "real", "noise_rate": 0.0}
    rows = [{**cell, "method": m, "seed": s, "test_acc": None, "best_val_score": v + s}
            for m, v in (("ce", 60.0), ("memomentum", 70.0)) for s in (1, 2)]
    t = trials(rows)
    table = {r["method"]: r for r in tables.paper_table(t).to_pylist()}
    assert table["memomentum"]["n"] == 0 and table["memomentum"]["mean"] is None and table["memomentum"]["val_n"] == 2
    md = tables.render_markdown(tables.paper_table(t), t, brief=True)
    assert "| pets | memomentum | val 71.50 ± 0.71 (2) / no trusted test set |" in md
    assert "Note: pets: no test set with trusted labels" in md and "- pets, real noise: memomentum (71.50) > ce (61.50)" in md
