"""Sweep storage: a local / NFS path or a cloud URI (s3://, gs://), through pyarrow.fs.

Every write is atomic: bytes go to a temporary name beside the target, then one rename, so a reader
(or a crash) sees either the old file or the new one, never half of one.
"""
import os
import uuid
from typing import List, Optional

import pyarrow as pa
import pyarrow.fs as pafs

from memomentum.atomic import NO_SPACE, atomic_write, no_space

SCHEMES = "a path (an NFS path on clusters), or an s3://, gs:// or hdfs:// URI"


class StorageError(RuntimeError):
    """The storage location cannot be used; the message says which and why."""


class Storage:
    def __init__(self, location: str):
        self.location = location
        if "://" in location:
            try:
                self.fs, self.root = pafs.FileSystem.from_uri(location)
            except (pa.ArrowInvalid, ValueError, OSError) as exc:
                if "nrecognized" in str(exc):
                    raise StorageError(f"storage {location}: unknown scheme {location.split('://', 1)[0]!r}; use "
                                       f"{SCHEMES}") from None
                raise StorageError(f"storage {location} cannot be opened ({str(exc).splitlines()[0][:120]}); check "
                                   f"the URI, the network and the credentials") from None
            self.local_root: Optional[str] = None
        else:
            self.root = os.path.abspath(os.path.expanduser(location))
            self.fs = pafs.LocalFileSystem()
            self.local_root = self.root

    def __repr__(self):
        return f"Storage({self.uri()!r})"

    def uri(self, *parts: str) -> str:
        """The location of `parts` as a user (or Tune's storage_path) would write it."""
        if self.local_root is not None:
            return os.path.join(self.local_root, *parts)
        return "/".join([self.location.rstrip("/"), *parts])

    def path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts]) if parts else self.root

    def local(self, *parts: str) -> Optional[str]:
        return os.path.join(self.local_root, *parts) if self.local_root is not None else None

    # --- reading ----------------------------------------------------------------------------
    def exists(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.path(*parts)).type != pafs.FileType.NotFound

    def read(self, *parts: str) -> Optional[bytes]:
        try:
            with self.fs.open_input_stream(self.path(*parts)) as fh:
                return fh.read()
        except (FileNotFoundError, OSError):
            return None

    def listdir(self, *parts: str) -> List[str]:
        """Names of the entries directly under `parts` (empty if it does not exist)."""
        selector = pafs.FileSelector(self.path(*parts), allow_not_found=True)
        return sorted(info.base_name for info in self.fs.get_file_info(selector))

    def stamp(self, *parts: str) -> Optional[tuple]:
        """A change stamp of a file, (modification time in ns, size), to tell whether it changed since it was
        last read; None if it does not exist. Not a time: see `mtime`."""
        info = self.fs.get_file_info(self.path(*parts))
        return None if info.type == pafs.FileType.NotFound else (info.mtime_ns or 0, info.size or 0)

    def mtime(self, *parts: str) -> Optional[float]:
        """The file's modification time in seconds since the epoch (None if it does not exist)."""
        info = self.fs.get_file_info(self.path(*parts))
        return None if info.type == pafs.FileType.NotFound else (info.mtime_ns or 0) / 1e9

    # --- writing ----------------------------------------------------------------------------
    def write_atomic(self, data: bytes, *parts: str) -> None:
        """Replace the file `parts` with `data` in one step; StorageError in one line when there is no space."""
        try:
            self._write_atomic(data, *parts)
        except OSError as exc:
            if exc.errno in NO_SPACE or "No space left" in str(exc):
                raise StorageError(no_space(self.uri(*parts), len(data))) from None
            raise

    def _write_atomic(self, data: bytes, *parts: str) -> None:
        if self.local_root is not None:  # local / NFS: fsynced before and after the rename
            atomic_write(self.local(*parts), data)
            return
        target = self.path(*parts)
        parent = target.rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        tmp = f"{parent}/.{target.rsplit('/', 1)[1]}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            with self.fs.open_output_stream(tmp) as fh:
                fh.write(data)
            self.fs.move(tmp, target)
        except BaseException:
            try:
                self.fs.delete_file(tmp)
            except OSError:
                pass
            raise

    def delete(self, *parts: str) -> None:
        """Remove the file `parts` (nothing if it is not there)."""
        try:
            self.fs.delete_file(self.path(*parts))
        except FileNotFoundError:
            pass

    def check_writable(self, *parts: str) -> None:
        """Raise StorageError unless a file can be created (and removed) under `parts`."""
        probe = (*parts, f".write-probe-{uuid.uuid4().hex[:8]}")
        try:
            self.write_atomic(b"ok", *probe)
            self.fs.delete_file(self.path(*probe))
        except Exception as exc:  # permission, read-only mount, missing bucket, bad credentials
            raise StorageError(f"storage {self.uri(*parts)} is not writable ({type(exc).__name__}: "
                               f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); choose another "
                               f"--storage or fix its permissions") from None
