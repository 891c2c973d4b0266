"""Drive a sweep: check everything a user can get wrong, skip finished cells, schedule the rest on
Ray Tune (one trial per cell, resources per data set), and keep the result tables up to date.

The sweep folder's layout: sweeps/layout.py. Running the same command again continues: finished cells
are skipped, unfinished ones resume from their newest checkpoint, and cells added to the grid run for
the first time. A cell's key includes its method's version, so raising a version re-runs that
method's cells (and no other).
"""
import logging
import os
import sys
import time
from typing import Callable, List, Optional, Tuple

import yaml

from memomentum.cifar_n import HUMAN, path_of, read_labels
from memomentum.errors import clip, short
from memomentum.data import DATA_ENV, DATASETS, DataError, check_files, load, resolve_root
from memomentum.methods import METHODS
from memomentum.noise import CACHE_ENV, check_split
from memomentum.version import CODE_VERSION_ENV, code_version
from sweeps import layout
from sweeps import tables as paper
from sweeps import tuning
from sweeps.grid import Cell, Grid, identity, read_yaml
from sweeps.tune_setup import environ, trial_dirname, trial_name
from sweeps.lock import DriverLock
from sweeps.results import Collector
from sweeps.storage import Storage
from sweeps.terminal import echo

WORKER_NICENESS_ENV = "RAY_worker_niceness"  # Ray's own setting of its workers' nice value (default 15)

# Seconds per epoch (training + validation, one network) for --dry-run's cost estimate: measured figures
# from benchmarks/RESULTS.md's "Per-epoch cost figures" table where a row fits, else these guesses.
RESULTS_MD = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "RESULTS.md")
COST_HEADING = "## Per-epoch cost figures"
ROUGH_EPOCH_SECONDS = {("digitsnet", "cpu"): 0.05, ("lenet", "cpu"): 6.0, ("lenet", "gpu"): 0.6,
                       ("resnet18", "gpu"): 9.0, ("resnet34", "gpu"): 15.0, ("resnet18", "cpu"): 900.0,
                       ("resnet34", "cpu"): 1500.0, ("resnet50", "gpu"): 1800.0}


class SweepError(RuntimeError):
    """A problem with the sweep as a whole (resources, storage); the message says what to do."""


def preflight(grid: Grid, address: Optional[str] = None, out: Callable[[str], None] = echo) -> Storage:
    """Every check that needs no Ray, in the order a user would fix them; nothing is written to the
    storage before all of them pass. Returns the storage."""
    for dataset in grid.datasets:
        check_files(dataset, grid.data_root)
        arrays = load(dataset, grid.data_root)  # reads every file: a truncated or corrupt one fails here
        n = len(getattr(arrays, "train_labels", ()))
        for cell in grid.cells:
            if cell.config.dataset == dataset and n:
                check_split(n, cell.config.train_fraction, dataset)
        for label in sorted({c.config.noise_label for c in grid.cells
                             if c.config.dataset == dataset and c.config.noise_type == HUMAN}):
            read_labels(DATASETS[dataset].human_noise, resolve_root(grid.data_root), label, arrays.train_labels,
                        DATASETS[dataset].num_classes)
    if not address:
        check_local_gpus(grid.cells)
    store = Storage(grid.storage)
    check_same_grid(store, grid, out)
    store.check_writable(grid.name)
    return store


def check_local_gpus(cells: List[Cell]) -> None:
    need = max((c.gpu for c in cells), default=0)
    if need > 0:
        import torch

        have = torch.cuda.device_count()
        if have == 0:
            raise SweepError(f"the grid gives trials {need:g} GPU but this machine has none; set "
                             f"resources gpu: 0 (and device: auto) to run on CPUs, or pass --address of a "
                             f"Ray cluster with GPUs")
        if need > have:
            raise SweepError(f"the grid gives a trial {need:g} GPUs but this machine has {have}; lower "
                             f"resources.<dataset>.gpu")


def check_same_grid(store: Storage, grid: Grid, out: Callable[[str], None] = echo) -> None:
    """A sweep folder belongs to one grid: refuse a grid of the same name whose shared settings differ.
    A damaged grid.yaml is reported and replaced (the cells' keys hash their configs, so trials of
    another configuration could never be taken for this grid's)."""
    raw = store.read(grid.name, layout.GRID_FILE)
    if raw is None:
        return
    try:
        stored = read_yaml(raw.decode())
        if not isinstance(stored, dict):
            raise ValueError(f"a {type(stored).__name__}, not a mapping")
        before = identity(stored)
    except Exception as exc:  # unreadable YAML, aliases, not UTF-8, not a mapping, odd values
        out(f"warning: {store.uri(grid.name, layout.GRID_FILE)} is damaged ({type(exc).__name__}); it is replaced "
            f"by this grid")
        return
    now = identity(grid.raw)
    if before != now:
        changed = sorted({f"{part}.{k}" for part in now for k in set(now[part]) | set(before[part])
                          if now[part].get(k) != before[part].get(k)})
        raise SweepError(f"{store.uri(grid.name)} already holds sweep '{grid.name}' run with a different grid "
                         f"({', '.join(changed)} differ); give this grid another name, or use another --storage")


def cell_seconds(cell: Cell, measured: Optional[dict] = None) -> Tuple[Optional[float], bool]:
    """(the dry run's estimate of a cell's typical trial seconds, whether it rests on a measured per-epoch figure);
    None where no figure applies."""
    measured = measured_epoch_seconds() if measured is None else measured
    kind = "gpu" if cell.gpu > 0 else "cpu"
    seconds = measured.get((cell.config.model, kind, cell.config.precision))
    known = seconds is not None
    if seconds is None:
        seconds = ROUGH_EPOCH_SECONDS.get((cell.config.model, kind))
    if seconds is None:
        return None, False
    typical, _ = expected_epochs(cell)
    return typical * METHODS[cell.config.method].cost() * seconds, known  # e.g. an epoch of two networks costs two


def dry_run(grid: Grid, out: Callable[[str], None] = echo) -> None:
    out(f"grid {grid.name} ({grid.source}): {len(grid.cells)} cells -> storage {Storage(grid.storage).uri(grid.name)}")
    out(f"{'trial':44s} {'cpu':>5s} {'gpu':>5s}  {'epochs (typical / max)':>24s}")
    total_epochs, total_cost, worst_epochs = 0.0, {"gpu": 0.0, "cpu": 0.0}, 0
    measured, guessed = measured_epoch_seconds(), set()
    for cell in grid.cells:
        typical, worst = expected_epochs(cell)
        total_epochs += typical
        worst_epochs += worst
        kind = "gpu" if cell.gpu > 0 else "cpu"
        seconds, known = cell_seconds(cell, measured)
        if not known:
            guessed.add("/".join((cell.config.model, kind, cell.config.precision)))
        if seconds is not None:
            total_cost[kind] += seconds * (cell.gpu if kind == "gpu" else cell.cpu)
        out(f"{cell.name:44s} {cell.cpu:5g} {cell.gpu:5g}  {typical:>11.0f} / {worst:<11d}")
    cpus = sum(c.cpu for c in grid.cells)
    gpus = sum(c.gpu for c in grid.cells)
    out(f"total: {len(grid.cells)} trials asking for {cpus:g} CPU and {gpus:g} GPU in all; "
        f"about {total_epochs:,.0f} epochs (at most {worst_epochs:,d})")
    source = (f"guessed for {', '.join(sorted(guessed))} (no measured figure in benchmarks/RESULTS.md)"
              if guessed else "from measured per-epoch figures in benchmarks/RESULTS.md")
    out(f"rough cost: {total_cost['gpu'] / 3600:,.1f} GPU-hours and {total_cost['cpu'] / 3600:,.1f} CPU-core-hours; "
        f"per-epoch seconds {source}")
    if grid.tune is not None:
        dry_run_tuning(grid, measured, total_cost, out)
    for dataset in grid.datasets:
        try:
            check_files(dataset, grid.data_root)
        except DataError as exc:
            out(f"warning: a real run would stop here: {exc}")
        if any(c.config.dataset == dataset and c.config.noise_type == HUMAN for c in grid.cells):
            path = path_of(DATASETS[dataset].human_noise, resolve_root(grid.data_root))
            if not os.path.isfile(path):
                out(f"warning: a real run would stop here: the CIFAR-N label file {path} is missing")


def write_examples(store: Storage, grid: Grid) -> None:
    """For each data set given by a path: the names of its examples (paths, manifest rows) and classes, under the sweep
    folder (sweeps/layout.py), so that its tables name examples as the user does, wherever they are collected."""
    from memomentum import owndata

    for dataset in grid.datasets:
        own = owndata.registered(dataset)
        if own is not None and not store.exists(grid.name, *layout.examples_file(dataset, own.fingerprint)):
            store.write_atomic(owndata.examples_parquet(own), grid.name, *layout.examples_file(dataset, own.fingerprint))


def dry_run_tuning(grid: Grid, measured: dict, reference_cost: dict, out: Callable[[str], None]) -> None:
    """The dry run's account of a grid's searches: their budget and cost, and the tuned cells they will add."""
    spec, groups = grid.tune, tuning.groups(grid)
    cost = {"gpu": 0.0, "cpu": 0.0}
    epochs = 0.0
    for group in groups:
        cell = next(c for c in grid.cells if c.config.method == group.method)
        seconds, _ = cell_seconds(cell, measured)
        typical, _ = expected_epochs(cell)
        epochs += typical * spec.trials_per_method
        kind = "gpu" if group.gpu > 0 else "cpu"
        if seconds is not None:
            cost[kind] += seconds * spec.trials_per_method * (group.gpu if kind == "gpu" else group.cpu)
    out(f"tuning: {len(groups)} search(es) (one per data set x noise setting x method) of {spec.trials_per_method} "
        f"trial(s) each on seed {spec.seed}, {spec.search} search, "
        f"{'ASHA early stopping' if spec.scheduler == 'asha' else 'no early stopping'}: "
        f"{len(groups) * spec.trials_per_method} tuning trials, about {epochs:,.0f} epochs before early stopping; "
        f"at most {cost['gpu'] / 3600:,.1f} GPU-hours and {cost['cpu'] / 3600:,.1f} CPU-core-hours")
    for group in groups:
        asha = f"; ASHA grace {group.grace} epochs of at most {group.max_t}" if spec.scheduler == "asha" else ""
        out(f"  search {group.label}: " + ", ".join(f"{k} {d.kind}{list(d.args)}" for k, d in group.space.items())
            + asha)
    out(f"evaluation: each search's chosen settings on the grid's seeds: {len(grid.cells)} tuned cells beside the "
        f"{len(grid.cells)} reference cells, about as costly ({reference_cost['gpu'] / 3600:,.1f} GPU-hours and "
        f"{reference_cost['cpu'] / 3600:,.1f} CPU-core-hours more)")


HPARAMS_SUFFIX = ".hparams"  # the experiment's event files at the root of <sweep>/tensorboard


def write_hparams_experiment(store: Storage, grid: Grid, cells: Optional[List[Cell]] = None) -> None:
    """The HParams experiment (the grid's axes and the final metrics) at <sweep>/tensorboard, replacing
    the one an earlier run of the sweep wrote (the grid may have grown). Local storage only: elsewhere
    TensorBoard infers the experiment from the trials' own entries."""
    from torch.utils.tensorboard import SummaryWriter

    from sweeps import hparams

    root = store.local(grid.name, layout.TENSORBOARD)
    if root is None:
        return
    os.makedirs(root, exist_ok=True)
    for name in os.listdir(root):
        if name.startswith("events.out.tfevents.") and name.endswith(HPARAMS_SUFFIX):
            os.remove(os.path.join(root, name))
    writer = SummaryWriter(log_dir=root, filename_suffix=HPARAMS_SUFFIX)
    cells = list(grid.cells) if cells is None else cells
    configs = [{**c.config.to_dict(), "phase": c.phase} for c in cells]
    searched = sorted({k for g in tuning.groups(grid) for k in g.space}) if grid.tune is not None else []
    if searched:  # the tuning trials: their search's settings, and the phase
        configs += [{**g.base, "phase": "tuning"} for g in tuning.groups(grid)]
    writer._get_file_writer().add_summary(hparams.experiment_summary(configs, searched))
    writer.close()


def measured_epoch_seconds(path: str = RESULTS_MD) -> dict:
    """(model, device kind, precision) -> seconds per epoch from RESULTS.md's cost table ({} without it)."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError:
        return {}
    out, inside = {}, False
    for line in text.splitlines():
        if line.startswith("## "):
            inside = line.startswith(COST_HEADING)
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if inside and line.startswith("|") else []
        if len(cells) >= 4:
            try:
                out[(cells[0], cells[1], cells[2])] = float(cells[3])
            except ValueError:  # the header and separator rows
                continue
    return out


def expected_epochs(cell: Cell):
    """(typical, worst-case) epochs of one trial, as its method expects them."""
    return METHODS[cell.config.method].epochs(cell.config)


def run(grid: Grid, address: Optional[str] = None, max_concurrent: Optional[int] = None,
        out: Callable[[str], None] = echo, wait_s: float = 900, verbose: bool = False,
        status_every: float = 30.0) -> int:
    """Run (or continue) the sweep; returns the exit code (0: every cell finished). Without `address`,
    RAY_ADDRESS (set for drivers that `ray job submit` starts) names the cluster, else Ray starts here.
    The terminal gets one line per trial event and a status line with an ETA every `status_every` seconds
    (sweeps/terminal.py); `verbose`: Tune's own tables and Ray's and the workers' own lines besides."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    store = preflight(grid, address, out)
    with DriverLock(store, grid.name):  # a second driver on this sweep refuses here, before any write
        collector = Collector(store, grid.name)
        chosen = {}
        if grid.tune is not None:  # first the searches (sweeps/tuning.py); their choices make the tuned cells
            store.write_atomic(yaml.safe_dump(grid.raw, sort_keys=False).encode(), grid.name, layout.GRID_FILE)
            write_examples(store, grid)
            if any(g.key not in tuning.read_chosen(store, grid.name) for g in tuning.groups(grid)):
                connect(address, verbose)
                wait_for_resources(list(grid.cells), wait_s if address else 0, out)
            from sweeps.searching import run_searches

            chosen = run_searches(grid, store, max_concurrent, verbose, out)
        unchosen = [g.label for g in tuning.groups(grid) if g.key not in chosen] if grid.tune is not None else []
        cells = all_cells(grid, chosen)
        todo, left_out = pending(cells, collector)
        for line in collector.skipped:
            out(f"warning: {line}")
        finished = len(cells) - len(todo) - len(left_out)
        tuned = sum(c.phase == "tuned" for c in cells)
        out(f"sweep {grid.name}: {len(cells)} cells{f' ({tuned} with tuned settings)' if tuned else ''}, {finished} "
            f"already finished, {len(todo)} to run{f', {len(left_out)} left out' if left_out else ''}; storage "
            f"{store.uri(grid.name)}")
        for line in left_out[:5]:
            out(f"warning: {line}")
        if todo:
            connect(address, verbose)
            wait_for_resources(todo, wait_s if address else 0, out)
        store.write_atomic(yaml.safe_dump(grid.raw, sort_keys=False).encode(), grid.name, layout.GRID_FILE)
        write_examples(store, grid)
        try:
            write_hparams_experiment(store, grid, cells)
        except Exception as exc:  # reporting only: never stops a sweep
            out(f"warning: the TensorBoard HParams experiment could not be written ({type(exc).__name__}: {exc})")
        if todo:
            _tune(grid, store, todo, collector, max_concurrent, verbose, status_every, out)
        tables = collector.write()
    try:
        from sweeps.report import write_report

        write_report(store, grid.name, tables)
    except Exception as exc:  # a plotting problem must not hide the sweep's outcome
        out(f"warning: could not draw the figures ({type(exc).__name__}: {exc}); "
            f"run_sweep.py --report {store.uri(grid.name)} retries")
    code = summarize(grid, store, tables, collector.warnings() + left_out[:5], out, cells)
    if unchosen:
        out(f"{len(unchosen)} search(es) chose no settings ({', '.join(unchosen[:3])}): no tuning trial completed; run "
            f"the same command again to continue them")
        return code or 1
    return code


def all_cells(grid: Grid, chosen: dict) -> List[Cell]:
    """The grid's cells and, after its searches, the cells of their chosen settings (a choice equal to the reference
    settings is its reference cell)."""
    cells, keys = list(grid.cells), {c.key for c in grid.cells}
    for reference, config in tuning.tuned_cells(grid, chosen) if grid.tune is not None else ():
        cell = Cell(config, reference.cpu, reference.gpu, phase="tuned")
        if cell.key not in keys:
            cells.append(cell)
            keys.add(cell.key)
    return cells


def pending(cells, collector: Collector) -> Tuple[List[Cell], List[str]]:
    """(the grid's cells without a finished trial under their key, a line per cell left out). A key names the cell,
    what it computes and its method's version: a raised version leaves that method's finished trials under old keys,
    so its cells run again, and no other. A finished trial under the key whose recorded version is not this code's
    (a sweep folder from a newer release, a damaged file) is neither taken for this code's nor overwritten: its cell
    is left out, with the reason."""
    cells = cells.cells if isinstance(cells, Grid) else cells
    finished = {d["key"]: d for d in collector.trial_docs() if d["status"] == "finished"}
    todo, left_out = [], []
    for cell in cells:
        doc = finished.get(cell.key)
        if doc is None:
            todo.append(cell)
            continue
        recorded = doc.get("method_version")
        mismatch = paper.version_mismatch(cell.config.method, recorded)
        if mismatch is not None:
            left_out.append(f"{cell.name} is left out: its finished trial was made by {'a' if mismatch == 'newer' else 'an'} "
                            f"{mismatch} version ({short(recorded)}) of {cell.config.method}, not this code's version "
                            f"{METHODS[cell.config.method].version}: run it with that version, or remove the cell "
                            f"({collector.store.uri(collector.sweep, layout.TRIALS, cell.key)}) to run it here")
    return todo, left_out


def summarize(grid: Grid, store: Storage, tables, skipped: List[str], out: Callable[[str], None],
              cells: Optional[List[Cell]] = None) -> int:
    """The end-of-sweep lines and exit code: 0 when every cell of the grid (and of its tuned settings) finished."""
    cells = list(grid.cells) if cells is None else cells
    for line in skipped:
        out(f"warning: {line}")
    rows = {t["key"]: t for t in tables["trials"].to_pylist()}
    done = {k for k, t in rows.items() if t["status"] == "finished" and not paper.superseded(t)}
    other = {k for k, t in rows.items() if t["status"] == "finished" and paper.superseded(t)}
    failed = [(c, rows[c.key]) for c in cells if c.key in rows and rows[c.key]["status"] == "error"]
    failed_keys = {c.key for c, _ in failed}
    unfinished = [c.name for c in cells if c.key not in done and c.key not in failed_keys and c.key not in other]
    left_out = [c.name for c in cells if c.key in other]
    out(f"tables, figures and report.md: {store.uri(grid.name, layout.RESULTS)} ({len(done)} finished trials)")
    if store.local_root is not None:
        out(f"TensorBoard: tensorboard --logdir {store.uri(grid.name, layout.TENSORBOARD)}")
    else:  # cloud storage: each trial's event files travel with its Tune artifacts
        out(f"TensorBoard: the event files are under {store.uri(grid.name, layout.TUNE)}/<run>/<trial>/tensorboard; "
            f"copy that folder down (e.g. aws s3 sync / gsutil rsync) and run tensorboard --logdir on the copy")
    versions = paper.code_versions_line(tables["trials"])
    if versions:
        out(versions)
    for cell, row in failed[:5]:
        out(f"failed: {cell.name}: {row['error']} (details: {store.uri(grid.name, *layout.error_file(cell.key))})")
    if failed:
        out(f"{len(failed)} cell(s) failed after their retries; fix the cause above, then run the same command "
            f"again (failed cells run again, finished ones never)")
    if unfinished:
        out(f"{len(unfinished)} cell(s) did not finish ({', '.join(unfinished[:3])}{'...' if len(unfinished) > 3 else ''}); "
            f"run the same command again to continue them")
    if left_out:
        out(f"{len(left_out)} cell(s) were left out of the tables ({', '.join(left_out[:3])}"
            f"{'...' if len(left_out) > 3 else ''}): their finished trials were made by another version of their "
            f"method (the warnings above say which)")
    if failed or unfinished or left_out:
        return 1
    out(paper.render_markdown(tables["paper_table"], tables["trials"], title=f"Sweep `{grid.name}`", brief=True))
    out(f"(the last-epoch, optimistic and published tables, and every note: "
        f"{store.uri(grid.name, layout.RESULTS, 'paper_table.md')})")
    return 0


def connect(address: Optional[str], verbose: bool = False) -> None:
    """Join the cluster at `address`, or start a private Ray instance on this machine (never a stale
    or foreign one that `ray start` left registered); nothing if already connected. Ray's own start-up
    lines only with `verbose`."""
    import ray

    if not ray.is_initialized():
        quiet = {} if verbose else {"logging_level": logging.ERROR}
        if address:
            ray.init(address=address, **quiet, **ray_init_kwargs())
        else:
            ray.init(address="local", include_dashboard=False, **quiet, **ray_init_kwargs(local=True))


def _tune(grid: Grid, store: Storage, todo: List[Cell], collector: Collector, max_concurrent,
          verbose: bool = False, status_every: float = 30.0, out: Callable[[str], None] = echo):
    # Tune's CSV and TensorBoard loggers would duplicate what the trainable writes; its JSON
    # logger stays (result.json per trial) so that Tune's own result analysis works.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback

    from sweeps.terminal import Progress, progress_callback
    from sweeps.trainable import train_cell

    if not verbose:  # e.g. Tune's "experiment state snapshotting ... may become a bottleneck" (the lines
        logging.getLogger("ray.tune").setLevel(logging.ERROR)  # below and the ETA say how it goes)
    run_id = time.strftime("run-%Y%m%d-%H%M%S") + f"-{int(time.time() * 1000) % 1000:03d}"
    specs = {}
    for cell in todo:
        specs[cell.key] = {**cell.to_dict(), "resume_from": checkpoints_of(store, grid.name, cell.key),
                           "verbose": verbose}
    progress = Progress({c.key: {"name": c.name, "work": cell_seconds(c)[0], "epochs": expected_epochs(c)[0],
                                 "rounds": METHODS[c.config.method].rounds} for c in todo},
                        slots=concurrent_slots(todo, max_concurrent), out=out, every=status_every)

    def resources(config):
        spec = specs[config["cell"]]
        bundle = {"CPU": spec["cpu"]}
        if spec["gpu"] > 0:
            bundle["GPU"] = spec["gpu"]
        return tune.PlacementGroupFactory([bundle])

    # The cell key is the only varying parameter, so Tune's status table shows readable names;
    # the full cell specs travel once through the object store.
    trainable = tune.with_parameters(train_cell, cells=specs, storage=store.uri(), sweep=grid.name)
    tuner = tune.Tuner(
        tune.with_resources(trainable, resources=resources),
        param_space={"cell": tune.grid_search(list(specs))},
        tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent, reuse_actors=True,
                                    trial_name_creator=trial_name, trial_dirname_creator=trial_dirname),
        run_config=tune.RunConfig(name=run_id, storage_path=store.uri(grid.name, layout.TUNE),
                                  failure_config=tune.FailureConfig(max_failures=2),
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                                  # cloud storage: the trials' TensorBoard folders travel as artifacts
                                  sync_config=tune.SyncConfig(sync_artifacts=store.local_root is None),
                                  callbacks=[JsonLoggerCallback(), collect_callback(collector, specs),
                                             progress_callback(progress)],
                                  verbose=1 if verbose else 0))
    out(f"[00:00] {progress.status()}")
    # Tune's new output engine prints an experiment box even at verbose 0; its legacy engine prints nothing there
    quiet = {} if verbose else {"RAY_AIR_NEW_OUTPUT": "0"}
    state_log = logging.getLogger(TUNE_STATE_LOGGER)
    one_line = OneLineTuneState(out)
    if not verbose:
        state_log.addFilter(one_line)
    try:
        with environ(quiet):
            tuner.fit()
    finally:
        state_log.removeFilter(one_line)


TUNE_STATE_LOGGER = "ray.tune.execution.experiment_state"


class OneLineTuneState(logging.Filter):
    """Tune logs a failure to save its experiment state (a full disk, a storage hiccup) as a traceback of some 20
    lines, though the sweep never reads that state (its cells resume from trials/ and their checkpoints): said here
    as one warning line instead, once per distinct error; --verbose keeps Tune's own lines."""

    def __init__(self, out: Callable[[str], None]):
        super().__init__()
        self.out, self.said = out, set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        exc = record.exc_info[1] if record.exc_info else None
        what = f"{type(exc).__name__}: {clip(exc, 160)}" if exc is not None else clip(record.getMessage(), 160)
        if what not in self.said:
            self.said.add(what)
            self.out(f"warning: Ray Tune could not save its experiment state ({what}); the sweep goes on (it resumes "
                     f"from its trial files and checkpoints, not from that state)")
        return False


def concurrent_slots(cells: List[Cell], max_concurrent: Optional[int]) -> int:
    """How many of `cells` can run at once on the connected cluster (for the ETA)."""
    import ray

    have = ray.cluster_resources()
    cpu = max((c.cpu for c in cells), default=1.0)
    gpu = max((c.gpu for c in cells), default=0.0)
    slots = int(have.get("CPU", 1) // cpu) if cpu else len(cells)
    if gpu:
        slots = min(slots, int(have.get("GPU", 0) // gpu))
    return max(1, min(slots, max_concurrent or slots, len(cells)))


def ray_init_kwargs(local: bool = False) -> dict:
    """What every Ray connection of a sweep needs: the two packages shipped to the workers (so no
    node needs the project on its path) and the data / cache locations of this shell. With `local` (a Ray
    started here), trials run at the driver's priority: Ray starts its workers at nice 15, so on a machine
    with other work at the normal priority (a shared workstation, a build, a second sweep) a trial got a
    few percent of a core and a sweep ran tens of times slower than its fair share. RAY_worker_niceness
    in the environment still decides where it is set."""
    import memomentum
    import sweeps

    env = {k: os.environ[k] for k in (DATA_ENV, CACHE_ENV) if k in os.environ}
    env[CODE_VERSION_ENV] = code_version()  # the shipped copies are no git checkout: the driver's version counts
    kwargs = {"runtime_env": {"py_modules": [memomentum, sweeps], "env_vars": env}}
    if local and WORKER_NICENESS_ENV not in os.environ:
        kwargs["_system_config"] = {"worker_niceness": 0}
    return kwargs


def wait_for_resources(cells: List[Cell], wait_s: float, out: Callable[[str], None]) -> None:
    """Check that some node can hold the largest trial. On a cluster whose autoscaler starts GPU
    workers on demand, ask it for one such node and wait up to `wait_s` seconds before giving up."""
    import ray

    def alive():
        return [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]

    try:
        check_resources(cells, alive(), remote=wait_s > 0)
        return
    except SweepError:
        if wait_s <= 0:
            raise
    from ray.autoscaler.sdk import request_resources

    bundle = {"CPU": max(c.cpu for c in cells), "GPU": max(c.gpu for c in cells)}
    request_resources(bundles=[{k: v for k, v in bundle.items() if v > 0}])
    out(f"waiting up to {wait_s:.0f} s for the autoscaler to add a node with {bundle['CPU']:g} CPU and "
        f"{bundle['GPU']:g} GPU...")
    deadline = time.time() + wait_s
    try:
        while True:
            try:
                check_resources(cells, alive(), remote=True)
                return
            except SweepError:
                if time.time() > deadline:
                    raise
            time.sleep(10)
    finally:
        request_resources(bundles=[])  # from now on the pending trials themselves ask for nodes


def check_resources(cells: List[Cell], nodes: List[dict], remote: bool) -> None:
    """Refuse cells that could never be scheduled (Tune would leave them PENDING forever)."""
    need_gpu = max((c.gpu for c in cells), default=0)
    need_cpu = max((c.cpu for c in cells), default=0)
    have_gpu = max((n.get("GPU", 0) for n in nodes), default=0)
    have_cpu = max((n.get("CPU", 0) for n in nodes), default=0)
    if need_gpu > 0 and have_gpu == 0:
        raise SweepError(f"the grid asks for {need_gpu:g} GPU per trial but the Ray cluster has no GPU "
                         f"({'cluster at --address' if remote else 'this machine'}); set resources gpu: 0 to "
                         f"run on CPUs, or pass --address of a cluster with GPUs")
    if need_gpu > have_gpu:
        raise SweepError(f"the grid asks for {need_gpu:g} GPU per trial but no Ray node has more than "
                         f"{have_gpu:g}; lower resources.<dataset>.gpu")
    if need_cpu > have_cpu:
        raise SweepError(f"the grid asks for {need_cpu:g} CPU per trial but no Ray node has more than "
                         f"{have_cpu:g}; lower resources.<dataset>.cpu")


def checkpoints_of(store: Storage, sweep: str, key: str) -> List[str]:
    """Checkpoint files earlier runs left for a cell, newest first (paths relative to the storage)."""
    found = []
    for run_id in reversed(store.listdir(sweep, layout.TUNE)):
        for name in reversed(store.listdir(sweep, layout.TUNE, run_id, key)):
            if name.startswith(layout.CHECKPOINT_PREFIX):
                found.append("/".join((sweep, layout.TUNE, run_id, key, name, layout.STATE_FILE)))
    return found


# The tables are rebuilt at most this often while a sweep runs (and at least ten times the last rebuild's duration
# apart), so that a grid of thousands of short trials does not spend its driver rewriting tables; the run's end
# always rebuilds them, and `--collect` does at any time
COLLECT_EVERY_S = 5.0


def collect_callback(collector: Collector, specs: dict, every: float = COLLECT_EVERY_S):
    """A Tune callback that rebuilds the result tables soon after a trial ends (within `every` seconds, or ten
    rebuild durations when a rebuild is slow), and writes error.json at once (the error and the cell, so the
    failure reaches the tables even for a trial that never wrote trial.json). Defined lazily so that importing
    this module does not import Ray."""
    from ray import tune

    from memomentum.progress import dumps
    from sweeps.terminal import trial_error

    class CollectOnTrialEnd(tune.Callback):
        due = False  # a trial ended since the last rebuild
        next_at = 0.0  # time.monotonic() before which no rebuild starts
        said = set()  # each distinct failure is said once (a full disk would otherwise repeat at every trial end)

        def on_trial_complete(self, iteration, trials, trial, **info):
            try:  # an error an earlier attempt left behind no longer applies
                collector.store.delete(collector.sweep, *layout.error_file(trial.config["cell"]))
            except OSError:
                pass
            self._collect()

        def on_trial_error(self, iteration, trials, trial, **info):
            key = trial.config["cell"]
            error = trial_error(trial, "the trial failed after its retries; see its log in the Ray output")
            try:
                spec = specs.get(key, {})
                cell = {k: spec.get(k) for k in ("key", "name", "trial", "cpu", "gpu")}
                collector.store.write_atomic(dumps({"error": error["line"], "type": error["type"],
                                                    "message": error["message"], "traceback": error["traceback"],
                                                    "cell": cell}).encode(), collector.sweep, *layout.error_file(key))
            except Exception as exc:  # never let bookkeeping take the sweep down
                print(f"warning: could not record the failure of {key}: {exc}", file=sys.stderr)
            self._collect()

        def on_step_end(self, iteration, trials, **info):
            if self.due:
                self._collect()

        def _collect(self):
            self.due = True
            if time.monotonic() < self.next_at:
                return
            start = time.monotonic()
            try:
                collector.write()
            except Exception as exc:  # never let table writing take the sweep down
                if str(exc) not in self.said:
                    self.said.add(str(exc))
                    print(f"warning: could not update the result tables: {exc}", file=sys.stderr)
            now = time.monotonic()
            self.due, self.next_at = False, now + max(every, 10 * (now - start))

    return CollectOnTrialEnd()
