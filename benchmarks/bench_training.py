"""Speed of one epoch of pyrolvm's SVI training loop against a hand-written PyTorch VAE training
loop doing the same work, measured in the same run. Prints the ratio (> 1: pyrolvm slower).

    python benchmarks/bench_training.py [--points 6000] [--batch-size 100] [--repeats 3]

Both train the MNIST-sized VAE (784-200-200-50, tanh, Bernoulli likelihood, single-sample
reparameterized ELBO, Adam lr 1e-3) on random binary data; pyrolvm uses `Trace_ELBO` (the
default objective) and `IWAE(num_particles=1)`.
"""

import argparse
import math
import time

import pyro
import torch
import torch.nn.functional as F

from pyrolvm.guides import AmortizedNormal
from pyrolvm.inference import IWAE, make_elbo, make_optim, train
from pyrolvm.models import VAE


def handwritten_epoch(model, guide, opt, x, batch_size):
    perm = torch.randperm(len(x))
    for i in range(0, len(x), batch_size):
        xb = x[perm[i : i + batch_size]]
        loc, scale = guide.encode(xb)
        eps = torch.randn_like(loc)
        z = loc + scale * eps
        log_q = (-0.5 * eps**2 - scale.log()).sum(-1)
        log_pz = (-0.5 * z**2).sum(-1)
        log_px = -F.binary_cross_entropy_with_logits(model.decoder(z), xb, reduction="none").sum(-1)
        loss = -(log_px + log_pz - log_q).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        math.isfinite(loss.item())  # the same per-step sync as SVI.step's float return


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=int, default=6000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.bernoulli(torch.full((args.points, 784), 0.2))
    times = {"pyrolvm Trace_ELBO": [], "pyrolvm IWAE(K=1)": [], "hand-written": []}
    for _ in range(args.repeats):
        for name in times:
            pyro.clear_param_store()
            model, guide = VAE(784, 50, (200, 200)), AmortizedNormal(784, 50, (200, 200))
            t0 = time.perf_counter()
            if name == "hand-written":
                params = list(model.parameters()) + list(guide.parameters())
                handwritten_epoch(
                    model, guide, torch.optim.Adam(params, lr=1e-3), x, args.batch_size
                )
            else:
                loss = make_elbo("trace") if "Trace" in name else IWAE(num_particles=1)
                train(
                    model,
                    guide,
                    x,
                    loss,
                    make_optim(1e-3),
                    epochs=1,
                    batch_size=args.batch_size,
                    progress=False,
                )
            times[name].append(time.perf_counter() - t0)
    best = {name: min(t) for name, t in times.items()}
    steps = math.ceil(args.points / args.batch_size)
    print(f"one epoch of {steps} steps (batch {args.batch_size}), best of {args.repeats}:")
    for name, t in best.items():
        print(f"  {name:<20} {t:.3f} s")
    for name in list(best)[:2]:
        print(f"ratio {name} / hand-written: {best[name] / best['hand-written']:.2f}")


if __name__ == "__main__":
    main()
