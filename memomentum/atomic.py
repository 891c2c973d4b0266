"""Atomic file writes: the one writer every result, trial file and cache of the project goes through.

Bytes go to a temporary file beside the target, are flushed and fsynced, and replace the target by
one rename, after which the folder is fsynced too. A reader (or a crash, or a full disk) therefore
sees the old file or the new one, never a part of one. The file ends with the permissions the umask
gives an ordinary new file.
"""
import errno
import io
import os
import shutil
import tempfile

import numpy as np


def umask() -> int:
    """The process's file-creation mask: read from /proc/self/status where there is one (Linux), without
    changing it; elsewhere by setting it and putting it back at once."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str, data: bytes) -> None:
    """Replace `path` with `data` atomically and durably (creating its folder). The file gets the permissions
    the umask gives any new file (0644 under umask 022), not a temporary file's private 0600, so that tables on
    shared storage stay readable by others."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~umask())
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


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)  # a full disk, or a full quota


def no_space(path: str, needed: int) -> str:
    """One line for a write that found no space: where, how much it needed, how much is free."""
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.isdir(folder) and os.path.dirname(folder) != folder:  # the nearest folder that exists
        folder = os.path.dirname(folder)
    try:
        free = f"{shutil.disk_usage(folder).free:,} bytes free"
    except OSError:  # not a local path (an object store)
        free = "free space unknown"
    return (f"no space left to write {path} ({needed:,} bytes needed, {free}); free some space or move the storage, "
            f"then run the same command again: finished results are kept")


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
