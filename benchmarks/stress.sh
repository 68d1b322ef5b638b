#!/usr/bin/env bash
# Stress the tests that launch processes and send signals: run them N times in a row and
# count the runs that fail. A test that fails now and then is a defect (issue 29); this is
# how to show that one is gone, or to catch it.
#
#   benchmarks/stress.sh [N] [pytest arguments...]
#
# N (default 20) runs of, by default, tests/inference/test_distributed.py (the 2-process gloo
# launches under torchrun, the killed and the SIGTERMed launch) and tests/runs/test_reliability.py
# (SIGINT/SIGKILL mid-run and resume); further arguments replace those paths (e.g.
# `benchmarks/stress.sh 5 tests/inference/test_distributed.py -k killed`). Each run's output
# is kept in $STRESS_LOGS (default: a new folder under /tmp); a line per run gives its result,
# its seconds and the load average (1 min) before and after it, since a race shows itself
# more often on a busy machine: say what the load was when you report a count. Exit status:
# 0 when every run passed, 1 otherwise. Python: $PYTHON, else .venv/bin/python, else python.
set -uo pipefail
cd "$(dirname "$0")/.."

runs=${1:-20}
shift || true
if [ "$#" -eq 0 ]; then
    set -- tests/inference/test_distributed.py tests/runs/test_reliability.py
fi
python=${PYTHON:-}
if [ -z "$python" ]; then
    if [ -x .venv/bin/python ]; then python=.venv/bin/python; else python=python; fi
fi
logs=${STRESS_LOGS:-$(mktemp -d "${TMPDIR:-/tmp}/pyrolvm-stress.XXXXXX")}
mkdir -p "$logs"

load() { cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo "?"; }

echo "stress: $runs runs of: pytest $*"
echo "stress: logs in $logs; $(nproc 2>/dev/null || echo '?') CPUs; uptime: $(uptime)"
failures=0
failed=()
for i in $(seq "$runs"); do
    before=$(load)
    start=$(date +%s)
    if OMP_NUM_THREADS=1 PYTHONFAULTHANDLER=1 "$python" -m pytest -q -p no:cacheprovider "$@" \
        >"$logs/run-$i.log" 2>&1; then
        result=ok
    else
        result=FAIL
        failures=$((failures + 1))
        failed+=("$i")
    fi
    echo "run $i/$runs: $result in $(($(date +%s) - start)) s, load $before -> $(load)" \
        "($(tail -n 1 "$logs/run-$i.log"))"
done
echo "stress: $failures of $runs runs failed${failed:+ (runs ${failed[*]}; see $logs/run-N.log)};" \
    "uptime: $(uptime)"
[ "$failures" -eq 0 ]
