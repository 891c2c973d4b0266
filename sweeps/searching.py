"""Run a grid's searches (sweeps/tuning.py) on Ray Tune: one experiment per data set x noise setting x method, with
the grid's search algorithm and scheduler, each trial the project's own trainable on the tuning seed. A search that
was interrupted is restored from its experiment folder (Tune's searcher and scheduler state); one that finished is
never run again. Every trial that ends leaves a record (<sweep>/tuning/<group>/records/), and a finished search its
choice (<sweep>/tuning/<group>/chosen.json)."""
import logging
import os
import time
from typing import Callable, Dict

from memomentum.progress import dumps, fmt
from sweeps import layout, tuning
from sweeps.storage import Storage
from sweeps.tune_setup import environ, trial_dirname, trial_name

TUNING_TRIALS = f"{tuning.FOLDER}/trials"  # tuning trials' folders (never in trials/: they are not cells of the grid)
SAVE_EVERY_S = "1"  # Tune saves a search's state at least this often, so that a killed driver loses at most this


def run_searches(grid, store: Storage, max_concurrent, verbose: bool, out: Callable[[str], None]) -> Dict[str, dict]:
    """Run every search of the grid not finished yet; returns group -> its choice."""
    chosen = tuning.read_chosen(store, grid.name)
    groups = tuning.groups(grid)
    left = [g for g in groups if g.key not in chosen]
    spec = grid.tune
    out(f"tuning: {len(groups)} search(es) of {spec.trials_per_method} trial(s) each on seed {spec.seed} "
        f"({spec.search} search, {spec.scheduler if spec.scheduler != 'none' else 'no'} early stopping), "
        f"{len(groups) - len(left)} finished, {len(left)} to run")
    for group in left:
        started = time.time()
        _search(grid, store, group, max_concurrent, verbose, out)
        records = tuning.read_records(store, grid.name, group.key)
        best = tuning.choose(records)
        if best is None:
            out(f"warning: tuning {group.label}: no trial completed, so nothing is chosen; run the same command again "
                f"to continue its search")
            continue
        reference = {k: v for k, v in group.base.items() if k != "seed"}
        doc = {"group": group.key, "label": group.label, "method": group.method, "settings": best["settings"],
               "best_val_score": best["best_val_score"], "trial": best["index"], "key": best["key"],
               "trials": len(records), "stopped_early": sum(r["status"] == "stopped" for r in records),
               "errors": sum(r["status"] == "error" for r in records),
               "seconds": round(sum(r.get("seconds") or 0 for r in records), 1), "wall_seconds": round(time.time() - started, 1),
               "tuned_config": tuning.comparable(tuning.trial_of(group.base, best["settings"]).to_dict()),
               "reference": tuning.comparable(reference), "spec": spec.raw(),
               "space": {k: d.to_raw() for k, d in group.space.items()}, "chosen_at": time.time()}
        store.write_atomic(dumps(doc).encode(), grid.name, *tuning.chosen_path(group.key))
        out(f"tuned {group.label}: {_settings(best['settings'])} (best noisy-validation score "
            f"{fmt(best['best_val_score'], '.2f')}, {len(records)} trials, {doc['stopped_early']} stopped early)")
    return tuning.read_chosen(store, grid.name)


def _settings(values: dict) -> str:
    return ", ".join(f"{k}={fmt(v, '.4g') if isinstance(v, float) else v}" for k, v in sorted(values.items()))


def _search(grid, store: Storage, group, max_concurrent, verbose: bool, out) -> None:
    from ray import tune

    from sweeps.trainable import train_cell

    spec = grid.tune
    name = f"tuning-{group.key}"
    path = store.uri(grid.name, layout.TUNE, name)
    cells = {group.key: {"trial": group.base, "searched": list(group.space), "cpu": group.cpu, "gpu": group.gpu,
                         "verbose": verbose, "root": TUNING_TRIALS, "phase": "tuning", "group": group.key}}
    bundle = {"CPU": group.cpu, **({"GPU": group.gpu} if group.gpu > 0 else {})}
    trainable = tune.with_resources(tune.with_parameters(train_cell, cells=cells, storage=store.uri(), sweep=grid.name),
                                    resources=tune.PlacementGroupFactory([bundle]))
    quiet = {"TUNE_GLOBAL_CHECKPOINT_S": SAVE_EVERY_S, **({} if verbose else {"RAY_AIR_NEW_OUTPUT": "0"})}
    if not verbose:
        logging.getLogger("ray.tune").setLevel(logging.ERROR)
    with environ(quiet):
        if tune.Tuner.can_restore(path):
            out(f"tuning {group.label}: continuing its search ({path})")
            tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True)
        else:
            out(f"tuning {group.label}: {spec.trials_per_method} trials, space "
                + ", ".join(f"{k} {d.kind}{list(d.args)}" for k, d in group.space.items()))
            tuner = tune.Tuner(
                trainable, param_space={"group": group.key, **{k: d.domain() for k, d in group.space.items()}},
                tune_config=tune.TuneConfig(metric=tuning.METRICS[spec.metric], mode="max",
                                            num_samples=spec.trials_per_method,
                                            search_alg=searcher(spec, spec.max_concurrent or max_concurrent or 0,
                                                                quiet=not verbose),
                                            scheduler=_scheduler(spec, group),
                                            time_budget_s=spec.hours_per_method * 3600 or None,
                                            trial_name_creator=trial_name, trial_dirname_creator=trial_dirname),
                run_config=tune.RunConfig(name=name, storage_path=store.uri(grid.name, layout.TUNE),
                                          failure_config=tune.FailureConfig(max_failures=2),
                                          checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                                          sync_config=tune.SyncConfig(sync_artifacts=store.local_root is None),
                                          callbacks=[records_callback(store, grid.name, group, spec.trials_per_method)],
                                          verbose=1 if verbose else 0))
        tuner.fit()


def searcher(spec, limit: int, quiet: bool = True):
    """The search algorithm, running at most `limit` trials at once (0: as many as fit). The limit goes to the
    algorithm itself: Tune ignores `max_concurrent_trials` next to a search algorithm that is not a `Searcher`
    (BasicVariantGenerator), with nothing but a log line, and ASHA's stops then depend on which trial reports first."""
    if spec.search == "optuna":
        import optuna
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        if quiet:  # not "A new study created in memory ..." and a line per sampled trial
            optuna.logging.set_verbosity(optuna.logging.WARNING)
        tpe = OptunaSearch(seed=spec.seed)
        return ConcurrencyLimiter(tpe, max_concurrent=limit) if limit else tpe
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return BasicVariantGenerator(random_state=spec.seed, max_concurrent=limit)


def _scheduler(spec, group):
    if spec.scheduler == "none":
        return None
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(time_attr="training_iteration", max_t=group.max_t, grace_period=group.grace,
                         reduction_factor=spec.reduction_factor)


def records_callback(store: Storage, sweep: str, group, budget: int):
    """A Tune callback that writes each ending tuning trial's record and says one line (defined lazily: importing this
    module does not import Ray)."""
    from ray import tune

    from sweeps.terminal import echo, trial_error

    class Records(tune.Callback):
        def on_trial_complete(self, iteration, trials, trial, **info):
            self._record(trials, trial, None)

        def on_trial_error(self, iteration, trials, trial, **info):
            self._record(trials, trial, trial_error(trial, "the trial failed after its retries")["line"])

        def _record(self, trials, trial, error):
            last = trial.last_result or {}
            finished = bool(last.get("finished"))
            settings = {k: trial.config[k] for k in group.space}
            try:
                key = tuning.trial_of(group.base, settings).trial_key()
            except Exception:  # a sampled value the method refuses: the trial itself failed on it
                key = None
            status = "error" if error else "finished" if finished else "stopped"
            # its place among the search's trials, in the order Tune created them (kept across a restore); a trial id
            # carries that number for Tune's random search only, not for a Searcher such as Optuna's
            index = next((i for i, t in enumerate(trials) if t is trial), len(trials))
            record = {"index": index,
                      "trial_id": trial.trial_id, "group": group.key, "label": group.label, "method": group.method,
                      "settings": settings, "key": key, "status": status,
                      "best_val_score": last.get("final_best_val_score") if finished else last.get("best_val_score"),
                      "running_val_score": last.get("tune_score"), "epochs": last.get("step"),
                      "seconds": last.get("time_total_s"), "error": error}
            try:
                store.write_atomic(dumps(record).encode(), sweep, *tuning.record_path(group.key, trial.trial_id))
            except Exception as exc:  # never let bookkeeping take the search down
                echo(f"warning: could not record tuning trial {trial.trial_id}: {exc}")
            what = {"finished": "done", "stopped": f"stopped early at epoch {fmt(last.get('step'))}",
                    "error": f"FAILED: {error}"}[status]
            echo(f"tune  {group.label} #{record['index'] + 1}/{budget}: {what}, val "
                 f"{fmt(record['best_val_score'], '.2f')} ({_settings(settings)})")

    return Records()


__all__ = ["run_searches", "TUNING_TRIALS"]
