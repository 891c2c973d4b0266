"""Aggregate throughput of k concurrent small trials on one GPU, packed by the sweep runner's
fractional resources (gpu: 1/k per trial), for k = 1, 2, 4, 8.

    python benchmarks/bench_packing.py --data-root ../shared/data              # MNIST, LeNet, cuda
    python benchmarks/bench_packing.py --dataset digits --device cpu --k 1 2   # a smoke run on a CPU

Each k runs a fresh sweep of k `ce` trials (seeds 1..k, `--epochs` epochs each) through
sweeps.runner on one Ray instance started beforehand, so Ray's start-up is not timed. Throughput is
training images per second over the wall time of the whole sweep (all k trials); the last line is one
JSON object with the curve. Figures go to benchmarks/RESULTS.md with machine, versions and date.
"""
import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pyarrow.parquet as pq  # noqa: E402

from sweeps import runner  # noqa: E402
from sweeps.grid import parse_grid  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--data-root", default="")
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--k", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--epochs", type=int, default=5, help="epochs per trial")
    p.add_argument("--cpus-per-trial", type=float, default=1.0)
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    args = p.parse_args(argv)

    runner.connect(None)
    curve = []
    for k in args.k:
        raw = {"name": f"pack{k}", "datasets": [args.dataset], "noise": [{"type": "symmetric", "rates": [0.4]}],
               "seeds": list(range(1, k + 1)), "methods": ["ce"],
               "resources": {"default": {"cpu": args.cpus_per_trial, "gpu": 1.0 / k if args.device == "cuda" else 0}},
               "config": {"epochs_per_stage": args.epochs, "device": args.device, "precision": args.precision}}
        if args.data_root:
            raw["data_root"] = args.data_root
        with tempfile.TemporaryDirectory() as storage:
            grid = parse_grid(raw, storage=storage)
            start = time.perf_counter()
            code = runner.run(grid, out=lambda line: None)
            wall = time.perf_counter() - start
            trials = pq.read_table(os.path.join(storage, grid.name, "results", "trials.parquet")).to_pylist()
            epochs = pq.read_table(os.path.join(storage, grid.name, "results", "epochs.parquet")).to_pylist()
        images = sum(e["n_train"] for e in epochs)
        point = {"k": k, "exit_code": code, "wall_s": round(wall, 2), "trials": len(trials),
                 "images_per_s": round(images / wall, 1),
                 "mean_trial_s": round(sum(t["seconds"] for t in trials) / len(trials), 2)}
        print(json.dumps(point), file=sys.stderr, flush=True)
        curve.append(point)
    base = curve[0]["images_per_s"]
    print(json.dumps({"dataset": args.dataset, "device": args.device, "epochs_per_trial": args.epochs,
                      "precision": args.precision, "curve": curve,
                      "relative_throughput": {p["k"]: round(p["images_per_s"] / base, 2) for p in curve}}))


if __name__ == "__main__":
    main()
