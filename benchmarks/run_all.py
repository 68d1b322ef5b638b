"""Run every speed benchmark and write one JSON of the results.

    python -m benchmarks.run_all [--device cpu] [--quick] [--data-root DIR] [--cli-epochs]
        [--json PATH]

The SVI steps of every objective, eager and compiled, and the step of Burda et al.'s protocol
(benchmarks/bench_steps.py); one training epoch with the CLI defaults and one with Burda et
al.'s protocol (bench_training.py); the evaluator at K = 1000 and 5000 with peak memory
(bench_log_likelihood.py): each against its hand-written PyTorch reference, eager and
compiled by torch.compile, measured interleaved in the same process. With ``--cli-epochs``,
also whole epochs of `pyrolvm train vae` from its metrics.json (digits, and with MNIST its
default and Burda's protocol) against a hand-written epoch (bench_cli_epochs.py). ``--quick``
runs fewer rounds and a tenth of an epoch (a smoke run, not a measurement). Exits non-zero
only on an error. The results go to ``benchmarks/results.json`` for a CPU run and
``benchmarks/results-cuda.json`` for a CUDA run (``--json`` chooses another file), so that a
GPU run keeps the CPU table.
"""

import argparse
import json

from benchmarks import bench_cli_epochs, bench_log_likelihood, bench_steps, bench_training
from benchmarks.common import machine
from pyrolvm.devices import resolve_device


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--cli-epochs", action="store_true")
    parser.add_argument("--json", default=None, help="default: by device (see above)")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    if args.json is None:
        suffix = "" if device.type == "cpu" else f"-{device.type}"
        args.json = f"benchmarks/results{suffix}.json"
    dev = ["--device", args.device]
    quick = args.quick
    root = ["--data-root", args.data_root] if args.data_root else []
    epoch_quick = ["--points", "2000", "--rounds", "1"] if quick else []
    results = {
        "machine": machine(device),
        "steps": bench_steps.main(dev + (["--rounds", "2", "--steps", "2"] if quick else [])),
        "epoch": bench_training.main(dev + root + epoch_quick),
        "epoch_burda": bench_training.main(dev + root + ["--protocol", "burda"] + epoch_quick),
        "log_likelihood": bench_log_likelihood.main(
            dev + (["--samples", "50", "--points", "20", "--rounds", "1"] if quick else [])
        ),
    }
    if args.cli_epochs:
        cases = ["digits"] + (["mnist", "burda"] if args.data_root else [])
        results["cli_epochs"] = bench_cli_epochs.main(["--cases", *cases] + root)
    with open(args.json, "w") as f:
        json.dump(results, f, indent=1)
    print(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
