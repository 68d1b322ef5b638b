"""Training throughput (images per second) of `pyrolvm train vae` in 1 process and in N
data-parallel processes (`--nproc N`, torchrun with gloo on CPU processes or NCCL on GPUs),
on the same data, global batch and seed, in one run (the ratio is what to read on a shared
machine).

    python benchmarks/bench_distributed.py [--nproc 1 2] [--dataset mnist] [--epochs 2]
        [--batch-size 100] [--device cpu] [--data-root DIR] [--json out.json]

The images per second are the training images over the training seconds of the epochs
after the first (``curves.seconds`` of metrics.json: the SVI steps and the end-of-epoch
test ELBO, not the final evaluation nor the figures). Each setting runs the real command;
1 process runs it without torchrun.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch


def run(nproc, args, out):
    command = [sys.executable, "-m", "pyrolvm", "train", "vae", "--dataset", args.dataset]
    command += ["--epochs", str(args.epochs), "--batch-size", str(args.batch_size)]
    command += ["--eval-samples", "1", "--no-progress", "--device", args.device, "--out", out]
    command += ["--nproc", str(nproc)]
    if args.data_root:
        command += ["--data-root", args.data_root]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    with open(os.path.join(out, "metrics.json")) as f:
        metrics = json.load(f)
    seconds = metrics["curves"]["seconds"]
    timed = seconds[1:] if len(seconds) > 1 else seconds
    return {"seconds": timed, "train_elbo": metrics["train_elbo"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    from pyrolvm.data import load

    n_train = len(load(args.dataset, root=args.data_root).train)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for nproc in args.nproc:
            result = run(nproc, args, os.path.join(tmp, f"n{nproc}"))
            per_epoch = sum(result["seconds"]) / len(result["seconds"])
            rows.append(
                {
                    "nproc": nproc,
                    "seconds_per_epoch": per_epoch,
                    "images_per_second": n_train / per_epoch,
                    "train_elbo": result["train_elbo"],
                }
            )
    base = rows[0]["images_per_second"]
    print(
        f"pyrolvm train vae --dataset {args.dataset} --batch-size {args.batch_size} (global) "
        f"--device {args.device}: {n_train} training images, epochs 2..{args.epochs} timed; "
        f"torch {torch.__version__}, {os.cpu_count()} CPUs"
    )
    print(f"{'processes':>9}  {'s/epoch':>8}  {'images/s':>9}  {'ratio':>6}  train ELBO")
    for r in rows:
        print(
            f"{r['nproc']:>9}  {r['seconds_per_epoch']:>8.2f}  {r['images_per_second']:>9.0f}  "
            f"{r['images_per_second'] / base:>6.2f}  {r['train_elbo']:.2f}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
