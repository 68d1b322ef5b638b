#!/usr/bin/env bash
# Mutation testing of pyrolvm/inference with mutmut 3 (configured in pyproject.toml,
# [tool.mutmut]). Manual and slow (over an hour for all ~1100 mutants on 2 shared cores); not
# part of `pytest`. Arguments restrict it, e.g. "pyrolvm.inference.training*" (globs of mutant names).
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
count() { grep -c ": $1\$" mutants/results.txt || true; }
killed=$(count killed); survived=$(count survived); timeout=$(count timeout)
untested=$(count "no tests"); unchecked=$(count "not checked")
checked=$((killed + survived + timeout + untested))
echo "mutants checked: $checked (killed $killed, timeout $timeout, survived $survived," \
     "no tests $untested); not checked in this run: $unchecked"
echo "score (killed + timeout) / checked: $(python3 -c "print(f'{($killed + $timeout) / max(1, $checked):.1%}')")"
grep -E ': (survived|no tests)$' mutants/results.txt || true
