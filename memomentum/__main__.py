"""`python -m memomentum ...`: one trial, no Ray. Progress goes to stderr; the LAST stdout line is
one JSON object with the result (test_acc, best_val_score, realized_noise_rate, epochs, seconds,
rounds, ...).

    python -m memomentum --dataset digits --noise-type symmetric --noise-rate 0.4 --seed 1
    python -m memomentum --dataset mnist --data-root ../shared/data --set epochs_per_stage=5
    python -m memomentum --dataset mnist --seed 2 --sweep-dir runs/gpu   # then: run_sweep.py --report runs/gpu
"""
import argparse
import json
import os
import socket
import sys
import tempfile
import time

from memomentum.config import ConfigError, TrialConfig, parse_assignments
from memomentum.data import DataError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m memomentum", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, help="digits, mnist, fashionmnist, cifar10, cifar100")
    p.add_argument("--noise-type", help="symmetric (default), pairflip or instance; clothing1m: its real noise")
    p.add_argument("--noise-rate", type=float, help="target noise rate in [0, 1) (default 0.2)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--method", default="memomentum", help="memomentum (default) or ce")
    p.add_argument("--data-root", default="", help="folder with the data set files (default $MEMOMENTUM_DATA or ./data)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="any other config field, e.g. --set epochs_per_stage=5 (repeatable)")
    p.add_argument("--log-every", type=int, default=10, help="print an epoch line every N epochs (0: rounds only)")
    p.add_argument("--sweep-dir", metavar="DIR", help="also write DIR/trials/<key>/trial.json, as a sweep's trials do, "
                                                      "so that `run_sweep.py --report DIR` tabulates runs made "
                                                      "without Ray")
    return p


def config_from_args(args) -> TrialConfig:
    values = {"dataset": args.dataset, "noise_type": args.noise_type, "noise_rate": args.noise_rate,
              "seed": args.seed, "method": args.method, "data_root": args.data_root, "device": args.device}
    values = {k: v for k, v in values.items() if v is not None}  # unset: the data set's defaults
    values.update(parse_assignments(args.overrides))
    return TrialConfig.from_dict(values)


def format_record(r: dict) -> str:
    """One human-readable progress line for an epoch or round record."""
    where = f"outer {r['outer']} inner {r['inner']}"
    if r["kind"] == "epoch":
        test = f"  test {r['test_acc']:.2f}" if r.get("test_acc") is not None else ""
        return (f"[{r['seconds']:7.1f}s] {where} epoch {r['epoch']:3d}  loss {r['train_loss']:.4f}  "
                f"train {r['train_acc']:6.2f}  val {r['val_score']:6.2f}{'*' if r['improved'] else ' '}  "
                f"n_train {r['n_train']}{test}")
    hard = f"  hard {r['n_hard']}" + (f" ({r['hard_precision']:.1f}% clean)" if r["hard_precision"] is not None else "")
    return (f"== round {where} ({r['stage']}, {r['epochs']} epochs): confident {r['n_confident']}  "
            f"precision {r['precision']:.2f}%  recall {r['recall']:.2f}%{hard}  round val {r['val_score']:.2f}  "
            f"best val {r['best_val_score']:.2f}  test {r['test_acc']:.2f}")


def write_trial_document(sweep_dir: str, doc: dict) -> str:
    """Atomically write <sweep_dir>/trials/<key>/trial.json (a local folder)."""
    folder = os.path.join(sweep_dir, "trials", doc["key"])
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(doc, fh)
    path = os.path.join(folder, "trial.json")
    os.replace(tmp, path)
    return path


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
        from memomentum.procedure import make_trial, trial_document  # imports torch; after the cheap checks

        trial = make_trial(cfg)
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    log(f"trial {cfg.dataset} {cfg.noise_type} {cfg.noise_rate} seed {cfg.seed} {cfg.method} ({cfg.model}) "
        f"on {trial.device}; {trial.describe()}")
    result, records, started = None, [], time.time()
    for record in trial.records():
        if record["kind"] == "result":
            result = record
            continue
        records.append({k: v for k, v in record.items() if k != "resumable"})
        if record["kind"] == "round" or record.get("test_acc") is not None or (
                args.log_every and record["epoch"] % args.log_every == 0):
            log(format_record(record))
    if args.sweep_dir:
        path = write_trial_document(args.sweep_dir, trial_document(
            trial, records, status="finished", result=result, node_id=socket.gethostname(), pid=os.getpid(),
            resumed_from=None, started=started, finished=time.time()))
        log(f"trial file: {path}")
    result = {k: v for k, v in result.items() if k != "kind"}
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
