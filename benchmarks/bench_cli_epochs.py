"""Whole epochs through the command line against a hand-written eager epoch: `pyrolvm train
vae` run for a few epochs (its per-epoch seconds from metrics.json, the first epoch, which
compiles, left out) and the same networks, data, batch, learning rate and binarization written
by hand in PyTorch (one torch.optim.Adam, the loss read as a float each step), alternated
round by round in this process (ratio > 1: the command slower).

    python -m benchmarks.bench_cli_epochs [--cases digits mnist burda] [--epochs 3]
        [--rounds 2] [--compile auto] [--tensorboard on|off|both] [--data-root DIR]
        [--json out.json]

Cases: the digits default (`pyrolvm train vae`), the MNIST default (`--dataset mnist`) and
Burda et al.'s protocol on MNIST (`--batch-size 20 --lr 1e-3 --eps 1e-4`; its constant rate:
the schedule changes the rate, not the work). The MNIST cases need MNIST under --data-root
(or $PYROLVM_DATA_ROOT). `--tensorboard both` alternates runs of the command with and without
its TensorBoard event files (`--no-tensorboard`) in the same rounds: a ratio for each.
"""

import argparse
import math
import os
import statistics
import tempfile
import time

import torch

from benchmarks.common import handwritten_step, report
from pyrolvm.cli import main as cli_main
from pyrolvm.runs.common import load_data, read_json
from pyrolvm.runs.vae import VAEConfig, build

CASES = {
    "digits": [],
    "mnist": ["--dataset", "mnist"],
    "burda": ["--dataset", "mnist", "--batch-size", "20", "--lr", "1e-3", "--eps", "1e-4"],
}


def command_epochs(argv, epochs, mode, root, tensorboard=True):
    """Seconds of each epoch after the first of one `pyrolvm train vae` run."""
    with tempfile.TemporaryDirectory() as out:
        args = ["train", "vae", *argv, "--epochs", str(epochs), "--compile", mode]
        args += [] if tensorboard else ["--no-tensorboard"]
        args += ["--eval-samples", "10", "--no-progress", "--device", "cpu", "--out", out]
        args += ["--data-root", root] if root else []
        if cli_main(args) != 0:
            raise SystemExit(f"pyrolvm {' '.join(args)} failed")
        return read_json(os.path.join(out, "metrics.json"))["curves"]["seconds"][1:]


def handwritten_epoch(cfg, data):
    """Seconds of one hand-written eager epoch of the run's networks, data and settings."""
    torch.manual_seed(cfg.seed)
    model, guide = build(cfg, data.data_dim, data.train.mean(0))
    params = [*model.parameters(), *guide.parameters()]
    opt = torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    step = handwritten_step("trace", model, guide, opt)
    x = data.train
    t0 = time.perf_counter()
    perm = torch.randperm(len(x))
    for i in range(0, len(x), cfg.batch_size):
        step(torch.bernoulli(x[perm[i : i + cfg.batch_size]]))
    return time.perf_counter() - t0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--compile", default="auto")
    parser.add_argument("--tensorboard", default="on", choices=["on", "off", "both"])
    parser.add_argument("--data-root", default=os.environ.get("PYROLVM_DATA_ROOT"))
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    rows = []
    for case in args.cases:
        argv_case = CASES[case] + (["--data-root", args.data_root] if args.data_root else [])
        cfg = VAEConfig(**_fields(argv_case), out="unused", epochs=args.epochs).resolved()
        data = load_data(cfg, cfg.binarize)
        modes = {"on": [True], "off": [False], "both": [True, False]}[args.tensorboard]
        ours, theirs = {m: [] for m in modes}, []
        for _ in range(args.rounds):  # alternated: a run of the command, then hand-written
            for m in modes:
                ours[m] += command_epochs(CASES[case], args.epochs, args.compile, args.data_root, m)
            theirs += [handwritten_epoch(cfg, data) for _ in range(args.epochs - 1)]
        steps = math.ceil(len(data.train) / cfg.batch_size)
        title = f"CLI epoch, {case} ({steps} steps of {cfg.batch_size})"
        base = statistics.median(theirs)
        rows.append({"case": title, "method": "hand-written", "seconds": base})
        for m in modes:
            mine = statistics.median(ours[m])
            flags = f"--compile {args.compile}" + ("" if m else " --no-tensorboard")
            row = {"case": title, "method": f"pyrolvm train vae {flags}", "seconds": mine}
            rows.append(row | {"ratio": mine / base})
    return report("cli_epochs", "CLI epochs", rows, torch.device("cpu"), args.json)


def _fields(argv):
    """The VAEConfig fields a case's flags set."""
    kinds = {"lr": float, "eps": float, "batch_size": int}
    out = {}
    for flag, value in zip(argv[::2], argv[1::2], strict=True):
        name = flag.removeprefix("--").replace("-", "_")
        out[name] = kinds.get(name, str)(value)
    return out


if __name__ == "__main__":
    main()
