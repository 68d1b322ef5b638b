#!/usr/bin/env bash
# On a machine with a CUDA GPU, in one command (under 8 minutes): the CUDA tests (the devices'
# tests/test_devices.py, the compiled step's CUDA tests) and the speed table on CUDA (the SVI
# steps eager and compiled, as CUDA graphs, against the hand-written step eager and compiled,
# the Burda step and epochs, the evaluator), each part under its own time limit so that the
# whole stays within budget. Everything it prints and writes goes under $OUT:
#
#   OUT=/tmp/gpu bash benchmarks/gpu.sh        # (the device tool's $OUT on a lent machine)
#
# Files: nvidia-smi.txt, tests.txt (pytest -rs: the skips and their reasons), tests.xml,
# steps.txt/.json, epoch.txt/.json, epoch_burda.txt/.json, evaluator.txt/.json, summary.txt.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/gpu-out}"
mkdir -p "$OUT"
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYROLVM_COMPILE=off  # the suite's default; the compiled tests ask for their mode
status=0
part() {  # part NAME SECONDS COMMAND...: run COMMAND under a time limit, output to $OUT/NAME.txt
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit}s): $*" | tee -a "$OUT/summary.txt"
    local t0=$SECONDS
    timeout --signal=INT --kill-after=10 "$limit" "$@" >"$OUT/$name.txt" 2>&1
    local rc=$?
    echo "   exit $rc after $((SECONDS - t0)) s" | tee -a "$OUT/summary.txt"
    tail -n 25 "$OUT/$name.txt"
    [ $rc -eq 0 ] || status=1
}
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || echo "no nvidia-smi" >"$OUT/nvidia-smi.txt"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" \
    | tee -a "$OUT/summary.txt"
part tests 150 "$PY" -m pytest -q -rs -p no:cacheprovider --junitxml "$OUT/tests.xml" \
    tests/test_devices.py tests/inference/test_compiled.py -k "test_devices or cuda"
# the table on CUDA: the MNIST cases where the step is short (Trace_ELBO, IWAE K = 50) and the
# Burda step, 5 rounds (each compiled case costs two compiles: ours and the hand-written one;
# inductor's on-disk cache then serves the epochs' graphs)
part steps 170 "$PY" -m benchmarks.bench_steps --device cuda --sizes mnist burda \
    --objectives Trace_ELBO "IWAE K=50" --rounds 5 --steps 10 --json "$OUT/steps.json"
part epoch 40 "$PY" -m benchmarks.bench_training --device cuda --rounds 2 \
    --json "$OUT/epoch.json"
part epoch_burda 60 "$PY" -m benchmarks.bench_training --device cuda --protocol burda \
    --rounds 2 --json "$OUT/epoch_burda.json"
part evaluator 45 "$PY" -m benchmarks.bench_log_likelihood --device cuda --rounds 2 \
    --json "$OUT/evaluator.json"
echo "gpu.sh: done (status $status); outputs in $OUT" | tee -a "$OUT/summary.txt"
exit $status
