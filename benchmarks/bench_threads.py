"""CPU threads per trial: how fast a trial runs alone and beside a second one, per network and thread count.

    python benchmarks/bench_threads.py                         # both parts (MNIST: $MEMOMENTUM_DATA or --data-root)
    python benchmarks/bench_threads.py --part epochs --models digitsnet lenet resnet18

Part `epochs`: one training epoch, validation and extraction pass of our engine (benchmarks/bench_epoch.py on
random data of the real shape: digitsnet on 10x the digits training split, LeNet on 12,000 MNIST-size images,
ResNet-18 on 384 CIFAR-size images), in k = 1 and k = 2 processes started together, each with T intra-op threads
for T in `--threads` (default: 1 and every CPU this process may use). `slowdown` = the mean seconds of the k = 2
processes over the k = 1 process: 1.0 means the second trial costs the first nothing.

Part `trials`: the real single-trial command (`python -m memomentum`, `ce`; digits 20 epochs, MNIST 2 epochs),
k = 1 and k = 2 at once, once with `threads` = every CPU (what every process did before the thread rule: torch's
default pool) and once with the default rule (`threads: 0`, memomentum/threads.py). Each trial's own `seconds`
(its result) and the wall time of the group are reported.

The last line printed is one JSON object with every point. Figures go to benchmarks/RESULTS.md with machine,
versions and date.
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from memomentum.stream import available_cpus  # noqa: E402

EPOCH_SIZES = {"digitsnet": 14370, "lenet": 12000, "resnet18": 384, "resnet34": 384}
TRIALS = {"digits": ["--dataset", "digits", "--set", "epochs_per_stage=20"],
          "mnist": ["--dataset", "mnist", "--set", "epochs_per_stage=2"]}


def together(cmds, env=None):
    """Run the commands at once; (wall seconds, the last stdout line of each as JSON)."""
    start = time.perf_counter()
    procs = [subprocess.Popen(c, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, **(env or {})}) for c in cmds]
    outs = [p.communicate() for p in procs]
    wall = time.perf_counter() - start
    for p, (out, err) in zip(procs, outs):
        if p.returncode != 0:
            raise SystemExit(f"error: {' '.join(p.args)} failed:\n{err[-2000:]}")
    return wall, [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]


def mean(xs):
    return sum(xs) / len(xs)


def epochs_part(models, threads):
    points = []
    for model in models:
        for t in threads:
            cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "bench_epoch.py"), "--model", model, "--device",
                   "cpu", "--n", str(EPOCH_SIZES[model]), "--ours-only", "--threads", str(t)]
            seconds = {}
            for k in (1, 2):
                _, results = together([cmd] * k)
                seconds[k] = [r["ours"]["total_s"] for r in results]
                assert all(r["cpu_threads"] == t for r in results), results
            point = {"part": "epochs", "model": model, "threads": t, "alone_s": round(seconds[1][0], 3),
                     "beside_another_s": [round(s, 3) for s in seconds[2]],
                     "slowdown": round(mean(seconds[2]) / seconds[1][0], 2)}
            print(json.dumps(point), file=sys.stderr, flush=True)
            points.append(point)
    return points


def trials_part(datasets, data_root):
    points = []
    for dataset in datasets:
        for label, threads in (("every CPU (torch's default)", available_cpus()), ("the rule (threads: 0)", 0)):
            seconds, walls, used = {}, {}, set()
            for k in (1, 2):
                cmds = [[sys.executable, "-m", "memomentum", *TRIALS[dataset], "--method", "ce", "--noise-type",
                         "symmetric", "--noise-rate", "0.4", "--seed", str(seed), "--device", "cpu",
                         "--set", f"threads={threads}", "--log-every", "0"]
                        + (["--data-root", data_root] if data_root else []) for seed in range(1, k + 1)]
                walls[k], results = together(cmds)
                seconds[k] = [r["seconds"] for r in results]
                used |= {r.get("threads") for r in results}
            point = {"part": "trials", "dataset": dataset, "setting": label, "threads_used": sorted(used, key=str),
                     "alone_s": round(seconds[1][0], 2), "beside_another_s": [round(s, 2) for s in seconds[2]],
                     "wall_alone_s": round(walls[1], 2), "wall_two_s": round(walls[2], 2),
                     "slowdown": round(mean(seconds[2]) / seconds[1][0], 2)}
            print(json.dumps(point), file=sys.stderr, flush=True)
            points.append(point)
    return points


def main(argv=None):
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", choices=("epochs", "trials", "all"), default="all")
    p.add_argument("--models", nargs="+", default=["digitsnet", "lenet", "resnet18"], choices=sorted(EPOCH_SIZES))
    p.add_argument("--threads", type=int, nargs="+", help="thread counts of part epochs (default: 1 and every CPU)")
    p.add_argument("--datasets", nargs="+", default=["digits", "mnist"], choices=sorted(TRIALS))
    p.add_argument("--data-root", default="", help="folder with MNIST (default $MEMOMENTUM_DATA)")
    args = p.parse_args(argv)
    threads = args.threads or sorted({1, available_cpus()})
    points = []
    if args.part in ("epochs", "all"):
        points += epochs_part(args.models, threads)
    if args.part in ("trials", "all"):
        points += trials_part(args.datasets, args.data_root)
    print(json.dumps({"benchmark": "bench_threads", "date": time.strftime("%Y-%m-%d"), "cpus": available_cpus(),
                      "torch": torch.__version__, "torch_default_threads": torch.get_num_threads(),
                      "points": points}))


if __name__ == "__main__":
    main()
