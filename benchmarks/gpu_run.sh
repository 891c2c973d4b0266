#!/usr/bin/env bash
# The GPU check in one command for a 10-minute lease (benchmarks/gpu_check.py has the parts): everything it
# writes is packed into ONE file, $OUT/gpu_run.tgz, beside summary.json, since a lease returns few files.
#
#   here, once: mkdir -p data/MNIST/raw && cp ../shared/data/MNIST/raw/*.gz data/MNIST/raw/   (data/ is ignored)
#   there:      bash benchmarks/gpu_run.sh            with `carry: ["data"]`, a timeout of 600 s
#   here again: tar xzf gpu_run.tgz -C gpu && python run_sweep.py --collect gpu/cells
#
# BUDGET (seconds for the parts, default 500) leaves room for the start and the packing inside 600 s; DATA is
# the data root (default ./data); PYTHON the interpreter (default python3); extra arguments go to gpu_check.py.
set -u
out=${OUT:-/tmp/gpu_run_out}
work=$(mktemp -d)
mkdir -p "$out"
export PYTHONUNBUFFERED=1
"${PYTHON:-python3}" benchmarks/gpu_check.py --budget "${BUDGET:-500}" --data-root "${DATA:-data}" --out-dir "$work" "$@" \
    > "$work/gpu_check.out" 2> "$work/gpu_check.err"
code=$?
tail -n 30 "$work/gpu_check.err"
tar czf "$out/gpu_run.tgz" -C "$work" .
cp "$work/summary.json" "$out/summary.json" 2>/dev/null
echo "gpu_run: exit $code; $(du -h "$out/gpu_run.tgz" | cut -f1) in $out/gpu_run.tgz"
exit $code
