"""Speed of pyrolvm's importance-sampled log-likelihood against the same computation written by
hand in PyTorch, measured in the same run. Prints the ratio (> 1: pyrolvm slower).

    python benchmarks/bench_log_likelihood.py [--samples 1000] [--points 200] [--repeats 3]

The model is the MNIST VAE (784-200-200-50, tanh, Bernoulli) with random weights; both compute the
same per-datapoint estimate from K = --samples draws, in chunks of 100 particles.
"""

import argparse
import math
import time

import torch
import torch.nn.functional as F

from pyrolvm.guides import AmortizedNormal
from pyrolvm.inference import importance_sample
from pyrolvm.models import VAE


def handwritten(model, guide, x, k, chunk):
    """log (1/K) sum_k p(x, z_k) / q(z_k | x) per datapoint, plain PyTorch."""
    out = []
    for i in range(0, len(x), 100):
        xb = x[i : i + 100]
        loc, scale = guide.encode(xb)
        lse = None
        for k0 in range(0, k, chunk):
            c = min(chunk, k - k0)
            eps = torch.randn(c, *loc.shape)
            z = loc + scale * eps
            log_q = (-0.5 * eps**2 - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
            log_pz = (-0.5 * z**2 - 0.5 * math.log(2 * math.pi)).sum(-1)
            logits = model.decoder(z)
            log_px = -F.binary_cross_entropy_with_logits(
                logits, xb.expand_as(logits), reduction="none"
            ).sum(-1)
            log_w = (log_px + log_pz - log_q).double()
            c_lse = torch.logsumexp(log_w, 0)
            lse = c_lse if lse is None else torch.logaddexp(lse, c_lse)
        out.append(lse - math.log(k))
    return torch.cat(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--points", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    model, guide = VAE(784, 50, (200, 200)), AmortizedNormal(784, 50, (200, 200))
    x = torch.bernoulli(torch.full((args.points, 784), 0.2))
    chunk = 100
    with torch.no_grad():
        times = {"pyrolvm": [], "hand-written": []}
        for _ in range(args.repeats):
            for name in times:
                t0 = time.perf_counter()
                if name == "pyrolvm":
                    importance_sample(model, guide, x, num_samples=args.samples, chunk_size=chunk)
                else:
                    handwritten(model, guide, x, args.samples, chunk)
                times[name].append(time.perf_counter() - t0)
    best = {name: min(t) for name, t in times.items()}
    print(f"K={args.samples}, {args.points} datapoints, best of {args.repeats}:")
    for name, t in best.items():
        print(f"  {name:<13} {t:.3f} s")
    print(f"ratio pyrolvm / hand-written: {best['pyrolvm'] / best['hand-written']:.2f}")


if __name__ == "__main__":
    main()
