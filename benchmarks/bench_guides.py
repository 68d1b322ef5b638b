"""Per-step cost of each guide, prior and depth of `pyrolvm train vae` relative to the diagonal
Gaussian VAE, measured interleaved in the same run. Prints the ratio (> 1: slower).

    python benchmarks/bench_guides.py [--steps 20] [--rounds 3] [--batch-size 100] [--elbo trace]

Each setting is the MNIST-sized model of `pyrolvm train vae --dataset mnist` (784-200-200-50,
tanh, Bernoulli likelihood; `--layers 2`: latents 100 and 50) built by the run's own `build`
and trained by one SVI step at a time (`loss_and_grads` plus Adam) on random binary data. The
settings take turns within each round (after one warm-up step each), so that a change of
machine load falls on all of them alike; the figure is the median over rounds of the mean
step time.
"""

import argparse
import statistics
import time

import pyro
import torch

from pyrolvm.inference import make_elbo, make_optim
from pyrolvm.runs.vae import VAEConfig, build

SETTINGS = {
    "diagonal Gaussian": {},
    "full covariance": dict(guide="fullcov"),
    "planar, 4 steps": dict(guide="planar", flows=4),
    "planar, 16 steps": dict(guide="planar", flows=16),
    "IAF, 4 steps": dict(guide="iaf", flows=4),
    "VampPrior, K = 500": dict(prior="vamp", pseudo_inputs=500),
    "flow prior, 2 steps": dict(prior="flow"),
    "two stochastic layers": dict(layers=2),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--elbo", default="trace")
    parser.add_argument("--num-particles", type=int, default=1)
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.bernoulli(torch.full((args.batch_size, 784), 0.2))
    runs = {}
    for name, options in SETTINGS.items():
        store = pyro.get_param_store()
        store.clear()
        cfg = VAEConfig(dataset="mnist", elbo=args.elbo, **options).resolved()
        model, guide = build(cfg, 784, x.mean(0))
        elbo = make_elbo(args.elbo, args.num_particles)
        svi = pyro.infer.SVI(model, guide, make_optim(1e-3), elbo)
        svi.step(x)  # warm-up: Pyro guesses the plate nesting, Adam creates its state
        runs[name] = (svi, store.get_state())
    times = {name: [] for name in SETTINGS}
    for _ in range(args.rounds):
        for name, (svi, state) in runs.items():
            pyro.get_param_store().clear()
            pyro.get_param_store().set_state(state)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                svi.step(x)
            times[name].append((time.perf_counter() - t0) / args.steps)
    reference = statistics.median(times["diagonal Gaussian"])
    print(
        f"per-step cost, batch {args.batch_size}, --elbo {args.elbo} K={args.num_particles}, "
        f"{args.steps} steps x {args.rounds} interleaved rounds, "
        f"{torch.get_num_threads()} threads"
    )
    print(f"{'setting':24s} {'ms / step':>10s} {'x diagonal':>11s}")
    for name, ts in times.items():
        median = statistics.median(ts)
        print(f"{name:24s} {1000 * median:10.1f} {median / reference:11.2f}")


if __name__ == "__main__":
    main()
