"""A small sweep, run start to end N times in a row while busy processes hold every core: what a user on a shared
workstation or a loaded cluster node meets. Timing-dependent defects (Ray's log monitor swapping `print` before the
Tuner pickles its callbacks, a worker slow to start, an ETA that counts down while nothing runs) hide on an idle
machine; here they get their chance on every run.

    python benchmarks/bench_busy_sweep.py                    # 5 runs, one busy loop per core
    python benchmarks/bench_busy_sweep.py --runs 10 --busy 4

Each run is the real command (`python run_sweep.py GRID --storage <fresh folder>`: 4 digits cells, two methods, two
noise settings). A run passes when it exits 0, its terminal shows no traceback (nor `PicklingError`), and every
cell is in trials.parquet as finished. The busy loops are started before the first run and killed by their PIDs at
the end, whatever happens. The last line printed is one JSON object: each run's result and seconds, and
`all_passed`. Not a test (it takes minutes); its figures go to benchmarks/RESULTS.md.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRID = """name: busy
datasets: [digits]
noise:
  - {type: symmetric, rates: [0.4]}
  - {type: pairflip, rates: [0.4]}
seeds: [1]
methods: [memomentum, ce]
config: {epochs_per_stage: 3, max_outer: 2, max_inner: 2, device: cpu}
"""
BAD_SIGNS = ("Traceback", "PicklingError", "Exception ignored")


def one_run(folder: str) -> dict:
    import pyarrow.parquet as pq

    grid = os.path.join(folder, "grid.yaml")
    with open(grid, "w") as fh:
        fh.write(GRID)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "run_sweep.py"), grid, "--storage",
                           os.path.join(folder, "store"), "--status-every", "5"], cwd=ROOT, capture_output=True,
                          text=True, timeout=1200, env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"})
    seconds = time.perf_counter() - start
    output = proc.stdout + proc.stderr
    try:
        rows = pq.read_table(os.path.join(folder, "store", "busy", "results", "trials.parquet")).to_pylist()
    except OSError:
        rows = []
    finished = sum(r["status"] == "finished" for r in rows)
    problems = [sign for sign in BAD_SIGNS if sign in output]
    passed = proc.returncode == 0 and not problems and finished == 4
    return {"passed": passed, "exit_code": proc.returncode, "seconds": round(seconds, 1), "finished": finished,
            "problems": problems, "eta_zero_lines": sum("ETA 0 s" in line for line in output.splitlines()),
            "tail": None if passed else output[-1500:]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--busy", type=int, default=os.cpu_count() or 2, help="busy loops (default: one per core)")
    args = p.parse_args()
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    runs = []
    try:
        for i in range(args.runs):
            folder = tempfile.mkdtemp(prefix="busy-sweep-")
            try:
                runs.append(one_run(folder))
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            print(f"run {i + 1}: {runs[-1]['passed']} in {runs[-1]['seconds']} s", file=sys.stderr, flush=True)
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()
    print(json.dumps({"benchmark": "bench_busy_sweep", "busy_loops": args.busy, "cpus": os.cpu_count(),
                      "runs": runs, "all_passed": all(r["passed"] for r in runs)}))


if __name__ == "__main__":
    main()
