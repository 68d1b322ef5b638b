"""Speed of one SVI step of each objective against the same step written by hand in PyTorch,
measured interleaved in the same run (medians; ratio > 1: pyro-lvm slower).

    python benchmarks/bench_steps.py [--rounds 7] [--steps 10] [--device cpu] [--json out.json]

Cases: the MNIST-sized VAE (784-200-200-50, tanh, Bernoulli, batch 100) and the small digits
model (64-128-128-8, batch 32, where fixed per-step costs dominate), each with Trace_ELBO,
TraceMeanField_ELBO (analytic KL), the score-function estimator (TraceGraph_ELBO on a
non-reparameterized guide, no baseline), IWAE K = 5 and 50 and DReG K = 50. The pyro-lvm step
is `pyrolvm.inference.svi_step` (what `train` runs each step, Pyro's validation off as after
`train`'s first step) with `make_optim` (Pyro's Adam); the reference is the hand-written loss
of benchmarks/common.py with one `torch.optim.Adam`. Both read the steps' losses once, after the
last step, as `train` does (its steps have no host synchronisation on a GPU; Pyro's own ELBOs
return floats, which is one per step).
"""

import argparse

import pyro
import torch

from benchmarks.common import handwritten_step, interleaved, read_losses, report
from pyrolvm.devices import resolve_device
from pyrolvm.guides import AmortizedNormal
from pyrolvm.inference import make_elbo, make_optim, svi_step
from pyrolvm.models import VAE

SIZES = {
    "mnist": dict(data_dim=784, latent_dim=50, hidden=(200, 200), batch=100),
    "small": dict(data_dim=64, latent_dim=8, hidden=(128, 128), batch=32),
}
#: (label, pyro-lvm objective name, K, hand-written kind, reparameterized guide)
OBJECTIVES = [
    ("Trace_ELBO", "trace", 1, "trace", True),
    ("TraceMeanField_ELBO", "meanfield", 1, "meanfield", True),
    ("score function", "tracegraph", 1, "score", False),
    ("IWAE K=5", "iwae", 5, "iwae", True),
    ("IWAE K=50", "iwae", 50, "iwae", True),
    ("DReG K=50", "dreg", 50, "dreg", True),
]


def pair(size, reparameterized, device, seed=0):
    torch.manual_seed(seed)
    s = SIZES[size]
    model = VAE(s["data_dim"], s["latent_dim"], s["hidden"]).to(device)
    guide = AmortizedNormal(
        s["data_dim"], s["latent_dim"], s["hidden"], reparameterized=reparameterized
    ).to(device)
    return model, guide


def case(size, label, name, k, kind, reparam, rounds, steps, device):
    s = SIZES[size]
    gen = torch.Generator().manual_seed(0)
    data = torch.bernoulli(torch.full((steps * s["batch"], s["data_dim"]), 0.2), generator=gen)
    data = data.to(device)
    batches = data.split(s["batch"])
    # pyro-lvm: its own model and guide in the param store
    pyro.clear_param_store()
    model, guide = pair(size, reparam, device)
    elbo, optim = make_elbo(name, k), make_optim(1e-3)
    svi_step(model, guide, elbo, optim, batches[0])  # creates the parameters; validation on
    # the reference: a copy of the same networks, one torch.optim.Adam
    ref_model, ref_guide = pair(size, reparam, device)
    ref_opt = torch.optim.Adam([*ref_model.parameters(), *ref_guide.parameters()], lr=1e-3)
    ref = handwritten_step(kind, ref_model, ref_guide, ref_opt, k, read=False)
    ref(batches[0])

    def ours():
        with pyro.validation_enabled(False):
            read_losses([svi_step(model, guide, elbo, optim, xb) for xb in batches])

    def theirs():
        read_losses([ref(xb) for xb in batches])

    med = interleaved({"pyro-lvm": ours, "hand-written": theirs}, rounds, device)
    title = f"{size} {label} (B={s['batch']})"
    return [
        {"case": title, "method": "hand-written", "seconds": med["hand-written"] / steps},
        {
            "case": title,
            "method": "pyro-lvm",
            "seconds": med["pyro-lvm"] / steps,
            "ratio": med["pyro-lvm"] / med["hand-written"],
        },
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", nargs="+", default=list(SIZES))
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    rows = []
    for size in args.sizes:
        for label, name, k, kind, reparam in OBJECTIVES:
            rows += case(size, label, name, k, kind, reparam, args.rounds, args.steps, device)
    return report("steps", "SVI step, per step", rows, device, args.json)


if __name__ == "__main__":
    main()
