"""Speed of one full training epoch through `pyrolvm.inference.train` (784-200-200-50, tanh,
Bernoulli, Trace_ELBO, dynamic binarization), eager and compiled, against the same epoch
written by hand in PyTorch (eager, and with the loss compiled by torch.compile), measured
interleaved in the same run (medians; ratio > 1: slower than the eager hand-written epoch).

    python benchmarks/bench_training.py [--protocol cli|burda] [--points 60000] [--rounds 3]
        [--modes off auto] [--device cpu] [--data-root DIR] [--json out.json]

``--protocol cli``: the CLI's MNIST defaults (batch 100, Adam lr 2e-3); ``burda``: Burda et
al.'s protocol (batch 20, Adam lr 1e-3, eps 1e-4). With MNIST under --data-root (or
$PYROLVM_DATA_ROOT) the epoch runs on its training images, else on random images of the same
size. Every method draws the epoch's order with torch.randperm, binarizes each minibatch with
torch.bernoulli and reads the loss as a float every step (train: when its progress bar would).
The pyro-lvm epochs reuse one model and guide (their weights reset each round), so that the
compiled step is traced and compiled once, before the timed rounds, as in a run's later epochs.
"""

import argparse
import copy
import math

import pyro
import torch

from benchmarks.common import handwritten_step, interleaved, report
from pyrolvm.devices import resolve_device
from pyrolvm.guides import AmortizedNormal
from pyrolvm.inference import make_elbo, make_optim, train
from pyrolvm.models import VAE

PROTOCOLS = {"cli": dict(batch=100, lr=2e-3, eps=1e-8), "burda": dict(batch=20, lr=1e-3, eps=1e-4)}


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
    parser.add_argument("--protocol", choices=list(PROTOCOLS), default="cli")
    parser.add_argument("--points", type=int, default=60000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", nargs="+", default=["off", "auto"])
    parser.add_argument("--no-compiled-reference", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    protocol = PROTOCOLS[args.protocol]
    device = resolve_device(args.device)
    x, source = images(args.points, args.data_root)
    x = x.to(device)
    mean = x.mean(0)

    def fresh():
        torch.manual_seed(0)
        return VAE(784, 50, (200, 200), data_mean=mean).to(device), AmortizedNormal(
            784, 50, (200, 200)
        ).to(device)

    methods = {}
    for mode in args.modes:
        model, guide = fresh()
        initial = copy.deepcopy((model.state_dict(), guide.state_dict()))
        elbo = make_elbo("trace")

        def ours(model=model, guide=guide, initial=initial, elbo=elbo, mode=mode):
            pyro.clear_param_store()
            model.load_state_dict(initial[0])
            guide.load_state_dict(initial[1])
            train(
                model,
                guide,
                x,
                elbo,
                make_optim(protocol["lr"], eps=protocol["eps"]),
                epochs=1,
                batch_size=protocol["batch"],
                transform=torch.bernoulli,
                progress=False,
                compile=mode,
            )

        ours()  # traces and compiles (a run's first epoch), outside the timed rounds
        methods[f"pyro-lvm train, compile={mode}"] = ours
    refs = [("hand-written", False)]
    refs += [] if args.no_compiled_reference else [("hand-written compiled", True)]
    for name, compiled in refs:

        def theirs(compiled=compiled):
            model, guide = fresh()
            params = [*model.parameters(), *guide.parameters()]
            opt = torch.optim.Adam(
                params, lr=protocol["lr"], eps=protocol["eps"], fused=compiled or None
            )
            step = handwritten_step("trace", model, guide, opt, compiled=compiled)
            perm = torch.randperm(len(x), device="cpu").to(device)
            for i in range(0, len(x), protocol["batch"]):
                step(torch.bernoulli(x[perm[i : i + protocol["batch"]]]))

        if compiled:
            theirs()  # compiles
        methods[name] = theirs
    med = interleaved(methods, args.rounds, device)
    steps = math.ceil(len(x) / protocol["batch"])
    case = f"epoch ({args.protocol}), {steps} steps of {protocol['batch']} ({source})"
    rows = []
    for method, seconds in med.items():
        row = {"case": case, "method": method, "seconds": seconds}
        if method != "hand-written":
            row["ratio"] = seconds / med["hand-written"]
        if method.startswith("pyro-lvm") and "hand-written compiled" in med:
            row["ratio_to_compiled"] = seconds / med["hand-written compiled"]
        rows.append(row)
    return report("epoch", "one training epoch", rows, device, args.json)


if __name__ == "__main__":
    main()
