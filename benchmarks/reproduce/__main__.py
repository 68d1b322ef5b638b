"""Reproduce published numbers: ``python -m benchmarks.reproduce NAME [NAME ...] --budget F``.

    python -m benchmarks.reproduce --list
    python -m benchmarks.reproduce m2-100 --budget 1 --data-root ../shared/data
    python -m benchmarks.reproduce vae-1 iwae-50 --budget 0.01 --device cuda

Each entry trains (or resumes, or reads back) its run folder under
``benchmarks/reproduce/runs/`` and writes ``benchmarks/reproduce/results/NAME.json``; then
``python -m benchmarks.reproduce.table --page docs/reproducing.md`` regenerates the table of
docs/reproducing.md.
Stop it at any time (Ctrl-C: the run checkpoints) and rerun the same command to continue.
"""

import argparse
import sys

from .entries import ENTRIES
from .runner import partial_result, run_entry


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help="entries (see --list)")
    parser.add_argument("--list", action="store_true", help="list the entries and exit")
    parser.add_argument("--budget", type=float, default=1.0, help="fraction of the paper's epochs")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    parser.add_argument(
        "--eval-samples",
        type=int,
        default=None,
        help="importance samples K of the test NLL instead of the paper's (said in the result)",
    )
    parser.add_argument(
        "--partial",
        action="store_true",
        help="record the progress of unfinished runs from their checkpoints; train nothing",
    )
    args = parser.parse_args(argv)
    if args.list or not args.names:
        for name, entry in ENTRIES.items():
            print(f"{name:<18} {entry.published:>8g}  {entry.metric:<36} {entry.source}")
        return 0
    unknown = [n for n in args.names if n not in ENTRIES]
    if unknown:
        parser.error(f"unknown entries {', '.join(unknown)}: see --list")
    if not 0 < args.budget <= 1:
        parser.error("--budget is a fraction of the paper's epochs, in (0, 1]")
    from pyrolvm.errors import PyroLVMError

    where = dict(
        dataset=args.dataset,
        data_root=args.data_root,
        device=args.device,
        seed=args.seed,
        overrides={} if args.eval_samples is None else {"eval_samples": args.eval_samples},
    )
    for name in args.names:
        if args.partial:
            r = partial_result(ENTRIES[name], args.budget, **where)
            if r is None:
                print(f"{name}: no unfinished run with per-epoch figures to record")
            else:
                done = r["partial"]
                print(
                    f"{name}: epoch {done['epochs_done']} of {done['epochs_planned']}, ours "
                    f"{r['ours']:.2f} so far (published {r['published']:g})"
                )
            continue
        try:
            r = run_entry(ENTRIES[name], args.budget, progress=args.progress, **where)
        except PyroLVMError as exc:
            print(f"error: {name}: {exc}", file=sys.stderr)
            return 2
        stderr = f" ± {r['stderr']:.2f}" if r["stderr"] else ""
        print(
            f"{name}: published {r['published']:g}, ours {r['ours']:.2f}{stderr} "
            f"({r['metric']}; budget {r['budget']:g}, {r['device']})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
