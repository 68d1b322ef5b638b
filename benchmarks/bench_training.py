"""Speed of one full training epoch with the CLI's MNIST defaults (784-200-200-50, tanh,
Bernoulli, Trace_ELBO, batch 100, Adam lr 2e-3, dynamic binarization) through
`pyrolvm.inference.train`, against the same epoch written by hand in PyTorch, measured
interleaved in the same run (medians; ratio > 1: pyro-lvm slower).

    python benchmarks/bench_training.py [--points 60000] [--rounds 3] [--device cpu]
        [--data-root DIR] [--json out.json]

With MNIST under --data-root (or $PYROLVM_DATA_ROOT) the epoch runs on its training images,
else on random images of the same size. Both draw the epoch's order with torch.randperm,
binarize each minibatch with torch.bernoulli and read the loss as a float every step.
"""

import argparse
import math

import pyro
import torch

from benchmarks.common import handwritten_step, interleaved, report
from pyrolvm.devices import resolve_device
from pyrolvm.guides import AmortizedNormal
from pyrolvm.inference import make_elbo, make_optim, train
from pyrolvm.models import VAE


def images(points, data_root):
    try:
        from pyrolvm.data import load

        x = load("mnist", root=data_root, download=False).train
        source = "MNIST"
    except Exception:  # no MNIST here: random images of its size
        x = torch.rand(60000, 784, generator=torch.Generator().manual_seed(0))
        source = "random images"
    return x[:points], source


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=int, default=60000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    x, source = images(args.points, args.data_root)
    x = x.to(device)
    mean = x.mean(0)

    def fresh():
        torch.manual_seed(0)
        return VAE(784, 50, (200, 200), data_mean=mean).to(device), AmortizedNormal(
            784, 50, (200, 200)
        ).to(device)

    def ours():
        pyro.clear_param_store()
        model, guide = fresh()
        train(
            model,
            guide,
            x,
            make_elbo("trace"),
            make_optim(2e-3),
            epochs=1,
            batch_size=args.batch_size,
            transform=torch.bernoulli,
            progress=False,
        )

    def theirs():
        model, guide = fresh()
        opt = torch.optim.Adam([*model.parameters(), *guide.parameters()], lr=2e-3)
        step = handwritten_step("trace", model, guide, opt)
        perm = torch.randperm(len(x), device="cpu").to(device)
        for i in range(0, len(x), args.batch_size):
            step(torch.bernoulli(x[perm[i : i + args.batch_size]]))

    med = interleaved({"pyro-lvm train": ours, "hand-written": theirs}, args.rounds, device)
    steps = math.ceil(len(x) / args.batch_size)
    case = f"epoch, {steps} steps of {args.batch_size} ({source})"
    rows = [
        {"case": case, "method": "hand-written", "seconds": med["hand-written"]},
        {
            "case": case,
            "method": "pyro-lvm train",
            "seconds": med["pyro-lvm train"],
            "ratio": med["pyro-lvm train"] / med["hand-written"],
        },
    ]
    return report("epoch", "one training epoch", rows, device, args.json)


if __name__ == "__main__":
    main()
