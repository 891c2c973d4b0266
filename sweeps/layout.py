"""The sweep folder, named in one place. Under <storage>/<grid name>/:

    grid.yaml                    the grid as last run
    driver.lock                  the driver running the sweep (sweeps/lock.py)
    trials/<key>/trial.json      per trial: cell, resolved config, versions, status, records, result;
                                 status "finished" marks the cell done for every later run
    trials/<key>/error.json      a trial that failed after its retries: its error and its cell
    trials/<key>/selections/round-NNNN.npz
                                 the examples each round selected (methods that select; memomentum/selections.py)
    tensorboard/<key>/           TensorBoard scalars of every trial (the HParams experiment at the root)
    tune/<run id>/<key>/checkpoint_*/{state.pt,records.json}
                                 Tune's experiment state and checkpoints, one run folder per invocation
    results/                     Parquet tables, paper_table.md, figures and report.md;
                                 results/selections.parquet/<key>.parquet: the selections, one part per trial
"""
GRID_FILE = "grid.yaml"
LOCK_FILE = "driver.lock"
TRIALS = "trials"
TRIAL_FILE = "trial.json"
ERROR_FILE = "error.json"
TENSORBOARD = "tensorboard"
TUNE = "tune"
CHECKPOINT_PREFIX = "checkpoint_"
STATE_FILE = "state.pt"
RECORDS_FILE = "records.json"  # beside state.pt in every checkpoint: the records up to it
RESULTS = "results"
SELECTIONS = "selections"  # per trial: one file per round
SELECTIONS_TABLE = "selections.parquet"  # under results/: a Parquet dataset (a folder), one part per trial


def trial_file(key: str) -> tuple:
    """Parts of a trial's trial.json under the sweep folder."""
    return TRIALS, key, TRIAL_FILE


def error_file(key: str) -> tuple:
    return TRIALS, key, ERROR_FILE


def selection_dir(key: str) -> tuple:
    return TRIALS, key, SELECTIONS


def selection_file(key: str, name: str) -> tuple:
    return (*selection_dir(key), name)


__all__ = ["GRID_FILE", "LOCK_FILE", "TRIALS", "TRIAL_FILE", "ERROR_FILE", "TENSORBOARD", "TUNE", "CHECKPOINT_PREFIX",
           "STATE_FILE", "RECORDS_FILE", "RESULTS", "SELECTIONS", "SELECTIONS_TABLE", "trial_file", "error_file",
           "selection_dir", "selection_file"]
