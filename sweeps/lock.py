"""One driver per sweep: `<storage>/<name>/driver.lock` names the driver running the sweep.

A second `run_sweep.py` on the same grid and storage refuses in one line instead of running every
cell a second time. The holder rewrites the lock every `heartbeat` seconds; a lock is stale (and is
taken over) when its driver's process is gone (same host) or its heartbeat is older than
`stale_after` seconds, so a killed driver never leaves the sweep locked for long. On local and NFS
storage the lock is created exclusively (O_EXCL); on object stores, where that does not exist, the
winner of a race is the one whose token reads back.
"""
import json
import os
import socket
import threading
import time
import uuid
from typing import Optional

from sweeps.layout import LOCK_FILE
from sweeps.storage import Storage

STALE_AFTER = 120.0  # seconds without a heartbeat after which a lock no longer counts
HEARTBEAT = 15.0  # seconds between the holder's rewrites of the lock


class LockError(RuntimeError):
    """Another driver runs this sweep; the message names it and says what to do."""


class DriverLock:
    def __init__(self, store: Storage, sweep: str, stale_after: float = STALE_AFTER, heartbeat: float = HEARTBEAT):
        self.store, self.sweep = store, sweep
        self.stale_after, self.heartbeat = stale_after, heartbeat
        self.me = {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex,
                   "started": time.time(), "heartbeat": time.time()}
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # --- the file ---------------------------------------------------------------------------
    def holder(self) -> Optional[dict]:
        raw = self.store.read(self.sweep, LOCK_FILE)
        if raw is None:
            return None
        try:
            holder = json.loads(raw)
        except ValueError:
            holder = None
        # an unreadable lock counts as held until it is as old as a stale heartbeat
        return holder if isinstance(holder, dict) else {"heartbeat": self.store.mtime(self.sweep, LOCK_FILE) or 0.0}

    def stale(self, holder: dict) -> bool:
        if holder.get("host") == self.me["host"] and isinstance(holder.get("pid"), int):
            try:
                os.kill(holder["pid"], 0)
            except ProcessLookupError:
                return True  # its driver is gone
            except OSError:
                pass  # alive, but not ours to signal
        beat = holder.get("heartbeat")
        return not isinstance(beat, (int, float)) or time.time() - beat > self.stale_after

    def _create(self) -> bool:
        data = json.dumps(self.me).encode()
        path = self.store.local(self.sweep, LOCK_FILE)
        if path is None:  # object store: no exclusive create; the read-back below decides
            self.store.write_atomic(data, self.sweep, LOCK_FILE)
            return True
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return True

    # --- acquire / release ------------------------------------------------------------------
    def acquire(self) -> "DriverLock":
        for _ in range(3):
            holder = self.holder()
            if holder is not None:
                if not self.stale(holder):
                    raise LockError(self._busy(holder))
                self._remove()
            if self._create():
                break
        else:
            raise LockError(self._busy(self.holder() or {}))
        time.sleep(0.2)  # a driver that raced us and lost has rewritten or removed the file by now
        holder = self.holder() or {}
        if holder.get("token") != self.me["token"]:
            raise LockError(self._busy(holder))
        self._thread = threading.Thread(target=self._beat, name="sweep-lock-heartbeat", daemon=True)
        self._thread.start()
        return self

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if (self.holder() or {}).get("token") == self.me["token"]:
            self._remove()

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            try:
                if (self.holder() or {}).get("token") != self.me["token"]:
                    return  # taken over (we were presumed dead): stop claiming it
                self.me["heartbeat"] = time.time()
                self.store.write_atomic(json.dumps(self.me).encode(), self.sweep, LOCK_FILE)
            except Exception:  # a storage hiccup: the next beat tries again
                pass

    def _remove(self) -> None:
        try:
            self.store.fs.delete_file(self.store.path(self.sweep, LOCK_FILE))
        except (OSError, FileNotFoundError):
            pass

    def _busy(self, holder: dict) -> str:
        who = f"pid {holder.get('pid', '?')} on {holder.get('host', 'an unknown host')}"
        beat = holder.get("heartbeat")
        seen = f", last seen {time.time() - beat:.0f} s ago" if isinstance(beat, (int, float)) else ""
        return (f"sweep '{self.sweep}' in {self.store.uri(self.sweep)} is being run by another driver ({who}{seen}); "
                f"wait for it to finish or stop it, then run again (a lock whose driver died expires "
                f"{self.stale_after:.0f} s after its last heartbeat)")
