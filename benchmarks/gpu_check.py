"""The GPU check: one command within a time budget, one output folder with every figure and log.

    python benchmarks/gpu_check.py --budget 520 --data-root data --out-dir /tmp/gpu   # a GPU machine (gpu_run.sh)
    python benchmarks/gpu_check.py --device cpu --quick --out-dir /tmp/gpu            # its CPU form (the tests run it)

Parts, in this order, each under its own time limit (a hang costs only that part), the summary
(summary.json) rewritten after each one so that whatever finished is there even if the command is killed:
  env       versions, device, which optional packages exist (Ray is not needed here)
  epochs    benchmarks/bench_epoch.py, our engine only: LeNet, ResNet-18, ResNet-34 in strict fp32, TF32 and
            bf16, compile off / on (warm-up = compile time), most telling first -> epochs.jsonl
  packing   k = 1 and 8 LeNet `ce` trials on MNIST as processes side by side, each capped to 1/k of the GPU's
            memory: training images per second from the trials' own training seconds (not the wall time, which
            is mostly process start-up) and from the wall time, peak memory -> packing.json
  cells     real-MNIST cells (ce and memomentum, symmetric / pair-flip / instance 0.2 / 0.4, seed 1, official
            settings) as trial files under cells/trials/ (a cell cut off by the budget leaves its rounds so
            far); `python run_sweep.py --collect <out-dir>/cells` makes the tables -> cells.json
  suite     the CUDA test subset (engine, device, procedure, methods, baselines; MEMOMENTUM_TEST_DEVICE) with
            junit.xml, run beside the cells
Data: MNIST's four .gz files under <data-root>/MNIST/raw/ are enough (the loader reads them compressed).
Needs PyTorch and numpy; parts that need more degrade (a missing package is reported, not fatal). Every log
is in the folder (logs/). Record the figures in benchmarks/RESULTS.md with device, versions and date.
"""
import argparse
import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUITE = ["tests/test_engine.py", "tests/test_device.py", "tests/test_procedure.py", "tests/test_methods.py",
         "tests/test_baselines.py"]
QUICK_SUITE = ["tests/test_engine.py"]
# (model, precision, matmul precision, compile), most telling first: the budget may stop the list early
EPOCH_PLAN = [("lenet", "fp32", "fp32", False), ("resnet18", "bf16", "fp32", False), ("resnet18", "bf16", "fp32", True),
              ("lenet", "fp32", "fp32", True), ("resnet18", "fp32", "fp32", False), ("resnet18", "fp32", "tf32", False),
              ("resnet34", "bf16", "fp32", False), ("resnet34", "bf16", "fp32", True), ("lenet", "bf16", "fp32", False),
              ("resnet18", "fp32", "tf32", True), ("resnet34", "fp32", "tf32", False), ("resnet34", "fp32", "fp32", False)]
CELLS = [(method, kind, rate) for method in ("ce", "memomentum") for kind in ("symmetric", "pairflip", "instance")
         for rate in (0.2, 0.4)]
CHILDREN = []  # every process started, each in its own process group: killed at the end, or on SIGTERM / SIGINT


def spawn(cmd, log, env) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    CHILDREN.append(proc)
    return proc


def kill(proc) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def kill_children(*_) -> None:
    for proc in CHILDREN:
        kill(proc)


class Check:
    """The output folder, the clock and the summary."""

    def __init__(self, out_dir: str, budget: float, device: str, quick: bool, data_root: str):
        self.out, self.device, self.quick, self.data_root = out_dir, device, quick, data_root
        self.deadline = time.monotonic() + budget
        os.makedirs(os.path.join(out_dir, "logs"), exist_ok=True)
        self.summary = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "device": device, "quick": quick,
                        "budget_s": budget, "parts": {}}

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def save(self) -> None:
        tmp = os.path.join(self.out, ".summary.json.tmp")
        with open(tmp, "w") as fh:
            json.dump(self.summary, fh, indent=1)
        os.replace(tmp, os.path.join(self.out, "summary.json"))

    def part(self, name: str, fn, limit: float, always: bool = False) -> None:
        """Run one part with at most `limit` seconds (and what is left of the budget, unless `always`: a part that
        only collects what ran); record its outcome."""
        limit = max(0.0, limit if always else min(limit, self.left()))
        start = time.monotonic()
        if limit < 5 and not always:
            outcome = {"skipped": f"only {limit:.0f} s of the budget left"}
        else:
            try:
                outcome = fn(limit)
            except Exception as exc:  # a part's own failure never stops the others
                outcome = {"error": f"{type(exc).__name__}: {exc}"}
        outcome["seconds"] = round(time.monotonic() - start, 1)
        self.summary["parts"][name] = outcome
        self.save()
        print(f"gpu_check: {name}: {json.dumps(outcome)[:300]}", file=sys.stderr, flush=True)

    def env(self, extra=None) -> dict:
        e = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if self.data_root:
            e["MEMOMENTUM_DATA"] = self.data_root
        e.update(extra or {})
        return e

    def log(self, name: str):
        return open(os.path.join(self.out, "logs", name), "w")


def run(cmd, timeout: float, log, env) -> int:
    """A command in its own process group, killed with its children at `timeout`; its exit code (124: killed)."""
    return wait(spawn(cmd, log, env), timeout)


def wait(proc, timeout: float):
    """The process's exit code, or 124 once it was killed (with its children) at `timeout` seconds."""
    try:
        return proc.wait(timeout=max(timeout, 1))
    except subprocess.TimeoutExpired:
        kill(proc)
        return 124


# --- parts -------------------------------------------------------------------------------------------
def part_env(check: Check, limit: float) -> dict:
    import torch

    cuda = check.device.startswith("cuda")
    out = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version() if cuda else None, "cpu_count": os.cpu_count(),
           "device_name": torch.cuda.get_device_name(0) if cuda else platform.processor() or platform.machine(),
           "packages": {name: importlib.util.find_spec(name) is not None
                        for name in ("numpy", "torchvision", "pyarrow", "scipy", "yaml", "pytest", "ray", "sklearn")}}
    if cuda:
        props = torch.cuda.get_device_properties(0)
        out.update(gpu_memory_gib=round(props.total_memory / 2 ** 30, 1), multiprocessors=props.multi_processor_count)
        try:
            out["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                                "--format=csv,noheader"], capture_output=True, text=True,
                                               timeout=min(limit, 20)).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out["nvidia_smi"] = None
    with open(os.path.join(check.out, "env.json"), "w") as fh:
        json.dump(out, fh, indent=1)
    return out


def part_epochs(check: Check, limit: float) -> dict:
    plan = [("lenet", "fp32", "fp32", False)] if check.quick else EPOCH_PLAN
    deadline = time.monotonic() + limit
    done, path = [], os.path.join(check.out, "epochs.jsonl")
    with open(path, "w") as jsonl, check.log("epochs.log") as log:
        for model, precision, matmul, compiled in plan:
            left = deadline - time.monotonic()
            if left < 10:
                done.append({"model": model, "precision": precision, "matmul_precision": matmul,
                             "compile": compiled, "skipped": "budget"})
                continue
            cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "bench_epoch.py"), "--model", model, "--device",
                   check.device, "--precision", precision, "--matmul-precision", matmul, "--ours-only"]
            cmd += (["--compile"] if compiled else []) + (["--n", "2000"] if check.quick else [])
            log.write(f"$ {' '.join(cmd)}\n")
            log.flush()
            out_file = os.path.join(check.out, "logs", f"epoch_{model}_{precision}_{matmul}_{int(compiled)}.out")
            with open(out_file, "w") as out:
                code = run(cmd, min(left, 150), out, check.env())
            entry = {"model": model, "precision": precision, "matmul_precision": matmul, "compile": compiled,
                     "exit_code": code}
            try:
                with open(out_file) as fh:
                    result = json.loads([line for line in fh if line.startswith("{")][-1])
                entry.update({k: result["ours"][k] for k in result["ours"]}, n_train=result["n_train"],
                             device_name=result["device_name"])
            except (IndexError, ValueError, KeyError, OSError):
                entry["error"] = "no result (see logs/)" if code != 124 else "timed out"
            jsonl.write(json.dumps(entry) + "\n")
            jsonl.flush()
            done.append(entry)
    return {"runs": done}


def trial_command(check: Check, dataset: str, method: str, kind: str, rate: float, sweep_dir: str, extra=()):
    cmd = [sys.executable, "-m", "memomentum", "--dataset", dataset, "--method", method, "--noise-type", kind,
           "--noise-rate", str(rate), "--seed", "1", "--device", check.device, "--log-every", "0",
           "--sweep-dir", sweep_dir]
    if check.data_root:
        cmd += ["--data-root", check.data_root]
    for item in extra:
        cmd += ["--set", item]
    return cmd


def read_trials(sweep_dir: str) -> list:
    out = []
    folder = os.path.join(sweep_dir, "trials")
    for key in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        try:
            with open(os.path.join(folder, key, "trial.json")) as fh:
                out.append(json.load(fh))
        except (OSError, ValueError):
            continue
    return out


def part_packing(check: Check, limit: float) -> dict:
    """k concurrent `ce` trials as plain processes, each with its share of the GPU's memory and of the CPUs."""
    dataset, epochs, ks = ("digits", 2, (1, 2)) if check.quick else ("mnist", 3, (1, 8))
    deadline, curve = time.monotonic() + limit, []
    for k in ks:
        sweep = os.path.join(check.out, "packing", f"k{k}")
        extra = [f"epochs_per_stage={epochs}"] + ([f"gpu_memory_fraction={1.0 / k:.4f}"]
                                                   if check.device.startswith("cuda") and k > 1 else [])
        threads = str(max(1, (os.cpu_count() or 1) // k))  # cores / k each (memomentum/threads.py)
        extra.append(f"threads={threads}")
        start = time.monotonic()
        procs = []
        for seed in range(1, k + 1):
            cmd = trial_command(check, dataset, "ce", "symmetric", 0.4, sweep, extra)
            cmd[cmd.index("--seed") + 1] = str(seed)
            log = check.log(f"packing_k{k}_s{seed}.log")
            procs.append((spawn(cmd, log, check.env({"OMP_NUM_THREADS": threads})), log))
        codes = []
        for proc, log in procs:
            codes.append(wait(proc, deadline - time.monotonic()))
            log.close()
        wall = time.monotonic() - start
        docs = [d for d in read_trials(sweep) if d.get("status") == "finished"]
        images = sum(r["n_train"] for d in docs for r in d["records"] if r["kind"] == "epoch")
        train_s = max((d["result"]["seconds"] for d in docs), default=0.0)
        curve.append({"k": k, "exit_codes": codes, "wall_s": round(wall, 1), "trial_seconds_max": round(train_s, 2),
                      "images_per_s": round(images / train_s, 1) if train_s else None,
                      "images_per_s_wall": round(images / wall, 1) if images else None,
                      "epoch_s_per_trial": round(train_s / epochs, 3) if train_s else None,
                      "peak_gpu_memory_mb": [d["result"].get("peak_gpu_memory_mb") for d in docs]})
        if time.monotonic() > deadline:
            break
    base = curve[0]["images_per_s"] or 0
    for point in curve:
        point["relative_throughput"] = round(point["images_per_s"] / base, 2) if base and point["images_per_s"] else None
    with open(os.path.join(check.out, "packing.json"), "w") as fh:
        json.dump(curve, fh, indent=1)
    return {"dataset": dataset, "epochs_per_trial": epochs, "curve": curve}


def start_cells(check: Check) -> list:
    """Every cell as its own process at once (each with its share of the GPU's memory and the CPUs)."""
    if check.quick:
        dataset, cells = "digits", [("ce", "symmetric", 0.2), ("memomentum", "pairflip", 0.4)]
        extra = ["epochs_per_stage=2"]
    else:
        dataset, cells, extra = "mnist", CELLS, []
    sweep = os.path.join(check.out, "cells")
    threads = str(max(1, (os.cpu_count() or 1) // len(cells)))
    procs = []
    for method, kind, rate in cells:
        more = list(extra) + [f"threads={threads}"] + (["max_outer=1", "max_inner=2"]
                                                       if check.quick and method == "memomentum" else [])
        if check.device.startswith("cuda"):
            more.append(f"gpu_memory_fraction={0.9 / len(cells):.4f}")
        log = check.log(f"cell_{method}_{kind}_{rate}.log")
        procs.append((f"{method} {kind} {rate}", spawn(trial_command(check, dataset, method, kind, rate, sweep, more),
                                                       log, check.env({"OMP_NUM_THREADS": threads})), log))
    return procs


def finish_cells(check: Check, procs: list, limit: float) -> dict:
    deadline = time.monotonic() + limit
    outcome = {}
    for name, proc, log in procs:
        code = wait(proc, deadline - time.monotonic())
        outcome[name] = "cut off by the budget" if code == 124 else code
        log.close()
    docs = read_trials(os.path.join(check.out, "cells"))
    cells = [{"name": d["name"], "status": d["status"], "epochs": sum(1 for r in d["records"] if r["kind"] == "epoch"),
              **{k: (d.get("result") or {}).get(k) for k in ("test_acc", "last_test_acc", "seconds",
                                                             "peak_gpu_memory_mb")}} for d in docs]
    with open(os.path.join(check.out, "cells.json"), "w") as fh:
        json.dump(cells, fh, indent=1)
    return {"processes": outcome, "cells": cells,
            "tables": f"python run_sweep.py --collect {os.path.join(check.out, 'cells')}"}


def part_suite(check: Check, limit: float) -> dict:
    files = QUICK_SUITE if check.quick else SUITE
    junit = os.path.join(check.out, "junit.xml")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow", "-k", "not gpu_check",
           f"--junitxml={junit}", *files]
    with check.log("suite.log") as log:
        code = run(cmd, limit, log, check.env({"MEMOMENTUM_TEST_DEVICE": check.device}))
    with open(os.path.join(check.out, "logs", "suite.log")) as fh:
        lines = [line.strip() for line in fh if line.strip()]
    return {"exit_code": code, "summary": (lines or [""])[-1].strip("= "), "junit": os.path.basename(junit),
            "failed": [line for line in lines if line.startswith("FAILED")][:20]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    p.add_argument("--quick", action="store_true", help="the CPU form: small parts on digits, minutes")
    p.add_argument("--budget", type=float, default=520, help="seconds for all parts together (default 520)")
    p.add_argument("--data-root", default=os.environ.get("MEMOMENTUM_DATA", ""),
                   help="folder holding MNIST/raw/ (the .gz files are enough)")
    p.add_argument("--out-dir", required=True, help="the folder every file goes to")
    p.add_argument("--skip", nargs="*", default=[], choices=("epochs", "packing", "cells", "suite"))
    args = p.parse_args(argv)
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"gpu_check: --device {args.device} but this machine has no CUDA device; use --device cpu --quick "
              f"for the CPU form", file=sys.stderr)
        return 2
    check = Check(args.out_dir, args.budget, args.device, args.quick, os.path.abspath(args.data_root)
                  if args.data_root else "")
    for sig in (signal.SIGTERM, signal.SIGINT):  # a killed check leaves no process behind on the GPU
        signal.signal(sig, lambda *_: (kill_children(), sys.exit(124)))
    check.part("env", lambda limit: part_env(check, limit), 30)
    # the timed parts run alone; then the cells and the suite share what is left
    if "epochs" not in args.skip:
        check.part("epochs", lambda limit: part_epochs(check, limit), 60 if args.quick else 0.42 * args.budget)
    if "packing" not in args.skip:
        check.part("packing", lambda limit: part_packing(check, limit), 60 if args.quick else 0.2 * args.budget)
    procs = start_cells(check) if "cells" not in args.skip else []
    if "suite" not in args.skip:
        check.part("suite", lambda limit: part_suite(check, limit), check.left() - 5)
    if procs:  # waited for (or cut off) even when no budget is left
        check.part("cells", lambda limit: finish_cells(check, procs, limit), max(check.left(), 5.0), always=True)
    kill_children()
    check.summary["finished_within_budget"] = check.left() >= 0
    check.save()
    print(json.dumps(check.summary))
    parts = check.summary["parts"]
    failed = [name for name, part in parts.items() if "error" in part or part.get("exit_code")]
    failed += [f"epochs {r['model']}" for r in parts.get("epochs", {}).get("runs", []) if r.get("exit_code")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
