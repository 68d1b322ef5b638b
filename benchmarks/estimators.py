"""Cost of one SVI step (loss and gradients) of each gradient estimator, as a ratio to Pyro's
``Trace_ELBO`` with the same number of vectorized particles, measured in the same run.

The digits VAE (64-128-128-8, Bernoulli likelihood), minibatches of 100, K = 5 and 50.
The score-function row uses the same VAE with a non-reparameterized guide.

    PYTHONPATH=$PWD python benchmarks/estimators.py [--repeats 30]
"""

import argparse

import pyro
import torch

from pyrolvm.data import load
from pyrolvm.guides import AmortizedNormal
from pyrolvm.inference import make_elbo
from pyrolvm.models import VAE

from iwae_vs_renyi import time_steps  # this folder is on sys.path

NAMES = ["trace", "tracegraph", "iwae", "dreg", "stl", "vimco"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    pyro.set_rng_seed(0)
    data = load("digits", binarize="static")
    model = VAE(data.data_dim, 8, (128, 128), data_mean=data.train.mean(0))
    guides = {
        True: AmortizedNormal(data.data_dim, 8, (128, 128)),
        False: AmortizedNormal(data.data_dim, 8, (128, 128), reparameterized=False),
    }
    batches = [data.train[torch.randperm(len(data.train))[:100]] for _ in range(args.repeats)]
    for k in (5, 50):
        elbos = {name: make_elbo(name, k) for name in NAMES}
        for name in NAMES:  # warm-up
            time_steps(elbos[name], model, guides[name != "tracegraph"], batches[:5])
        times = {name: float("inf") for name in NAMES}
        for _ in range(3):  # interleaved rounds share any drift in machine load; keep the best
            for name in NAMES:
                t = time_steps(elbos[name], model, guides[name != "tracegraph"], batches)
                times[name] = min(times[name], t)
        print(f"K = {k}: seconds per step, and ratio to trace")
        for name in NAMES:
            print(f"  {name:>10} {times[name]:.5f}  {times[name] / times['trace']:.2f}")


if __name__ == "__main__":
    main()
