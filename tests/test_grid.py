"""Grid files are validated before Ray starts; every mistake is one line and exit code 2."""
import os
import sys

import pytest
import yaml

from memomentum.methods import METHODS
from sweeps.grid import GridError, load_grid, parse_grid
from tests import procs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

GOOD = {"name": "g", "datasets": ["digits"], "noise": [{"type": "symmetric", "rates": [0.2, 0.4]}],
        "seeds": [1, 2], "methods": ["memomentum", "ce"], "config": {"epochs_per_stage": 3}}


def test_cells_are_the_product_of_the_axes_with_stable_keys():
    grid = parse_grid(GOOD)
    assert len(grid.cells) == 1 * 2 * 2 * 2
    names = [c.name for c in grid.cells]
    assert "digits-symmetric-0.4-s2-ce" in names and len(set(names)) == 8
    again = parse_grid(GOOD)
    assert [c.key for c in grid.cells] == [c.key for c in again.cells]
    changed = parse_grid({**GOOD, "config": {"epochs_per_stage": 4}})
    assert not {c.key for c in grid.cells} & {c.key for c in changed.cells}
    assert all(c.config.epochs_per_stage == 3 and (c.cpu, c.gpu) == (1.0, 0.0) for c in grid.cells)


def test_resources_and_dataset_config_apply_per_dataset():
    raw = {**GOOD, "datasets": ["digits", "mnist"],
           "resources": {"default": {"cpu": 2, "gpu": 0.5}, "digits": {"gpu": 0}},
           "dataset_config": {"mnist": {"batch_size": 64}}}
    grid = parse_grid(raw)
    by = {c.config.dataset: c for c in grid.cells}
    assert (by["digits"].cpu, by["digits"].gpu) == (2.0, 0.0) and (by["mnist"].cpu, by["mnist"].gpu) == (2.0, 0.5)
    assert by["mnist"].config.batch_size == 64 and by["digits"].config.batch_size == 128


def test_a_shared_setting_of_one_methods_options_reaches_only_the_methods_that_have_it():
    """`config: {forget_rate: 0.3}` over memomentum and coteaching changes Co-teaching only: the memomentum trial's
    key, config and (official) row are those of a grid without it."""
    raw = {**GOOD, "methods": ["memomentum", "coteaching"], "config": {"epochs_per_stage": 3}}
    plain = {(c.config.method, c.name): c for c in parse_grid(raw).cells}
    forgetful = {(c.config.method, c.name): c for c in parse_grid({**raw, "config": {"epochs_per_stage": 3,
                                                                                     "forget_rate": 0.3}}).cells}
    for (method, name), cell in forgetful.items():
        if method == "memomentum":
            assert cell.key == plain[(method, name)].key and cell.to_dict() == plain[(method, name)].to_dict()
            assert "forget_rate" not in cell.config.to_dict()
        else:
            assert cell.key != plain[(method, name)].key and cell.config.options.forget_rate == 0.3


def test_method_config_applies_to_its_method_only():
    raw = {**GOOD, "methods": ["memomentum", "coteaching"],
           "method_config": {"coteaching": {"epochs_per_stage": 100, "decay_start": 40}}}
    by = {c.config.method: c.config for c in parse_grid(raw).cells}
    assert (by["coteaching"].epochs_per_stage, by["coteaching"].options.decay_start, by["coteaching"].lr) == (100, 40, 0.001)
    assert (by["memomentum"].epochs_per_stage, by["memomentum"].lr) == (3, 0.01)


@pytest.mark.parametrize("change, fragment", [
    ({"epochs": 3}, "unknown top-level key 'epochs'"),
    ({"datasets": ["svhn"]}, "unknown dataset 'svhn'"),
    ({"datasets": []}, "'datasets' must be a non-empty list"),
    ({"methods": ["coteachin"]}, "unknown method"),
    ({"method_config": {"jocor": {"co_lambda": 0.5}}}, "method_config names 'jocor', which is not in methods"),
    ({"method_config": {"ce": {"noise_rate": 0.5}}}, "method_config.ce sets 'noise_rate', which is a grid axis"),
    ({"methods": ["jocor"], "method_config": {"jocor": {"co_lambda": 2.0}}}, "co_lambda=2.0 must lie in [0, 1]"),
    ({"method_config": {"ce": {"co_lambda": 0.5}}}, "method_config.ce: config field 'co_lambda' is a setting of jocor, "
                                                    "not of ce"),
    ({"dataset_config": {"digits": {"forget_ratee": 0.5}}}, "dataset_config.digits: unknown config field 'forget_ratee' "
                                                            "(did you mean 'forget_rate'?)"),
    ({"method_config": {"ce": 3}}, "method_config.ce must be a mapping"),
    ({"seeds": [1, "two"]}, "every entry must be a whole number"),
    ({"seeds": [1.5]}, "every entry must be a whole number"),
    ({"noise": [{"type": "asym", "rates": [0.2]}]}, "unknown noise type 'asym'"),
    ({"noise": [{"type": "symmetric", "rates": [1.2]}]}, "rate 1.2 is outside [0, 1)"),
    ({"noise": [{"type": "symmetric", "rates": []}]}, "'rates' must be a non-empty list"),
    ({"noise": []}, "'noise' must be a non-empty list"),
    ({"config": {"epochs_per_stag": 3}}, "did you mean 'epochs_per_stage'"),
    ({"config": {"epochs_per_stage": "3"}}, "must be a whole number"),
    ({"config": {"model": "vgg"}}, "unknown model 'vgg'"),
    ({"config": {"seed": 3}}, "is a grid axis"),
    ({"resources": {"default": {"gpu": -1}}}, "resources.default.gpu"),
    ({"resources": {"cifar10": {"gpu": 1}}}, "neither 'default' nor one of the datasets"),
    ({"name": "bad name!"}, "name 'bad name!'"),
    ({"seeds": [1, 1]}, "holds 1 more than once"),
])
def test_grid_mistakes_are_reported(change, fragment):
    with pytest.raises(GridError) as err:
        parse_grid({**GOOD, **change}, "grid.yaml")
    assert fragment in str(err.value) and str(err.value).startswith("grid.yaml: ")


def test_unreadable_yaml_names_the_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndatasets: [digits\nseeds: [1]\n")
    with pytest.raises(GridError, match=r"bad.yaml is not valid YAML at line \d+"):
        load_grid(str(bad))
    with pytest.raises(GridError, match="not found"):
        load_grid(str(tmp_path / "missing.yaml"))


@pytest.mark.parametrize("path", ["grids/quick.yaml", "grids/digits-compare.yaml", "grids/cifar-n.yaml", "grids/paper.yaml", "grids/mnist.yaml", "grids/cifar.yaml",
                                  "grids/clothing1m.yaml", "grids/tune-digits.yaml", "grids/table.yaml"])
def test_shipped_grids_are_valid(path):
    grid = load_grid(os.path.join(ROOT, path))
    assert grid.cells


def test_the_own_data_grid_runs_every_in_memory_method_on_the_example_folder(tmp_path, monkeypatch):
    """grids/own-data.yaml names examples/digits-own (relative to where the command runs), which the example script
    writes: every in-memory method, on real noise, on the user's images."""
    from memomentum import owndata
    from memomentum.example_data import write

    monkeypatch.setattr(owndata, "_REGISTERED", {})
    monkeypatch.chdir(tmp_path)
    write("digits", "examples/digits-own", 0.3, "pairflip", 1)
    grid = load_grid(os.path.join(ROOT, "grids/own-data.yaml"))
    methods = {c.config.method for c in grid.cells}
    assert methods == {m for m, spec in METHODS.items() if "memory" in spec.data and not spec.needs_clean_val}
    assert {c.config.noise_type for c in grid.cells} == {"real"} and all(c.config.export for c in grid.cells)
    assert all(c.config.differences() == {} for c in grid.cells)  # every method at its recipe's settings


def test_paper_grid_covers_the_published_settings():
    grid = load_grid(os.path.join(ROOT, "grids/paper.yaml"))
    settings = {(c.config.dataset, c.config.noise_type, c.config.noise_rate) for c in grid.cells}
    for dataset in ("mnist", "fashionmnist", "cifar10", "cifar100"):
        for kind, rate in (("symmetric", 0.2), ("symmetric", 0.4), ("pairflip", 0.2), ("pairflip", 0.4),
                           ("pairflip", 0.45), ("instance", 0.2), ("instance", 0.4)):
            assert (dataset, kind, rate) in settings
    assert {c.config.seed for c in grid.cells} == {1, 2, 3, 4, 5}
    assert {c.config.method for c in grid.cells} == {"memomentum", "ce", "coteaching", "jocor"}
    assert all(c.config.differences() == {} for c in grid.cells)  # every method at its official settings
    assert all(c.gpu > 0 for c in grid.cells)


def run_cli(*args, cwd=ROOT):
    return procs.run([sys.executable, os.path.join(ROOT, "run_sweep.py"), *args], timeout=300, cwd=cwd)


def test_dry_run_lists_every_cell_without_starting_ray(tmp_path):
    proc = run_cli("grids/paper.yaml", "--dry-run", "--storage", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "total: 560 trials" in proc.stdout and "GPU-hours" in proc.stdout
    assert "cifar100-instance-0.4-s5-memomentum" in proc.stdout
    assert not os.listdir(tmp_path)  # nothing written


@pytest.mark.parametrize("content, fragment", [
    ("name: x\ndatasets: [digits]\nnoise: [{type: symmetric, rates: [1.5]}]\nseeds: [1]\nmethods: [ce]\n",
     "outside [0, 1)"),
    ("name: x\ndatasets: [digits]\nnoise: [{type: symmetric, rates: [0.2]}]\nseeds: [1]\nmethods: [ce]\n"
     "colour: red\n", "unknown top-level key 'colour'"),
])
def test_cli_grid_mistake_is_one_line_exit_2(tmp_path, content, fragment):
    grid = tmp_path / "g.yaml"
    grid.write_text(content)
    proc = run_cli(str(grid), "--storage", str(tmp_path / "store"))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and fragment in proc.stderr and proc.stderr.startswith("error: ")
    assert not (tmp_path / "store").exists()


def test_missing_data_is_caught_before_ray(tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text(yaml.safe_dump({**GOOD, "datasets": ["cifar10"], "data_root": str(tmp_path / "nodata")}))
    proc = run_cli(str(grid), "--storage", str(tmp_path / "store"))
    assert proc.returncode == 2 and "file(s) missing under data root" in proc.stderr
    assert not (tmp_path / "store").exists()


def test_real_noise_pairs_only_with_clothing1m():
    grid = parse_grid({**GOOD, "datasets": ["digits", "clothing1m"], "seeds": [1], "methods": ["ce"],
                       "noise": [{"type": "symmetric", "rates": [0.2, 0.4]}, {"type": "real"}]})
    cells = sorted((c.config.dataset, c.config.noise_type, c.config.noise_rate) for c in grid.cells)
    assert cells == [("clothing1m", "real", 0.0), ("digits", "symmetric", 0.2), ("digits", "symmetric", 0.4)]
    assert grid.cells[-1].name == "clothing1m-real-0-s1-ce"
    with pytest.raises(GridError, match="dataset clothing1m has no fitting noise entry"):
        parse_grid({**GOOD, "datasets": ["clothing1m"]})


def test_the_dry_run_cost_uses_measured_figures_and_says_where_it_guesses(tmp_path):
    from sweeps.runner import measured_epoch_seconds

    md = tmp_path / "R.md"
    md.write_text("# x\n## Per-epoch cost figures (read by ...)\n\n| model | device | precision | seconds per epoch | "
                  "source |\n|---|---|---|---|---|\n| lenet | gpu | bf16 | 0.25 | a run |\n\n## Other\n"
                  "| lenet | gpu | fp32 | 9 | not the cost table |\n")
    assert measured_epoch_seconds(str(md)) == {("lenet", "gpu", "bf16"): 0.25}
    assert measured_epoch_seconds(str(tmp_path / "missing.md")) == {}
    assert ("lenet", "cpu", "fp32") in measured_epoch_seconds()  # the shipped benchmarks/RESULTS.md
    quick = run_cli("grids/quick.yaml", "--dry-run", "--storage", str(tmp_path))
    assert "from measured per-epoch figures" in quick.stdout
    paper = run_cli("grids/paper.yaml", "--dry-run", "--storage", str(tmp_path))
    assert "guessed for lenet/gpu/fp32" in paper.stdout


def test_every_value_list_methods_prints_reads_back_from_a_grid_and_from_set():
    """`--list-methods` prints `dmi_lr=1e-06`, `lr_milestones=[40, 80]`: written into a grid as `key: value` (YAML
    1.1 reads 1e-06 without a dot as a string) or given to --set, each is accepted as the same value."""
    from memomentum.__main__ import _settings
    from memomentum.config import _check_type, field_types, parse_value
    from memomentum.data import DATASETS
    from memomentum.methods import METHODS
    from sweeps.grid import read_yaml

    seen = 0
    for name, method in METHODS.items():
        values = {**method.options().to_dict()}
        for settings in [*method.defaults.values(), *(DATASETS[d].defaults for d in DATASETS)]:
            values.update({k: v for k, v in settings.items() if k in field_types(name)})
        for key, value in values.items():
            printed = _settings({key: value}).split("=", 1)[1]
            kind = field_types(name)[key]
            from_grid = _check_type(key, read_yaml(f"{key}: {printed}")[key], kind)
            assert from_grid == (tuple(value) if kind is tuple else value), (name, key, printed)
            assert parse_value(key, printed) == from_grid, (name, key, printed)
            seen += 1
    assert seen > 60
    grid = parse_grid({"name": "g", "datasets": ["digits"], "noise": [{"type": "symmetric", "rates": [0.2]}],
                       "seeds": [1], "methods": ["dmi", "pes"]},
                      source="inline")  # the same through a whole grid file, as a user writes it
    text = yaml.safe_dump(grid.raw) + "method_config: {dmi: {dmi_lr: 1e-06}, pes: {pes_lr: 1e-4}}\n"
    cells = {c.config.method: c.config for c in parse_grid(read_yaml(text)).cells}
    assert cells["dmi"].options.dmi_lr == 1e-6 and cells["pes"].options.pes_lr == 1e-4
