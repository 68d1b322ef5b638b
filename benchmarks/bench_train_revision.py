"""Per-step cost of :func:`pyrolvm.inference.train` at two revisions of
``pyrolvm/inference/training.py``, in one process: epochs timed interleaved (the order
alternates each round; medians of the wall-clock and of the process's CPU time, which a shared
machine disturbs less, and the median of the per-round CPU-time ratios), and the Python and C
function calls per epoch counted by ``sys.setprofile`` (exact, unlike any timing on a shared
machine).

    git show main:pyrolvm/inference/training.py > /tmp/training_before.py
    python benchmarks/bench_train_revision.py /tmp/training_before.py [--rounds 40]

The case: the digits (1437 training images of 64 pixels), a VAE 64-64-8 with an
``AmortizedNormal`` guide, Trace_ELBO, batch 20 (72 steps per epoch), dynamic binarization,
``compile="graph"`` (traced before the timed rounds), one thread. Both revisions must give the
same ``train_elbo`` (checked). The other revision is loaded as a module of
``pyrolvm.inference`` (its relative imports resolve to this checkout's modules).
"""

import argparse
import collections
import copy
import importlib.util
import statistics
import sys
import time

import pyro
import torch

from pyrolvm.data import load
from pyrolvm.guides import AmortizedNormal
from pyrolvm.inference import make_elbo, make_optim, train
from pyrolvm.models import VAE


def _load(path):
    spec = importlib.util.spec_from_file_location("pyrolvm.inference._training_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _epoch(fn, x):
    """One epoch of ``fn`` (a ``train``) from the same initial weights and seed, every call."""
    torch.manual_seed(0)
    model, guide = VAE(64, 8, (64,)), AmortizedNormal(64, 8, (64,))
    initial = copy.deepcopy((model.state_dict(), guide.state_dict()))
    elbo = make_elbo("trace")

    def run():
        pyro.clear_param_store()
        model.load_state_dict(initial[0])
        guide.load_state_dict(initial[1])
        pyro.set_rng_seed(0)
        return fn(
            model,
            guide,
            x,
            elbo,
            make_optim(1e-3),
            epochs=1,
            batch_size=20,
            transform=torch.bernoulli,
            progress=False,
            compile="graph",
        )

    run()  # traces
    return run


def _calls(run):
    counts = collections.Counter()
    sys.setprofile(lambda frame, event, arg: counts.update((event,)))
    try:
        run()
    finally:
        sys.setprofile(None)
    return counts["call"], counts["c_call"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("before", help="the other revision's training.py")
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    x = load("digits").train
    methods = {"before": _epoch(_load(args.before).train, x), "after": _epoch(train, x)}
    curves = {name: run()["train_elbo"] for name, run in methods.items()}
    assert curves["before"] == curves["after"], curves
    wall: dict[str, list[float]] = {name: [] for name in methods}
    cpu: dict[str, list[float]] = {name: [] for name in methods}
    for r in range(args.rounds):
        for name in list(methods)[:: 1 if r % 2 == 0 else -1]:
            t0, c0 = time.perf_counter(), time.process_time()
            methods[name]()
            cpu[name].append(time.process_time() - c0)
            wall[name].append(time.perf_counter() - t0)
    ratios = [a / b for a, b in zip(cpu["after"], cpu["before"], strict=True)]
    for name, run in methods.items():
        calls, c_calls = _calls(run)
        print(
            f"{name:7s} {1000 * statistics.median(wall[name]):6.1f} ms/epoch wall, "
            f"{1000 * statistics.median(cpu[name]):6.1f} ms CPU; "
            f"{calls} Python calls, {c_calls} C calls"
        )
    print(
        f"after / before, CPU time: median of the per-round ratios {statistics.median(ratios):.3f}"
    )


if __name__ == "__main__":
    main()
