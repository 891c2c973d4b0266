"""The sweep folder, named in one place. Under <storage>/<grid name>/:

    grid.yaml                    the grid as last run
    driver.lock                  the driver running the sweep (sweeps/lock.py)
    trials/<key>/trial.json      per trial: cell, resolved config, versions, status, records, result;
                                 status "finished" marks the cell done for every later run
    trials/<key>/error.json      a trial that failed after its retries: its error and its cell
    trials/<key>/selections/round-NNNN.npz
                                 the examples each round selected (methods that select; memomentum/selections.py)
    trials/<key>/model.pt, trials/<key>/label_issues.npz
                                 a trial with `export` (a data set given by a path): its selected model and the
                                 label-issues table of its training examples (memomentum/exports.py)
    datasets/<name>-<fingerprint>.parquet
                                 a data set given by a path: each training example's name (its path, or manifest
                                 row) and the class names, so that the tables name examples as the user does
    tensorboard/<key>/           TensorBoard scalars of every trial (the HParams experiment at the root)
    tune/<run id>/<key>/checkpoint_*/{state.pt,records.json}
                                 Tune's experiment state and checkpoints, one run folder per invocation
    results/                     Parquet tables, paper_table.md, figures and report.md;
                                 results/selections.parquet/<key>.parquet: the selections, one part per trial;
                                 results/label_issues.parquet/<key>.parquet: each exporting trial's label issues,
                                 results/label_issues_consensus.parquet: their consensus across the sweep's methods
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
MODEL_FILE = "model.pt"  # per exporting trial: its selected model
ISSUES_FILE = "label_issues.npz"  # per exporting trial: its label-issues table
ISSUES_TABLE = "label_issues.parquet"  # under results/: one part per exporting trial
CONSENSUS_TABLE = "label_issues_consensus.parquet"  # under results/: the consensus of the sweep's trials
DATASETS = "datasets"  # data sets given by a path: their examples' names


def trial_file(key: str) -> tuple:
    """Parts of a trial's trial.json under the sweep folder."""
    return TRIALS, key, TRIAL_FILE


def error_file(key: str) -> tuple:
    return TRIALS, key, ERROR_FILE


def examples_file(name: str, fingerprint: str) -> tuple:
    """Parts of a data set's examples table (a data set given by a path) under the sweep folder."""
    return DATASETS, f"{name}-{fingerprint}.parquet"


def selection_dir(key: str) -> tuple:
    return TRIALS, key, SELECTIONS


def selection_file(key: str, name: str) -> tuple:
    return (*selection_dir(key), name)


__all__ = ["GRID_FILE", "LOCK_FILE", "TRIALS", "TRIAL_FILE", "ERROR_FILE", "TENSORBOARD", "TUNE", "CHECKPOINT_PREFIX",
           "STATE_FILE", "RECORDS_FILE", "RESULTS", "SELECTIONS", "SELECTIONS_TABLE", "MODEL_FILE", "ISSUES_FILE",
           "ISSUES_TABLE", "CONSENSUS_TABLE", "DATASETS", "trial_file", "error_file", "selection_dir", "selection_file",
           "examples_file"]
