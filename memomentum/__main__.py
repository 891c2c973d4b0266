"""`python -m memomentum ...`: one trial, no Ray. Progress goes to stderr; the LAST stdout line is
one JSON object with the result (test_acc, best_val_score, realized_noise_rate, epochs, seconds,
rounds, ...).

    python -m memomentum --dataset digits --noise-type symmetric --noise-rate 0.4 --seed 1
    python -m memomentum --dataset mnist --data-root ../shared/data --set epochs_per_stage=5
    python -m memomentum --dataset mnist --seed 2 --sweep-dir runs/gpu   # then: run_sweep.py --report runs/gpu
"""
import argparse
import os
import re
import socket
import sys
import time

from memomentum import exports, selections
from memomentum.atomic import atomic_write
from memomentum.config import TrialConfig, parse_assignments
from memomentum.errors import ConfigError, DataError
from memomentum.own_index import is_data_path
from memomentum.progress import ReportGuard, dumps, format_record


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m memomentum", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", help="digits, mnist, fashionmnist, cifar10, cifar100, clothing1m, or the path of your "
                                     "own images: a folder (train/<class>/<image>) or a manifest .csv / .parquet")
    p.add_argument("--name", help="--dataset PATH: the name the data set goes by in trial names and tables (default: "
                                  "its folder's or manifest's name)")
    p.add_argument("--noise-type", help="symmetric (default), pairflip, instance, or human (CIFAR-N label files); "
                                        "clothing1m: its real noise")
    p.add_argument("--noise-rate", type=float, help="target noise rate in [0, 1) (default 0.2)")
    p.add_argument("--noise-label", help="--noise-type human (CIFAR-N): the label set: aggre, random1, random2, random3, "
                                         "worst (cifar10) or noisy (cifar100), read from <data root>/CIFAR-N/")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--method", help="a name from --list-methods (default memomentum; classwise for data sets "
                                    "streamed from disk)")
    p.add_argument("--list-methods", action="store_true", help="list the methods and the data they run on, and exit")
    p.add_argument("--data-root", default="", help="folder with the data set files (default $MEMOMENTUM_DATA or ./data)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="any other config field, e.g. --set epochs_per_stage=5 (repeatable)")
    p.add_argument("--log-every", type=int, default=10, help="print an epoch line every N epochs (0: rounds only)")
    p.add_argument("--sweep-dir", metavar="DIR", help="also write DIR/trials/<key>/trial.json, as a sweep's trials do "
                                                      "(status running with the records so far after every round, "
                                                      "finished at the end), so that `run_sweep.py --report DIR` "
                                                      "tabulates runs made without Ray")
    return p


def config_from_args(args) -> TrialConfig:
    if not args.dataset:
        raise ConfigError("give --dataset (e.g. --dataset digits), or --list-methods")
    dataset, path = args.dataset, None
    if is_data_path(dataset):  # your own images: a name for them, and their path
        path = os.path.abspath(os.path.expanduser(dataset))
        stem = os.path.splitext(os.path.basename(path.rstrip(os.sep)))[0]
        if stem == "manifest":  # a manifest is named by its folder
            stem = os.path.basename(os.path.dirname(path))
        dataset = args.name or re.sub(r"[^A-Za-z0-9._-]", "-", stem).strip("-._") or "own"
    elif args.name:
        raise ConfigError("--name is for a data set given by its path (--dataset PATH)")
    values = {"dataset": dataset, "data_path": path, "noise_type": args.noise_type, "noise_rate": args.noise_rate,
              "noise_label": args.noise_label,
              "seed": args.seed, "method": args.method, "data_root": args.data_root, "device": args.device}
    values = {k: v for k, v in values.items() if v is not None}  # unset: the data set's defaults
    values.update(parse_assignments(args.overrides))
    return TrialConfig.from_dict(values)


def list_methods() -> str:
    """Each registered method: what it is, the data sets it runs on, its own settings with their defaults, and
    its official settings per data set where they differ (its own, and a data set's for its options)."""
    from memomentum.data import DATASETS
    from memomentum.methods import METHODS

    lines = []
    for name, method in METHODS.items():
        runs_on = [d for d, info in DATASETS.items() if method.supports(info)]
        published = f"; published as {method.published}" if method.published else ""
        lines.append(f"{name:12s} {method.summary}")
        lines.append(f"{'':12s} data sets: {', '.join(runs_on)}{published}; version {method.version}")
        options = method.options().to_dict()
        if options:
            lines.append(f"{'':12s} options: {_settings(options)}")
        for dataset in dict.fromkeys([*method.defaults, *method.provenance]):
            where = "every data set" if dataset == "*" else dataset
            note = f"  [{method.provenance[dataset]}]" if dataset in method.provenance else ""
            lines.append(f"{'':12s} on {where}: {_settings(method.defaults.get(dataset, {})) or '-'}{note}")
        for dataset in runs_on:
            given = {k: v for k, v in DATASETS[dataset].defaults.items() if k in options}
            if given:
                lines.append(f"{'':12s} on {dataset} (the data set's settings): {_settings(given)}")
        if "memory" in method.data and not method.needs_clean_val:
            lines.append(f"{'':12s} on your own images (--dataset PATH): the settings above for mnist (grey images up "
                         f"to 32 px), else for cifar10  [(P) the project's choice: no reference has settings for them]")
    return "\n".join(lines)


def _settings(values) -> str:
    """key=value, ... as a user writes them in a grid (`key: value`) or with --set: every value printed reads back."""
    def shown(v):
        if isinstance(v, bool):
            return str(v).lower()
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(str(x) for x in v) + "]"
        return f"{v:g}" if isinstance(v, float) else str(v)

    return ", ".join(f"{k}={shown(v)}" for k, v in values.items())


def write_trial_document(sweep_dir: str, doc: dict) -> str:
    """Atomically write <sweep_dir>/trials/<key>/trial.json (a local folder)."""
    path = os.path.join(sweep_dir, "trials", doc["key"], "trial.json")
    atomic_write(path, dumps(doc).encode())
    return path


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.list_methods:
        print(list_methods())
        return 0
    try:
        cfg = config_from_args(args)
        from memomentum.methods import make_trial  # imports torch; after the cheap checks
        from memomentum.trial import trial_document

        log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
        trial = make_trial(cfg, progress=log)
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    guard = ReportGuard(log)  # a progress line that cannot be written never costs the result
    guard("the start line", lambda: log(f"trial {cfg.trial_name()} ({cfg.model}) on {trial.device}; "
                                        f"{trial.describe()}"))
    result, records, started = None, [], time.time()
    identity = {"node_id": socket.gethostname(), "pid": os.getpid(), "resumed_from": None, "started": started}
    for record in trial.records():
        if record["kind"] == "result":
            result = record
            continue
        records.append({k: v for k, v in record.items() if k != "resumable"})
        if record["kind"] == "round" or record.get("test_acc") is not None or (
                args.log_every and record.get("epoch", 0) % args.log_every == 0):
            guard("a progress line", lambda: log(format_record(record)))
        if args.sweep_dir and record["kind"] == "round":  # a trial stopped later still leaves its rounds so far
            selection = trial.selection()
            if selection is not None:
                guard("the selection file", atomic_write, os.path.join(
                    args.sweep_dir, "trials", cfg.trial_key(), "selections", selections.file_name(selection["round"])),
                    selections.encode(selection))
            guard("the trial file so far", write_trial_document, args.sweep_dir,
                  trial_document(trial, records, status="running", **identity))
    code = 0
    if args.sweep_dir:
        made = trial.exports()  # a trial with `export`: its selected model and label issues, before its document
        if made is not None:
            folder = os.path.join(args.sweep_dir, "trials", cfg.trial_key())
            if made["model"] is not None:
                guard("the model file", atomic_write, os.path.join(folder, "model.pt"),
                      exports.encode_model(made["model"]))
            if made["label_issues"] is not None:
                guard("the label-issues file", atomic_write, os.path.join(folder, "label_issues.npz"),
                      exports.encode_issues(made["label_issues"]))
        if trial.data.info.given_by_path:  # the names of its examples, for the tables of --report
            from memomentum import owndata

            guard("the examples table", atomic_write, os.path.join(
                args.sweep_dir, "datasets", f"{cfg.dataset}-{cfg.data_fingerprint}.parquet"),
                owndata.examples_parquet(owndata.registered(cfg.dataset)))
        doc = trial_document(trial, records, status="finished", result=result, **identity, finished=time.time())
        try:
            path = write_trial_document(args.sweep_dir, doc)
            guard("the trial-file line", lambda: log(f"trial file: {path}"))
        except (OSError, ValueError) as exc:  # the result still goes to stdout below
            log(f"error: could not write the trial file under {args.sweep_dir} ({exc.strerror or exc}); "
                f"the result is the JSON line on stdout")
            code = 1
    if result.get("note"):
        guard("the note line", lambda: log(f"note: {result['note']}"))
    result = {k: v for k, v in result.items() if k != "kind"}
    print(dumps(result), flush=True)
    return code


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
