"""Prove the GPU path in one command: the test suite on the device, the epoch benchmark of the three
networks in fp32 and bf16 (with and without torch.compile), and a packing curve of k concurrent real
trials as plain processes. One JSON summary at the end (and in --out).

    python benchmarks/gpu_check.py --data-root ../shared/data                 # on a GPU machine
    python benchmarks/gpu_check.py --device cpu --quick                       # smoke mode, anywhere

Needs PyTorch, not Ray: the suite's Ray tests skip themselves where Ray is missing, and the packing
curve runs `python -m memomentum ... --sweep-dir DIR` processes side by side, each capped to 1/k of
the GPU's memory (`gpu_memory_fraction`), then reads their trial files. Throughput is training images
per second over the wall time of all k processes. Every figure goes to benchmarks/RESULTS.md with the
device, versions and date.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK_TESTS = ["tests/test_engine.py", "tests/test_baselines.py", "tests/test_methods.py"]


def run_suite(device: str, quick: bool, data_root: str) -> dict:
    """The test suite with MEMOMENTUM_TEST_DEVICE=device: pass / fail counts from pytest's summary."""
    env = {**os.environ, "MEMOMENTUM_TEST_DEVICE": device}
    if data_root:
        env["MEMOMENTUM_DATA"] = data_root
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *(QUICK_TESTS if quick else [])]
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    summary = ([line for line in proc.stdout.splitlines() if line.strip()] or [""])[-1]  # "N passed ... in Xs"
    failed = [line for line in proc.stdout.splitlines() if line.startswith("FAILED")]
    return {"device": device, "exit_code": proc.returncode, "summary": summary.strip("= "), "failed": failed[:20],
            "seconds": round(time.perf_counter() - start, 1)}


def run_epochs(device: str, quick: bool) -> list:
    """bench_epoch.py (our engine only) for each network, precision and compile setting."""
    if quick:
        plan = [("lenet", "fp32", False, 2000)]
    else:
        plan = [(m, p, c, None) for m in ("lenet", "resnet18", "resnet34") for p in ("fp32", "bf16")
                for c in (False, True)]
    out = []
    for model, precision, compiled, n in plan:
        args = [sys.executable, os.path.join(ROOT, "benchmarks", "bench_epoch.py"), "--model", model, "--device", device,
                "--precision", precision, "--ours-only"] + (["--compile"] if compiled else []) + \
               (["--n", str(n)] if n else [])
        proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
        entry = {"model": model, "precision": precision, "compile": compiled, "exit_code": proc.returncode}
        try:
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            entry.update(epoch_s=result["ours"]["train_s"], val_s=result["ours"]["val_s"],
                         extract_s=result["ours"]["extract_s"], n_train=result["n_train"])
        except (IndexError, ValueError, KeyError):
            entry["error"] = (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]
        print(json.dumps(entry), file=sys.stderr, flush=True)
        out.append(entry)
    return out


def run_packing(device: str, quick: bool, data_root: str, ks, epochs: int) -> list:
    """k concurrent `ce` trials as plain processes; aggregate training images per second."""
    dataset = "digits" if quick else "mnist"
    curve = []
    for k in ks:
        with tempfile.TemporaryDirectory() as sweep:
            procs = []
            start = time.perf_counter()
            for seed in range(1, k + 1):
                args = [sys.executable, "-m", "memomentum", "--dataset", dataset, "--method", "ce", "--seed", str(seed),
                        "--noise-rate", "0.4", "--device", device, "--log-every", "0", "--sweep-dir", sweep,
                        "--set", f"epochs_per_stage={epochs}"]
                if data_root:
                    args += ["--data-root", data_root]
                if device.startswith("cuda") and k > 1:
                    args += ["--set", f"gpu_memory_fraction={1.0 / k:.4f}"]
                procs.append(subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                              text=True))
            errors = [p.communicate()[1] for p in procs]
            wall = time.perf_counter() - start
            codes = [p.returncode for p in procs]
            images, peaks = 0, []
            for key in os.listdir(os.path.join(sweep, "trials")) if os.path.isdir(os.path.join(sweep, "trials")) else []:
                with open(os.path.join(sweep, "trials", key, "trial.json")) as fh:
                    doc = json.load(fh)
                images += sum(r["n_train"] for r in doc["records"] if r["kind"] == "epoch")
                peaks.append((doc.get("result") or {}).get("peak_gpu_memory_mb"))
        point = {"k": k, "exit_codes": codes, "wall_s": round(wall, 2), "images_per_s": round(images / wall, 1),
                 "peak_gpu_memory_mb": peaks}
        if any(codes):
            point["error"] = next(e for e, c in zip(errors, codes) if c).strip().splitlines()[-1:]
        print(json.dumps(point), file=sys.stderr, flush=True)
        curve.append(point)
    base = curve[0]["images_per_s"] or 1.0
    for point in curve:
        point["relative_throughput"] = round(point["images_per_s"] / base, 2)
    return curve


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    p.add_argument("--quick", action="store_true", help="smoke mode: a few test files, one small benchmark, k = 1, 2")
    p.add_argument("--data-root", default=os.environ.get("MEMOMENTUM_DATA", ""), help="folder holding MNIST/raw")
    p.add_argument("--k", type=int, nargs="+", help="packing curve (default 1 2 4 8 16; quick: 1 2)")
    p.add_argument("--epochs", type=int, help="epochs per packed trial (default 5; quick: 2)")
    p.add_argument("--skip", nargs="*", default=[], choices=("suite", "epochs", "packing"), help="parts to skip")
    p.add_argument("--out", default="", help="also write the summary JSON here")
    args = p.parse_args(argv)
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"gpu_check: --device {args.device} but this machine has no CUDA device; use --device cpu --quick "
              f"for the smoke mode", file=sys.stderr)
        return 2
    ks = args.k or ([1, 2] if args.quick else [1, 2, 4, 8, 16])
    epochs = args.epochs or (2 if args.quick else 5)
    summary = {"date": time.strftime("%Y-%m-%d"), "device": args.device, "quick": args.quick,
               "device_name": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else
               platform.processor() or "cpu", "torch": torch.__version__, "python": platform.python_version(),
               "cuda": torch.version.cuda}
    if "suite" not in args.skip:
        summary["suite"] = run_suite(args.device, args.quick, args.data_root)
    if "epochs" not in args.skip:
        summary["epochs"] = run_epochs(args.device, args.quick)
    if "packing" not in args.skip:
        summary["packing"] = run_packing(args.device, args.quick, args.data_root, ks, epochs)
    text = json.dumps(summary)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    print(text)
    failed = summary.get("suite", {}).get("exit_code") or any(e.get("exit_code") for e in summary.get("epochs", [])) \
        or any(any(pt["exit_codes"]) for pt in summary.get("packing", []))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
