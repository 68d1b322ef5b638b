#!/usr/bin/env bash
# Mutation testing of pyrolvm/inference with mutmut 3 (configured in pyproject.toml,
# [tool.mutmut]). Manual and slow (about 30-60 minutes on 2 cores); not part of `pytest`.
#
#   pip install -e ".[dev]" && bash benchmarks/mutation.sh [mutmut run args, e.g. a glob]
#
# Writes mutants/ (git-ignored) and prints the score and the surviving mutants; inspect one
# with `mutmut show NAME`. Rerunning reuses the cached results of unchanged code and tests.
set -euo pipefail
cd "$(dirname "$0")/.."
unset PYTHONPATH  # mutmut puts its mutated copy (mutants/) first on the path itself
MUTMUT="${MUTMUT:-mutmut}"
nice -n 19 "$MUTMUT" run --max-children "${MAX_CHILDREN:-2}" "$@"
"$MUTMUT" results --all true > mutants/results.txt || true
killed=$(grep -c ': killed$' mutants/results.txt || true)
survived=$(grep -c ': survived$' mutants/results.txt || true)
total=$(grep -c ': ' mutants/results.txt || true)
echo "mutants: $total, killed: $killed, survived: $survived"
echo "score (killed / total): $(python3 -c "print(f'{$killed / max(1, $total):.1%}')")"
grep ': survived$' mutants/results.txt || true
