"""Speed and peak memory of pyro-lvm's importance-sampled log-likelihood, eager and compiled
(its K-particle chunks as a traced graph: "pyro-lvm compiled" is ``--compile auto``), against
the same computation written by hand in PyTorch, measured in the same run (medians of
interleaved rounds; ratio > 1: pyro-lvm slower).

    python benchmarks/bench_log_likelihood.py [--samples 1000 5000] [--points 200]
        [--rounds 3] [--modes off auto] [--device cpu] [--json out.json]

The model is the MNIST VAE (784-200-200-50, tanh, Bernoulli) with random weights. Both compute
the same three per-datapoint figures from K = --samples draws, in the same chunks (100
datapoints x 100 particles, pyro-lvm's default chunking): the log-likelihood estimate
log (1/K) sum_k w_k, the ELBO estimate (1/K) sum_k log w_k and the effective sample size
(sum w)^2 / sum w^2. Peak memory: the growth of the peak resident set size during one
evaluation (CPU, Linux), or of ``torch.cuda.max_memory_allocated`` (CUDA).
"""

import argparse
import math

import torch

from benchmarks.common import interleaved, log_weights, report
from pyrolvm.devices import resolve_device
from pyrolvm.guides import AmortizedNormal
from pyrolvm.inference import importance_sample
from pyrolvm.inference.compiled import compile_mode
from pyrolvm.models import VAE

BATCH, CHUNK = 100, 100


@torch.no_grad()
def handwritten(model, guide, x, k, chunk=CHUNK):
    """(log-likelihood, ELBO, ESS) per datapoint, plain PyTorch."""
    out_ll, out_elbo, out_ess = [], [], []
    for i in range(0, len(x), BATCH):
        xb = x[i : i + BATCH]
        lse = lse2 = None
        total = 0.0
        for k0 in range(0, k, chunk):
            log_w, _ = log_weights(model, guide, xb, min(chunk, k - k0))
            log_w = log_w.double()
            c, c2 = torch.logsumexp(log_w, 0), torch.logsumexp(2 * log_w, 0)
            lse = c if lse is None else torch.logaddexp(lse, c)
            lse2 = c2 if lse2 is None else torch.logaddexp(lse2, c2)
            total = total + log_w.sum(0)
        out_ll.append(lse - math.log(k))
        out_elbo.append(total / k)
        out_ess.append((2 * lse - lse2).exp())
    return torch.cat(out_ll), torch.cat(out_elbo), torch.cat(out_ess)


def setup(points, device):
    torch.manual_seed(0)
    model = VAE(784, 50, (200, 200)).to(device)
    guide = AmortizedNormal(784, 50, (200, 200)).to(device)
    gen = torch.Generator().manual_seed(0)
    x = torch.bernoulli(torch.full((points, 784), 0.2), generator=gen).to(device)
    return model, guide, x


def _method(mode):
    return "pyro-lvm eager" if mode == "off" else "pyro-lvm compiled"


def evaluate(method, model, guide, x, k, mode="off"):
    if method.startswith("pyro-lvm"):
        with compile_mode(mode):
            return importance_sample(
                model, guide, x, num_samples=k, batch_size=BATCH, chunk_size=CHUNK
            ).log_likelihood
    return handwritten(model, guide, x, k)[0]


def _status_kb(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def peak_mb(method, k, points, device, mode="off", pair=None):
    """Peak memory (MB) of one evaluation beyond what was resident before it: on the CPU the
    growth of the peak resident set size (Linux: ``VmHWM``, reset through
    ``/proc/self/clear_refs``), on CUDA the peak allocation (``max_memory_allocated``) minus
    the allocation before; ``None`` where neither is available."""
    model, guide, x = pair or setup(points, device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        evaluate(method, model, guide, x, k, mode)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current resident set size
        before = _status_kb("VmRSS")
    except OSError:
        return None
    evaluate(method, model, guide, x, k, mode)
    return (_status_kb("VmHWM") - before) / 1024


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--points", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", nargs="+", default=["off", "auto"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    model, guide, x = setup(args.points, device)
    rows = []
    for k in args.samples:
        methods = {}
        ll, elbo, ess = handwritten(model, guide, x, k)
        for mode in args.modes:
            ours = evaluate("pyro-lvm", model, guide, x, k, mode)  # (compiles, untimed)
            # the same estimator: equal up to Monte Carlo noise (different draws)
            assert torch.allclose(ours.mean(), ll.mean(), atol=1.0)
            methods[_method(mode)] = lambda k=k, mode=mode: evaluate(
                "pyro-lvm", model, guide, x, k, mode
            )
        methods["hand-written"] = lambda k=k: handwritten(model, guide, x, k)
        med = interleaved(methods, args.rounds, device)
        case = f"evaluator K={k}, {args.points} images"
        peaks = {}
        if not args.no_memory:  # (the compiled evaluator's graphs exist: the evaluation only)
            pair = (model, guide, x)
            peaks = {
                _method(m): peak_mb("pyro-lvm", k, args.points, device, m, pair) for m in args.modes
            }
            peaks["hand-written"] = peak_mb("hand-written", k, args.points, device, pair=pair)
        for method, seconds in med.items():
            row = {"case": case, "method": method, "seconds": seconds, "peak_mb": peaks.get(method)}
            if method != "hand-written":
                row["ratio"] = seconds / med["hand-written"]
                if peaks:
                    row["peak_ratio"] = peaks[method] / max(peaks["hand-written"], 1e-9)
            rows.append(row)
    return report("log_likelihood", "importance-sampled log-likelihood", rows, device, args.json)


if __name__ == "__main__":
    main()
