"""The sweep runner at scale: N tiny trials (digits, `ce`, one epoch each, `cpu: 1`) through the real runner,
as a user runs it (`python run_sweep.py GRID`, Ray started by the driver), for each N of `--trials`.

    python benchmarks/bench_scale.py --trials 200            # a few minutes on 2 cores
    python benchmarks/bench_scale.py --trials 50 200 1000    # the figures in benchmarks/RESULTS.md

The driver's resident memory (and that of Ray's GCS and raylet, which keep per-trial state too) is sampled every
second from /proc (Linux), while Ray is up. Per N, one JSON line: wall time, trial seconds summed, overhead per
trial = (wall x concurrent slots - trial seconds) / N, driver RSS at start (once the trials are scheduled) / peak
/ end (the last sample before Ray shuts down), the experiment state on disk (tune/ folder and the whole sweep folder), and the time `--collect` takes on
the finished sweep (a fresh process, as a user runs it). The last line is one JSON object with every N.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def rss_mb(pid: int):
    """Resident memory of process `pid` in MB (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def descendants(pid: int):
    """{pid: command line} of every process below `pid`."""
    children, names = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                parent = int(fh.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                names[int(entry)] = fh.read().replace(b"\0", b" ").decode(errors="replace")
            children.setdefault(parent, []).append(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    out, todo = {}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out[child] = names.get(child, "")
            todo.append(child)
    return out


class Sampler(threading.Thread):
    """Samples the driver's RSS, and Ray's GCS + raylet RSS, every `every` seconds until stopped."""

    def __init__(self, pid: int, log: str, every: float = 1.0):
        super().__init__(daemon=True)
        self.pid, self.log, self.every, self.driver, self.ray = pid, log, every, [], []
        self.first = None  # the first sample once the sweep's trials are scheduled (its first status line)
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            driver = rss_mb(self.pid)
            if driver is None:
                break
            ray = [rss_mb(p) for p, cmd in descendants(self.pid).items() if "gcs_server" in cmd or "raylet" in cmd]
            ray = sum(r for r in ray if r)
            if not ray:  # Ray not up yet, or already shut down: not the sweep's memory
                if self.driver:
                    break
            else:
                if self.first is None and self._scheduled():
                    self.first = len(self.driver)
                self.driver.append(driver)
                self.ray.append(ray)
            self.done.wait(self.every)

    def _scheduled(self) -> bool:
        try:
            with open(self.log, errors="replace") as fh:
                text = fh.read()
            return "status:" in text or "Trial status" in text  # this runner's status line, or Tune's table
        except OSError:
            return False


def folder_mb(path: str) -> float:
    total = 0
    for base, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(base, name))
            except OSError:
                pass
    return round(total / 2 ** 20, 2)


def one(n: int, storage: str, epochs: int) -> dict:
    import pyarrow.parquet as pq

    grid = os.path.join(storage, f"scale{n}.yaml")
    with open(grid, "w") as fh:
        fh.write(f"name: scale{n}\ndatasets: [digits]\nnoise: [{{type: symmetric, rates: [0.4]}}]\n"
                 f"seeds: [{', '.join(str(s) for s in range(1, n + 1))}]\nmethods: [ce]\n"
                 f"config: {{epochs_per_stage: {epochs}, device: cpu}}\nresources: {{default: {{cpu: 1, gpu: 0}}}}\n")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    log = os.path.join(storage, f"scale{n}.log")
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "run_sweep.py"), grid, "--storage", storage,
                                 "--status-every", "60"], stdout=out, stderr=subprocess.STDOUT, env=env)
        sampler = Sampler(proc.pid, log)
        sampler.start()
        code = proc.wait()
    wall = time.perf_counter() - start
    sampler.done.set()
    sampler.join()
    sweep = os.path.join(storage, f"scale{n}")
    start = time.perf_counter()
    collect = subprocess.run([sys.executable, os.path.join(ROOT, "run_sweep.py"), "--collect", sweep],
                             capture_output=True, text=True, env=env)
    collect_s = time.perf_counter() - start
    trials = pq.read_table(os.path.join(sweep, "results", "trials.parquet")).to_pylist()
    seconds = sum(t["seconds"] or 0 for t in trials)
    slots = min(os.cpu_count() or 1, n)
    with open(log) as fh:
        lines = fh.read().splitlines()
    driver, ray = sampler.driver, sampler.ray
    up = sampler.first or 0
    return {"trials": n, "exit_code": code, "finished": sum(t["status"] == "finished" for t in trials),
            "wall_s": round(wall, 1), "trial_seconds_summed": round(seconds, 1), "slots": slots,
            "overhead_per_trial_s": round((wall * slots - seconds) / n, 3),
            "driver_rss_mb": {"start": round(driver[up], 1) if driver else None,
                              "peak": round(max(driver), 1) if driver else None,
                              "end": round(driver[-1], 1) if driver else None},
            "ray_gcs_raylet_rss_mb": {"start": round(ray[up], 1) if ray else None,
                                      "peak": round(max(ray), 1) if ray else None,
                                      "end": round(ray[-1], 1) if ray else None},
            "tune_state_mb": folder_mb(os.path.join(sweep, "tune")), "sweep_folder_mb": folder_mb(sweep),
            "collect_s": round(collect_s, 2), "collect_exit_code": collect.returncode,
            "terminal_lines": len(lines)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, nargs="+", default=[50, 200])
    p.add_argument("--epochs", type=int, default=1, help="epochs per trial (default 1)")
    p.add_argument("--keep", metavar="DIR", help="run under DIR and keep the sweeps (default: a temporary folder)")
    args = p.parse_args(argv)
    if not os.path.isdir("/proc/self"):
        sys.exit("error: bench_scale.py samples memory from /proc; run it on Linux")
    points = []
    with tempfile.TemporaryDirectory() as tmp:
        storage = args.keep or tmp
        os.makedirs(storage, exist_ok=True)
        for n in args.trials:
            point = one(n, storage, args.epochs)
            print(json.dumps(point), flush=True)
            points.append(point)
    import torch
    import ray

    print(json.dumps({"benchmark": "bench_scale", "date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(),
                      "torch": torch.__version__, "ray": ray.__version__, "points": points}))


if __name__ == "__main__":
    main()
