"""The examples a method selected, round by round: what a trial trusted, exported for the user.

A method whose trial selects (`Trial.selects`) offers after every round (`Trial.selection()`): the training
examples that round trained on (a confident set: Me-Momentum, its class-wise variant, PES, SFT), or, for a
per-batch selector (Co-teaching, JoCoR, SELFIE), the examples its last epoch kept; each with its noisy label
and whether that label is the clean one (unknown: -1). A sweep stores one compressed file per round beside
the trial file (trials/<key>/selections/round-NNNN.npz) and collects them into
results/selections.parquet, one row per (trial, round, example):

    import pyarrow.parquet as pq
    s = pq.read_table("runs/quick/results/selections.parquet").to_pandas()
    s.groupby(["key", "round"]).clean.mean() * 100        # each round's precision (%)
"""
import io
from typing import Optional

import numpy as np

FIELDS = ("round", "outer", "inner", "step")  # the round's place in the trial (as in rounds.parquet)


def encode(selection: dict) -> bytes:
    """A round's selection as compressed .npz bytes."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, index=np.asarray(selection["index"], dtype=np.int64),
                        noisy=np.asarray(selection["noisy"], dtype=np.int64),
                        clean=np.asarray(selection["clean"], dtype=np.int8),
                        place=np.asarray([selection[f] for f in FIELDS], dtype=np.int64))
    return buffer.getvalue()


def decode(raw: bytes) -> Optional[dict]:
    """The selection of `encode`'s bytes, or None if they are not one (cut short, foreign)."""
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            out = {"index": z["index"], "noisy": z["noisy"], "clean": z["clean"], "place": z["place"]}
    except Exception:  # BadZipFile, KeyError, ValueError, ...
        return None
    n = len(out["index"])
    if len(out["noisy"]) != n or len(out["clean"]) != n or len(out["place"]) != len(FIELDS):
        return None
    return {**{f: int(v) for f, v in zip(FIELDS, out.pop("place"))}, **out}


def file_name(round_number: int) -> str:
    return f"round-{round_number:04d}.npz"


__all__ = ["encode", "decode", "file_name", "FIELDS"]
