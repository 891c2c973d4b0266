"""One driver per sweep: `<storage>/<name>/driver.lock` names the driver running the sweep.

A second `run_sweep.py` on the same grid and storage refuses in one line instead of running every
cell a second time. The holder rewrites the lock every `heartbeat` seconds; a lock is stale (and is
taken over) when its driver's process is gone (same host) or its heartbeat is older than
`stale_after` seconds, so a killed driver never leaves the sweep locked for long. On local and NFS
storage the lock is created exclusively (O_EXCL); on object stores, where that does not exist, the
winner of a race is the one whose token reads back.
"""
import json
import math
import os
import socket
import threading
import time
import uuid
from typing import Any, Optional

from sweeps.layout import LOCK_FILE
from sweeps.storage import Storage

STALE_AFTER = 120.0  # seconds without a heartbeat after which a lock no longer counts (also the clock-skew grace)
HEARTBEAT = 15.0  # seconds between the holder's rewrites of the lock
MAX_PID = 2 ** 22  # Linux's largest process id: a larger one in a lock names no process of this host


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
        """The lock's holder with every field checked (an impossible one is None), or None without a lock.
        Unreadable or foreign content is a holder of unknown identity: verified by the file's age alone."""
        raw = self.store.read(self.sweep, LOCK_FILE)
        if raw is None:
            return None
        try:
            found = json.loads(raw)
        except (ValueError, RecursionError):
            found = None
        found = found if isinstance(found, dict) else {}
        pid = found.get("pid")
        return {"host": _text(found.get("host")), "token": _text(found.get("token")),
                "pid": pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
                "heartbeat": _seconds(found.get("heartbeat"))}

    def last_seen(self, holder: dict) -> Optional[float]:
        """When the holder last showed life, on this host's clock: its heartbeat, unless that is missing,
        impossible or in the future beyond the grace period (a clock that jumped, a copied folder); then the
        lock file's modification time, under the same test; None when neither can be trusted."""
        now = time.time()
        for when in (holder.get("heartbeat"), self.store.mtime(self.sweep, LOCK_FILE)):
            if when is not None and math.isfinite(when) and when <= now + self.stale_after:
                return min(when, now)
        return None

    def stale(self, holder: dict) -> bool:
        pid = holder.get("pid")
        if holder.get("host") == self.me["host"] and pid is not None:
            if not 0 < pid <= MAX_PID:
                return True  # no process of this host can have that id: its driver is gone
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True  # its driver is gone
            except OSError:
                pass  # alive, but not ours to signal
        seen = self.last_seen(holder)
        return seen is None or time.time() - seen > self.stale_after

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
        pid = holder.get("pid")
        who = f"pid {pid if pid is not None else '?'} on {holder.get('host') or 'an unknown host'}"
        seen = self.last_seen(holder)
        ago = f", last seen {time.time() - seen:.0f} s ago" if seen is not None else ""
        return (f"sweep '{self.sweep}' in {self.store.uri(self.sweep)} is being run by another driver ({who}{ago}); "
                f"wait for it to finish or stop it, then run again (a lock whose driver died expires "
                f"{self.stale_after:.0f} s after its last heartbeat; if no driver runs this sweep, delete "
                f"{self.store.uri(self.sweep, LOCK_FILE)})")


def _seconds(value: Any) -> Optional[float]:
    """A lock's heartbeat as a finite float, or None (not a number, infinite, or an integer beyond float's range)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        seconds = float(value)
    except OverflowError:
        return None
    return seconds if math.isfinite(seconds) else None


def _text(value: Any) -> Optional[str]:
    """A lock field that must be a short string, or None."""
    return value[:200] if isinstance(value, str) else None
