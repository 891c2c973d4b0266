"""Atomic file writes: the one writer every result, trial file and cache of the project goes through.

Bytes go to a temporary file beside the target, are flushed and fsynced, and replace the target by
one rename, after which the folder is fsynced too. A reader (or a crash, or a full disk) therefore
sees the old file or the new one, never a part of one.
"""
import io
import os
import tempfile

import numpy as np


def atomic_write(path: str, data: bytes) -> None:
    """Replace `path` with `data` atomically and durably (creating its folder)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(folder)


def fsync_dir(folder: str) -> None:
    """Make a rename inside `folder` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_savez(path: str, **arrays: np.ndarray) -> bool:
    """np.savez through atomic_write. Returns False (and leaves no file) if the folder is not
    writable: a cache that cannot be written only costs recomputation."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    try:
        atomic_write(path, buffer.getvalue())
        return True
    except OSError:
        return False


def load_npz(path: str, names, validate=None):
    """The arrays `names` of an .npz cache file, or None if the file is missing, cut short, foreign
    or fails `validate(arrays) -> bool`: the caller then recomputes and rewrites it."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {n: z[n] for n in names}
    except Exception:  # FileNotFoundError, BadZipFile, EOFError, KeyError, ValueError, ...
        return None
    if validate is not None:
        try:
            if not validate(arrays):
                return None
        except Exception:
            return None
    return arrays
