"""The sweep's terminal: one line per event that matters, and a status line with an ETA.

    [00:12] start digits-pairflip-0.4-s1-memomentum (2 running)
    [00:31] round digits-pairflip-0.4-s1-memomentum 1.2 B: confident 751, precision 83.9%, val 62.21 (19.0 s)
    [00:44] done  digits-pairflip-0.4-s1-memomentum: test 78.61 (last 79.72), best val 62.99, 835 epochs, 32 s
    [01:00] status: 3/32 done, 2 running, 27 pending, 0 failed; ETA 4 min 10 s (at 22:09)
    [01:02] FAILED digits-...: RuntimeError: CUDA out of memory ...

The ETA is the remaining work (each cell's typical epochs x its method's epoch cost x the dry run's
per-epoch seconds, running cells in proportion to the epochs still to go) divided by the concurrent slots,
at the pace the trials actually kept (the wall time of finished trials, and of running ones for the epochs they
have done, per unit of that estimate); before anything is measured, the dry run's estimate itself. Tune's own tables and the workers' own lines are `--verbose`.
`Progress` holds the logic (no Ray); `progress_callback` wraps it in a Tune callback.
"""
import re
import time
from typing import Callable, Dict, Optional

from memomentum.errors import clip
from memomentum.progress import fmt


def echo(line: str) -> None:
    """The terminal's default output: print(line), with `print` looked up at each call. Ray may replace
    builtins.print at any moment (its log monitor installs tqdm_ray's safe_print when the first worker line
    arrives), and Tune pickles its callbacks when the Tuner is built: an object holding the original `print` by
    reference then fails to pickle. This function is pickled by its module and name, whatever print is now."""
    print(line, flush=True)


def clock(seconds: float) -> str:
    minutes, secs = divmod(int(max(seconds, 0)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def duration(seconds: float) -> str:
    seconds = int(round(max(seconds, 0)))
    if seconds < 60:
        return f"{seconds} s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


WAITING_S = 10.0  # seconds with trials pending and none running after which the ETA says it cannot tell


class Progress:
    """What the terminal says about a sweep's cells.

    `cells`: key -> {"name", "work" (the dry run's estimate of its seconds, or None), "epochs" (typical epochs),
    "rounds" (whether its method's rounds are worth a line)}; `slots`: how many trials can run at once."""

    def __init__(self, cells: Dict[str, dict], slots: int, out: Callable[[str], None] = echo,
                 every: float = 30.0, now: Callable[[], float] = time.time):
        self.cells, self.slots, self.out, self.every, self.now = cells, max(int(slots), 1), out, every, now
        self.start = now()
        self.last_status = self.start
        self.idle_since: Optional[float] = self.start  # since when no trial has been running (None: one is)
        self.started: Dict[str, float] = {}
        self.progress: Dict[str, float] = {}  # key -> share of its typical epochs done
        self.done: Dict[str, float] = {}  # key -> wall seconds it took
        self.failed = set()
        default = [c["work"] for c in cells.values() if c.get("work")]
        self.default_work = sum(default) / len(default) if default else 60.0

    def _say(self, text: str) -> None:
        self.out(f"[{clock(self.now() - self.start)}] {text}")

    def _work(self, key: str) -> float:
        return self.cells[key].get("work") or self.default_work

    # --- events ---------------------------------------------------------------------------------
    def trial_started(self, key: str) -> None:
        self.started[key] = self.now()
        self.idle_since = None
        self.progress.setdefault(key, 0.0)
        self._say(f"start {self.cells[key]['name']} ({len(self.running())} running)")

    def trial_result(self, key: str, result: dict) -> None:
        epochs = self.cells[key].get("epochs") or 0
        if epochs and isinstance(result.get("step"), (int, float)):
            self.progress[key] = min(result["step"] / epochs, 0.95)
        if self.cells[key].get("rounds") and "round_n_confident" in result:
            where = f"{fmt(result.get('round_outer'))}.{fmt(result.get('round_inner'))}"
            self._say(f"round {self.cells[key]['name']} {where}: confident {fmt(result.get('round_n_confident'))}, "
                      f"precision {fmt(result.get('round_precision'), '.1f')}%, val {fmt(result.get('round_val_score'), '.2f')} "
                      f"({fmt(result.get('seconds'), '.1f')} s)")

    def trial_finished(self, key: str, result: Optional[dict]) -> None:
        self.done[key] = self.now() - self.started.get(key, self.now())
        self.progress.pop(key, None)
        self._maybe_idle()
        r = result or {}
        self._say(f"done  {self.cells[key]['name']}: test {fmt(r.get('final_test_acc'), '.2f')} (last "
                  f"{fmt(r.get('final_last_test_acc'), '.2f')}), best val {fmt(r.get('final_best_val_score'), '.2f')}, "
                  f"{fmt(r.get('final_epochs'))} epochs, {fmt(r.get('final_seconds'), '.0f')} s "
                  f"[{len(self.done)}/{len(self.cells)} done]")
        if r.get("final_note"):
            self._say(f"note  {self.cells[key]['name']}: {r['final_note']}")

    def trial_failed(self, key: str, error: str) -> None:
        self.failed.add(key)
        self.progress.pop(key, None)
        self._maybe_idle()
        self._say(f"FAILED {self.cells[key]['name']}: {error}")

    def tick(self) -> None:
        """The status line, every `every` seconds."""
        if self.now() - self.last_status >= self.every:
            self.last_status = self.now()
            self._say(self.status())

    def _maybe_idle(self) -> None:
        if not self.running() and self.idle_since is None:
            self.idle_since = self.now()

    # --- the status ------------------------------------------------------------------------------
    def running(self):
        return [k for k in self.started if k not in self.done and k not in self.failed]

    def status(self) -> str:
        running = len(self.running())
        pending = len(self.cells) - len(self.done) - len(self.failed) - running
        eta = self.eta()
        if eta is not None:
            when = f"; ETA {duration(eta)} (at {time.strftime('%H:%M', time.localtime(self.now() + eta))})"
        elif pending and not running and self.now() - self.idle_since >= WAITING_S:
            when = f"; ETA n/a: no trial running for {duration(self.now() - self.idle_since)} (waiting for resources)"
        elif pending or running:
            when = "; ETA n/a: nothing measured yet"
        else:
            when = ""
        return (f"status: {len(self.done)}/{len(self.cells)} done, {running} running, {pending} pending, "
                f"{len(self.failed)} failed{when}")

    def eta(self) -> Optional[float]:
        """Seconds until the last cell ends, at the pace measured so far. None when nothing is left, and when it
        cannot be told honestly: no trial has run for WAITING_S seconds while some wait (for resources, or for
        workers a loaded machine is slow to start), or nothing is measured yet and the dry run's estimate is
        already spent."""
        left = [k for k in self.cells if k not in self.done and k not in self.failed]
        if not left:
            return None
        now = self.now()
        if not self.running() and now - self.idle_since >= WAITING_S:
            return None
        work_left = sum(self._work(k) * (1 - self.progress.get(k, 0.0)) for k in left)
        eta = work_left * self.pace() / min(self.slots, len(left))
        if not self.measured() and now - self.start > eta:
            return None
        return eta

    def measured(self) -> bool:
        """Whether the pace rests on a measurement (a finished trial, or a running one a tenth done)."""
        return any(k in self.cells for k in self.done) or any(self.progress.get(k, 0.0) >= 0.1 for k in self.running())

    def pace(self) -> float:
        """Measured wall seconds per estimated second: the finished trials' whole time, and the running trials'
        time so far against the share of their epochs done (once a tenth is); 1.0 before anything is measured."""
        spent = sum(self.done[k] for k in self.done if k in self.cells)
        estimated = sum(self._work(k) for k in self.done if k in self.cells)
        for k in self.running():
            if self.progress.get(k, 0.0) >= 0.1:
                spent += self.now() - self.started[k]
                estimated += self._work(k) * self.progress[k]
        return spent / estimated if estimated > 0 else 1.0


# the line that starts an exception in a traceback's text: "RuntimeError: ...", "torch.OutOfMemoryError: ..."
EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning|Failure))(?::\s?(.*))?$")
TRACEBACK_KEPT = 20_000  # characters of Tune's error text kept in error.json


def exception_name(exc: BaseException) -> str:
    """As a traceback names it: `RuntimeError`, `torch.OutOfMemoryError`."""
    kind = type(exc)
    return kind.__qualname__ if kind.__module__ in ("builtins", "__main__") else f"{kind.__module__}.{kind.__qualname__}"


def trial_error(trial, default: str) -> dict:
    """What made a failed Tune `trial` fail: {"type", "message" (whole, every line), "line" (type and message on one
    line), "traceback" (Tune's error text)}. From the exception Tune pickled (the trainable's own, inside Ray's
    wrapper) where it can be read, else from the text, whose last lines hold the exception; `default` as the line
    when neither says anything."""
    text = ""
    try:
        with open(getattr(trial, "error_file", None) or "", errors="replace") as fh:
            text = fh.read()
    except OSError:
        pass
    kind = message = None
    try:
        from ray import cloudpickle

        with open(getattr(trial, "pickled_error_file", None) or "", "rb") as fh:
            exc = cloudpickle.load(fh)  # Tune's own file, written by this driver for this trial
        exc = getattr(exc, "cause", None) or exc  # Ray's RayTaskError wraps the trainable's exception
        kind, message = exception_name(exc), str(exc)
    except Exception:  # no pickle (a process that died), or one this process cannot load
        lines = text.rstrip().splitlines()
        for i in range(len(lines) - 1, -1, -1):
            found = EXCEPTION_LINE.match(lines[i])
            if found:
                kind, message = found.group(1), "\n".join([found.group(2) or ""] + lines[i + 1:])
                break
    if kind is None:
        last = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("Failure # ")]
        return {"type": None, "message": text.strip() or None, "line": clip(last[-1], 300) if last else default,
                "traceback": text[-TRACEBACK_KEPT:] or None}
    return {"type": kind, "message": message, "line": clip(f"{kind}: {message}" if message.strip() else kind, 300),
            "traceback": text[-TRACEBACK_KEPT:] or None}


def progress_callback(progress: Progress):
    """A Tune callback that tells `progress` about trial events (defined lazily: importing this module does not
    import Ray)."""
    from ray import tune

    class Terminal(tune.Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            progress.trial_started(trial.config["cell"])

        def on_trial_result(self, iteration, trials, trial, result, **info):
            progress.trial_result(trial.config["cell"], result)

        def on_trial_complete(self, iteration, trials, trial, **info):
            progress.trial_finished(trial.config["cell"], trial.last_result)

        def on_trial_error(self, iteration, trials, trial, **info):
            error = trial_error(trial, "the trial failed after its retries (details: its error.json)")
            progress.trial_failed(trial.config["cell"], error["line"])

        def on_step_end(self, iteration, trials, **info):
            progress.tick()

    return Terminal()


__all__ = ["Progress", "progress_callback", "trial_error", "exception_name", "clock", "duration", "echo"]
