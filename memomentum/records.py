"""The fields of the records every trial emits, declared once: name, Arrow type, meaning, and where
each is shown. The sweep's Parquet schemas, its TensorBoard scalar tags, the HParams metrics and the
report's trial list are all derived from these lists plus the columns each method declares
(`Method.columns`, merged by `memomentum.methods.columns`); nothing copies them.

Three kinds of record (see memomentum/trial.py):
    epoch    one per trained epoch
    round    one per round (a stage of Me-Momentum, the single round of a baseline)
    result   the last record of a trial; its fields become the columns of trials.parquet
No torch here: `import memomentum` stays light.
"""
from dataclasses import dataclass
from typing import Tuple

ARROW_TYPES = ("float64", "int64", "bool", "string")  # the types a column may have (pyarrow's names)
KINDS = ("epoch", "round", "result")


@dataclass(frozen=True)
class Column:
    name: str  # the record's key and the table's column
    type: str  # one of ARROW_TYPES
    doc: str  # one line: meaning and unit (also the HParams metric's display name)
    tag: str = ""  # epoch / round records: the TensorBoard scalar tag; results: the HParams metric tag
    label: str = ""  # results: the header of report.md's trial list ("" = not listed there)
    fmt: str = ".2f"  # how report.md prints a number of this column

    def __post_init__(self):
        if self.type not in ARROW_TYPES:
            raise ValueError(f"column {self.name}: type {self.type!r} is not one of {ARROW_TYPES}")


EPOCH: Tuple[Column, ...] = (
    Column("outer", "int64", "outer loop, from 1"),
    Column("inner", "int64", "round within the outer loop (0: Me-Momentum's stage A)"),
    Column("epoch", "int64", "epochs trained in the current round, this one included"),
    Column("step", "int64", "epochs trained in the whole trial, this one included"),
    Column("lr", "float64", "learning rate of the epoch", tag="train/lr"),
    Column("n_train", "int64", "training examples the epoch ran over", tag="train/n_examples"),
    Column("train_loss", "float64", "mean training loss", tag="train/loss"),
    Column("train_acc", "float64", "training accuracy against the noisy labels (%)", tag="train/acc_noisy"),
    Column("val_score", "float64", "class-balanced accuracy on the noisy validation labels (%)", tag="val/score"),
    Column("improved", "bool", "the epoch set a new best validation score of the trial"),
    Column("test_acc", "float64", "test accuracy taken at this epoch's new best validation score (%), else null",
           tag="test/acc_measured"),
    Column("best_val_score", "float64", "the trial's best validation score so far (%)", tag="val/best"),
    Column("best_test_acc", "float64", "the test accuracy at that score (%)", tag="test/acc_at_best_val"),
    Column("seconds", "float64", "training seconds of the trial so far"),
    Column("epoch_test_acc", "float64", "test accuracy of the live model(s) at this epoch (%; two networks: their "
           "mean); diagnostic, never used for a decision", tag="test/acc_epoch"),
)

ROUND: Tuple[Column, ...] = (
    Column("outer", "int64", "outer loop, from 1"),
    Column("inner", "int64", "round within the outer loop (0: Me-Momentum's stage A)"),
    Column("stage", "string", "what kind of round: A, B (Me-Momentum), C (class-wise) or the method's name"),
    Column("epochs", "int64", "epochs the round trained"),
    Column("step", "int64", "epochs trained in the whole trial at the round's end"),
    Column("n_confident", "int64", "examples the round trained on (its confident set)", tag="round/n_confident"),
    Column("precision", "float64", "share of them whose noisy label is correct (%, clean labels: diagnostic)",
           tag="round/precision"),
    Column("recall", "float64", "share of correctly labelled training examples among them (%, diagnostic)",
           tag="round/recall"),
    Column("n_hard", "int64", "examples among them the trial's first classifier had not extracted",
           tag="round/n_hard"),
    Column("hard_precision", "float64", "share of those whose noisy label is correct (%, diagnostic)",
           tag="round/hard_precision"),
    Column("val_score", "float64", "best validation score within the round (%)", tag="round/val_score"),
    Column("stage_best", "float64", "best validation score of the round's stage so far (%)"),
    Column("best_val_score", "float64", "the trial's best validation score so far (%)"),
    Column("test_acc", "float64", "the test accuracy at that score (%)"),
    Column("last_test_acc", "float64", "test accuracy at the round's last epoch (%; null if not measured)"),
    Column("last10_test_acc", "float64", "mean test accuracy over the round's last 10 epochs (%)"),
)

RESULT: Tuple[Column, ...] = (
    Column("test_acc", "float64", "test accuracy at best validation (%)", tag="hparams/test_acc", label="test acc"),
    Column("last_test_acc", "float64", "test accuracy, last epoch (%)", tag="hparams/last_test_acc",
           label="last epoch"),
    Column("last10_test_acc", "float64", "test accuracy, last 10 epochs (%)", tag="hparams/last10_test_acc",
           label="last 10"),
    Column("best_test_acc", "float64", "best test accuracy over all epochs (%): selected on the TEST set, optimistic "
           "(what SFT, PES-semi and the CIFAR-N leaderboard print)", tag="hparams/best_test_acc",
           label="best test (optimistic)"),
    Column("best_val_score", "float64", "best noisy-validation score (%)", tag="hparams/best_val_score",
           label="best val"),
    Column("best_stage", "string", "the stage whose epoch set the reported test accuracy (null: none did)"),
    Column("realized_noise_rate", "float64", "share of training labels actually flipped (null: unknown)",
           label="realised noise", fmt=".4f"),
    Column("n_rounds", "int64", "rounds", label="rounds"),
    Column("epochs", "int64", "epochs", tag="hparams/epochs", label="epochs"),
    Column("final_n_confident", "int64", "final confident-set size", tag="hparams/final_n_confident",
           label="final confident set"),
    Column("final_precision", "float64", "final confident-set precision (%)", tag="hparams/final_precision",
           label="precision"),
    Column("final_recall", "float64", "final confident-set recall (%)", tag="hparams/final_recall"),
    Column("seconds", "float64", "seconds", tag="hparams/seconds"),
    Column("device_name", "string", "the device the trial trained on, by name"),
    Column("threads", "int64", "torch's CPU intra-op threads the trial ran with (memomentum/threads.py)"),
    Column("peak_gpu_memory_mb", "float64", "peak GPU memory the trial's process allocated (MiB; null on a CPU)"),
    Column("config_hash", "string", "fingerprint of what the trial computes (its key's suffix)"),
    Column("label_hash", "string", "fingerprint of the noisy labels and the split"),
    Column("code_version", "string", "the code that made the result: git commit (+dirty) or a hash of the sources"),
    Column("method_version", "int64", "the method's version in the registry (raised when what it computes changes)"),
    Column("note", "string", "what the method says about reading this result (e.g. a DMI round that could not move "
           "the network); null: nothing"),
)

# an epoch field several methods that select examples declare (Method.columns), with one meaning
KEPT_PRECISION = Column("kept_precision", "float64", "share of correctly labelled examples among those the epoch "
                        "trained on (%, from clean labels: a diagnostic, never used for a decision; two networks: "
                        "the mean of their selections)", tag="train/kept_precision")

# fields of the result record that are not columns of trials.parquet: the trial's round records (they have their
# own table) and the epochs at which a checkpoint of another device restarted the random stream (in trial.json)
RESULT_ONLY = ("rounds", "generator_reseeded_at")
NOT_FIELDS = ("kind", "resumable")  # bookkeeping keys of every record, never stored as columns

__all__ = ["Column", "ARROW_TYPES", "KINDS", "EPOCH", "ROUND", "RESULT", "RESULT_ONLY", "NOT_FIELDS", "KEPT_PRECISION"]
