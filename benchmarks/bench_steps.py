"""Speed of one SVI step of each objective, eager and compiled, against the same step written
by hand in PyTorch (eager, and compiled with torch.compile), measured interleaved in the same
run (medians; ratio > 1: slower than the eager hand-written step).

    python benchmarks/bench_steps.py [--rounds 7] [--steps 10] [--device cpu]
        [--sizes mnist small burda] [--objectives "Trace_ELBO" ...]
        [--modes off graph inductor] [--no-compiled-reference] [--json out.json]

Cases: the MNIST-sized VAE (784-200-200-50, tanh, Bernoulli, batch 100), the small digits
model (64-128-128-8, batch 32, where fixed per-step costs dominate), each with Trace_ELBO,
TraceMeanField_ELBO (analytic KL), the score-function estimator (TraceGraph_ELBO on a
non-reparameterized guide, no baseline), IWAE K = 5 and 50 and DReG K = 50; and the step of
Burda et al.'s protocol (784-200-200-50, batch 20, Trace_ELBO, Adam eps 1e-4). The pyro-lvm
step is what `train` runs each step: `pyrolvm.inference.compiled.CompiledStep` with
`make_optim` (one Adam over every parameter), in each mode of --modes ("off": Pyro's eager
step, `svi_step`; "graph": the traced step replayed; "inductor": compiled), Pyro's validation
off as after `train`'s first step; the compile time of each compiled mode (first step) is
printed. The references: the hand-written loss of benchmarks/common.py with one
`torch.optim.Adam`, eager ("hand-written") and with
the loss and its backward pass compiled by `torch.compile` and a fused Adam ("hand-written
compiled").
"""

import argparse
import time

import pyro
import torch

from benchmarks.common import handwritten_step, interleaved, read_losses, report
from pyrolvm.devices import resolve_device
from pyrolvm.guides import AmortizedNormal
from pyrolvm.inference import make_elbo, make_optim
from pyrolvm.inference.compiled import CompiledStep

SIZES = {
    "mnist": dict(data_dim=784, latent_dim=50, hidden=(200, 200), batch=100, eps=1e-8),
    "small": dict(data_dim=64, latent_dim=8, hidden=(128, 128), batch=32, eps=1e-8),
    "burda": dict(data_dim=784, latent_dim=50, hidden=(200, 200), batch=20, eps=1e-4),
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
#: The Burda protocol's case: its step only.
BURDA_OBJECTIVES = ("Trace_ELBO",)
MODES = ("off", "graph", "inductor")


def pair(size, reparameterized, device, seed=0, name=""):
    """The VAE and its guide, the same initial weights for every seed (``name``: a prefix of
    their parameters' names in Pyro's param store, so that several pairs coexist)."""
    from pyrolvm.models import VAE

    torch.manual_seed(seed)
    s = SIZES[size]
    model = VAE(s["data_dim"], s["latent_dim"], s["hidden"], name=name + "decoder").to(device)
    guide = AmortizedNormal(
        s["data_dim"],
        s["latent_dim"],
        s["hidden"],
        reparameterized=reparameterized,
        name=name + "encoder",
    ).to(device)
    return model, guide


def _method(mode):
    return "pyro-lvm eager" if mode == "off" else f"pyro-lvm {mode}"


def case(size, label, name, k, kind, reparam, rounds, steps, device, modes, compiled_ref):
    s = SIZES[size]
    gen = torch.Generator().manual_seed(0)
    data = torch.bernoulli(torch.full((steps * s["batch"], s["data_dim"]), 0.2), generator=gen)
    data = data.to(device)
    batches = data.split(s["batch"])
    methods, compile_seconds = {}, {}
    # pyro-lvm: a pair of its own per mode (the same initial weights; parameters of their own in
    # the param store), as every reference has: each method's weights see the same number of
    # updates (weights trained further would meet other numbers, e.g. denormal ones, which
    # cost far more time on the CPU, and the comparison would not be of the same work)
    pyro.clear_param_store()
    for mode in modes:
        model, guide = pair(size, reparam, device, name=f"{mode}_")
        elbo, optim = make_elbo(name, k), make_optim(1e-3, eps=s["eps"])
        step = CompiledStep(model, guide, elbo, mode)
        for _ in range(2):  # the first step creates the parameters; the next compiles
            step(optim, batches[0])
        if mode != "off":
            compile_seconds[mode] = step.compile_seconds

        def ours(step=step, optim=optim):
            with pyro.validation_enabled(False):
                read_losses([step(optim, xb) for xb in batches])

        methods[_method(mode)] = ours
    # the references: a copy of the same networks, one torch.optim.Adam each
    refs = [("hand-written", False)] + ([("hand-written compiled", True)] if compiled_ref else [])
    for ref_name, compiled in refs:
        ref_model, ref_guide = pair(size, reparam, device)
        params = [*ref_model.parameters(), *ref_guide.parameters()]
        ref_opt = torch.optim.Adam(params, lr=1e-3, eps=s["eps"], fused=compiled or None)
        ref = handwritten_step(
            kind, ref_model, ref_guide, ref_opt, k, compiled=compiled, read=False
        )
        t0 = time.perf_counter()
        ref(batches[0])
        if compiled:
            compile_seconds["hand-written"] = time.perf_counter() - t0

        def theirs(ref=ref):
            read_losses([ref(xb) for xb in batches])

        methods[ref_name] = theirs
    med = interleaved(methods, rounds, device)
    title = f"{size} {label} (B={s['batch']})"
    base = med["hand-written"]
    rows = []
    for method, seconds in med.items():
        row = {"case": title, "method": method, "seconds": seconds / steps}
        if method != "hand-written":
            row["ratio"] = seconds / base
        if "hand-written compiled" in med and method.startswith("pyro-lvm"):
            row["ratio_to_compiled"] = seconds / med["hand-written compiled"]
        if method == "hand-written compiled":
            row["compile_seconds"] = compile_seconds.get("hand-written")
        elif method.startswith("pyro-lvm "):
            row["compile_seconds"] = compile_seconds.get(method.removeprefix("pyro-lvm "))
        rows.append(row)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--objectives", nargs="+", default=None, help="labels, e.g. 'IWAE K=5'")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--no-compiled-reference", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    rows = []
    for size in args.sizes:
        for label, name, k, kind, reparam in OBJECTIVES:
            if size == "burda" and label not in BURDA_OBJECTIVES:
                continue
            if args.objectives and label not in args.objectives:
                continue
            rows += case(
                size,
                label,
                name,
                k,
                kind,
                reparam,
                args.rounds,
                args.steps,
                device,
                args.modes,
                not args.no_compiled_reference,
            )
    return report("steps", "SVI step, per step", rows, device, args.json)


if __name__ == "__main__":
    main()
