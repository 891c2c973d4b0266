"""Time one training epoch, one validation pass and one full extraction pass, for memomentum's
engine and for the standard pipeline of the official code (benchmarks/standard.py), with the same
model, data size, device and batch sizes, in the same run.

    python benchmarks/bench_epoch.py --model lenet --device cpu
    python benchmarks/bench_epoch.py --model resnet18 --device cuda --precision bf16 --compile

float32 is true fp32 unless `--matmul-precision tf32` (the switches a trial sets, memomentum.trial.configure_device);
`warmup_s` times the warm-up over every batch shape of the timed passes (with --compile: the compile time), so
the timed passes never recompile.

Data are random uint8 images of the real shape: MNIST-size (54,000 train / 6,000 validation, 1x28x28)
for lenet, CIFAR-size (45,000 / 5,000, 3x32x32 with crop + flip augmentation) for the ResNets;
--n scales the training set (validation = n / 9). The last line printed is one JSON object with both
timings and speedup_total = standard / ours, all three parts summed. Figures, with machine, versions
and date, go to benchmarks/RESULTS.md.
"""
import argparse
import json
import os
import platform
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import standard  # noqa: E402
from memomentum.config import TrialConfig  # noqa: E402
from memomentum.data import DATASETS  # noqa: E402
from memomentum.engine import Engine, resolve_device, sgd  # noqa: E402
from memomentum.models import INPUT_SHAPES, create_model  # noqa: E402
from memomentum.trial import configure_device  # noqa: E402

# model -> (data set, its real training split)
SHAPES = {"digitsnet": ("digits", 1437), "lenet": ("mnist", 54000), "resnet18": ("cifar10", 45000),
          "resnet34": ("cifar100", 45000)}


def synthetic(model: str, n: int, seed: int = 0):
    dataset, _ = SHAPES[model]
    info = DATASETS[dataset]
    g = torch.Generator().manual_seed(seed)
    n_val = max(n // 9, 1)
    images = torch.randint(0, 256, (n + n_val, *INPUT_SHAPES[model]), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, info.num_classes, (n + n_val,), generator=g)
    return info, images[:n], labels[:n], images[n:], labels[n:]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device):
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


def bench_ours(model_name, info, device, train_x, train_y, val_x, val_y, precision, compile_model):
    engine = Engine(device=device, mean=info.mean, std=info.std, crop_padding=info.crop_padding, flip=info.flip,
                    num_classes=info.num_classes, batch_size=128, eval_batch_size=1024, precision=precision, seed=0)
    torch.manual_seed(0)
    model = engine.prepare_model(create_model(model_name, info.num_classes, train_x.shape[1]))
    if compile_model:
        model.compile()
    opt = sgd(model, 0.01, 0.9, 1e-4)
    xs, ys, vx, vy = (t.to(device) for t in (train_x, train_y, val_x, val_y))
    idx = torch.arange(len(ys), device=device)
    vidx = torch.arange(len(vy), device=device)
    # warm-up (allocator, cuDNN autotuning, compilation) over every batch shape the timed passes meet: full
    # training batches and the epoch's short last one, the validation pass itself, and an extraction chunk of
    # each size, so that compile's recompiles for new shapes happen here and not in the timed passes
    n, b, e = len(ys), engine.batch_size, engine.eval_batch_size
    warm_s, _ = timed(lambda: (engine.train_epoch(model, opt, xs, ys, idx[:min(n, 4 * b + n % b)]),
                               engine.val_score(model, vx, vy, vidx, True),
                               engine.predict(model, xs, idx[:min(n, e + n % e)], True)), device)
    graphs = compiled_graphs()
    train_s, _ = timed(lambda: engine.train_epoch(model, opt, xs, ys, idx), device)
    val_s, _ = timed(lambda: engine.val_score(model, vx, vy, vidx, True), device)
    extract_s, _ = timed(lambda: engine.predict(model, xs, idx, True), device)
    return {"train_s": train_s, "val_s": val_s, "extract_s": extract_s, "total_s": train_s + val_s + extract_s,
            "warmup_s": warm_s, "graphs_compiled_in_timed_passes": compiled_graphs() - graphs}


def compiled_graphs() -> int:
    """Graphs torch.compile has compiled in this process so far (0 without compile)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def bench_standard(model_name, info, device, train_x, train_y, val_x, val_y, workers):
    size = train_x.shape[-1]
    train_tf = standard.official_transforms(info.mean, info.std, info.crop_padding, info.flip, size, augment=True)
    torch.manual_seed(0)
    model = create_model(model_name, info.num_classes, train_x.shape[1]).to(device)
    opt = sgd(model, 0.01, 0.9, 1e-4)
    # the official code feeds validation and extraction through the training transform as well
    train_loader = standard.loader(train_x, train_y, train_tf, 128, True, workers, device)
    val_loader = standard.loader(val_x, val_y, train_tf, 256, False, workers, device)
    predict_loader = standard.loader(train_x, train_y, train_tf, 256, False, workers, device)
    warm = standard.loader(train_x[:1024], train_y[:1024], train_tf, 128, True, workers, device)
    standard.train_epoch(model, opt, warm, device)
    train_s, _ = timed(lambda: standard.train_epoch(model, opt, train_loader, device), device)
    val_s, _ = timed(lambda: standard.val_score(model, val_loader, info.num_classes, device), device)
    extract_s, _ = timed(lambda: standard.predict(model, predict_loader, device), device)
    return {"train_s": train_s, "val_s": val_s, "extract_s": extract_s, "total_s": train_s + val_s + extract_s}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=sorted(SHAPES), default="lenet")
    p.add_argument("--device", default="cpu")
    p.add_argument("--n", type=int, help="training examples (default: the real training split)")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="DataLoader workers of the standard pipeline (official: 8; default min(8, cores))")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="our engine's precision")
    p.add_argument("--matmul-precision", default="fp32", choices=("fp32", "tf32"),
                   help="float32 matmuls / convolutions: fp32 (true fp32, as a trial runs by default) or tf32")
    p.add_argument("--compile", action="store_true", help="torch.compile our engine's model")
    p.add_argument("--ours-only", action="store_true", help="time our engine only (no standard pipeline)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch's intra-op threads (default 0: the trial's rule, memomentum.threads)")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    # the switches a trial sets (strict fp32 unless tf32 is asked for; cuDNN autotuning), set the same way
    configure_device(TrialConfig.from_dict({"dataset": SHAPES[args.model][0], "device": args.device,
                                            "precision": args.precision, "matmul_precision": args.matmul_precision,
                                            "threads": args.threads, "model": args.model}),
                     device)
    n = args.n or SHAPES[args.model][1]
    info, tx, ty, vx, vy = synthetic(args.model, n)
    ours = bench_ours(args.model, info, device, tx, ty, vx, vy, args.precision, args.compile)
    print(f"ours:     {json.dumps({k: round(v, 3) for k, v in ours.items()})}", file=sys.stderr)
    std = None if args.ours_only else bench_standard(args.model, info, device, tx, ty, vx, vy, args.workers)
    if std is not None:
        print(f"standard: {json.dumps({k: round(v, 3) for k, v in std.items()})}", file=sys.stderr)
    result = {
        "model": args.model, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "cpu_threads": torch.get_num_threads(), "n_train": n, "n_val": len(vy), "workers": args.workers,
        "precision": args.precision, "matmul_precision": args.matmul_precision, "compile": args.compile,
        "torch": torch.__version__,
        "ours": {k: round(v, 3) for k, v in ours.items()},
    }
    if std is not None:
        result.update({"standard": {k: round(v, 3) for k, v in std.items()},
                       **{f"speedup_{part}": round(std[f"{part}_s"] / ours[f"{part}_s"], 2)
                          for part in ("train", "val", "extract", "total")}})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
