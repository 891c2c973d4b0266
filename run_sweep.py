#!/usr/bin/env python
"""Run a grid of Me-Momentum trials on Ray Tune and build the paper's tables.

    python run_sweep.py grids/quick.yaml                  # CPU, minutes; embedded digits
    python run_sweep.py grids/paper.yaml --dry-run        # list cells, resources, rough cost
    python run_sweep.py grids/paper.yaml --address auto   # on a running Ray cluster
    python run_sweep.py --collect runs/quick              # rebuild tables from a sweep folder
    python run_sweep.py --report runs/quick               # ... and the figures and report.md

Running the same command again continues an interrupted sweep (finished cells are never re-run) and
runs only the cells that were added to the grid. Exit codes: 0 all cells finished, 1 some did not,
2 a mistake in the input (one line on stderr says what to fix).
"""
import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("grid", nargs="?", help="grid YAML file, e.g. grids/quick.yaml")
    p.add_argument("--storage", help="where sweeps live: a path (NFS on clusters) or s3:// / gs:// URI "
                                     "(default: the grid's `storage`, else ./runs)")
    p.add_argument("--address", help="Ray cluster to use: 'auto', host:port or ray://host:10001 "
                                     "(default: start Ray on this machine)")
    p.add_argument("--data-root", help="folder with the data set files (default: the grid's data_root, "
                                       "else $MEMOMENTUM_DATA, else ./data)")
    p.add_argument("--dry-run", action="store_true", help="print cells, resources and a rough cost; start nothing")
    p.add_argument("--max-concurrent", type=int, help="run at most N trials at once")
    p.add_argument("--verbose", action="store_true", help="also Tune's progress tables and Ray's and the workers' "
                                                           "own lines (default: one line per trial event, a status "
                                                           "line with an ETA)")
    p.add_argument("--status-every", type=float, default=30.0, metavar="SECONDS",
                   help="seconds between status lines (default 30)")
    p.add_argument("--collect", metavar="SWEEP_DIR", help="rebuild the result tables of <storage>/<name> and exit")
    p.add_argument("--report", metavar="SWEEP_DIR", help="rebuild the tables, figures and report.md of "
                                                         "<storage>/<name> and exit")
    p.add_argument("--wait-for-nodes", type=float, default=900, metavar="SECONDS",
                   help="with --address: how long to wait for the autoscaler to add a node that fits the "
                        "largest trial before giving up (default 900)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from memomentum.config import ConfigError
    from memomentum.data import DataError
    from sweeps.grid import GridError, load_grid
    from sweeps.lock import LockError
    from sweeps.runner import SweepError
    from sweeps.storage import StorageError

    try:
        if args.collect or args.report:
            return collect(args.collect or args.report, figures=bool(args.report))
        if not args.grid:
            raise GridError("give a grid file (e.g. grids/quick.yaml), or --collect / --report SWEEP_DIR")
        if args.max_concurrent is not None and args.max_concurrent < 1:
            raise GridError("--max-concurrent must be at least 1")
        if not args.status_every > 0:
            raise GridError("--status-every must be a positive number of seconds")
        grid = load_grid(args.grid, storage=args.storage, data_root=args.data_root)
        from sweeps import runner

        if args.dry_run:
            runner.dry_run(grid)
            return 0
        return runner.run(grid, address=args.address, max_concurrent=args.max_concurrent, wait_s=args.wait_for_nodes,
                          verbose=args.verbose, status_every=args.status_every)
    except (GridError, ConfigError, DataError, StorageError, SweepError, LockError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def collect(sweep_dir: str, figures: bool = False) -> int:
    """Rebuild a sweep folder's tables (and figures) and print the paper table. A folder that cannot be written
    (a colleague's results, an archive, a full disk) still gets its tables printed, with one line saying that its
    files were not updated."""
    import errno

    from sweeps import layout
    from sweeps.results import Collector
    from sweeps.storage import Storage, StorageError

    location, _, name = sweep_dir.rstrip("/").rpartition("/")
    store = Storage(location or ".")
    if not store.exists(name, layout.TRIALS):
        raise StorageError(f"{sweep_dir} holds no trials/ folder; give the sweep folder <storage>/<grid name>")
    collector = Collector(store, name)
    tables = collector.tables()
    for line in collector.skipped:
        print(f"warning: skipped {line}", file=sys.stderr)
    not_written = None
    try:
        collector.write(tables)
        if figures:
            from sweeps.report import write_report

            written = write_report(store, name, tables)
    except (OSError, StorageError) as exc:
        read_only = isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM)
        not_written = ("the folder is read-only (or not yours to write)" if read_only else
                       str(exc) if isinstance(exc, StorageError) else f"{exc.strerror or exc}")
    for line in collector.selection_warnings:
        print(f"warning: {line}", file=sys.stderr)
    print(f"{tables['trials'].num_rows} trials, {tables['rounds'].num_rows} rounds, "
          f"{tables['epochs'].num_rows} epochs -> {store.uri(name, layout.RESULTS)}"
          + (" (not updated)" if not_written else ""))
    if figures and not not_written:
        print("written: " + ", ".join(written))
    print(collector.markdown(tables))
    if not_written:
        print(f"note: the files under {store.uri(name, layout.RESULTS)} were not updated: {not_written}; the "
              f"tables above come from its trial files", file=sys.stderr)
    return 0


def entry() -> None:
    """The `memomentum-sweep` command of an installed package, the same as `python run_sweep.py`."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; run the same command again to continue the sweep", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    entry()
