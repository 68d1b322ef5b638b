"""Shared pieces of the benchmarks: interleaved timing, the hand-written PyTorch references and
the table they print.

Every benchmark times pyro-lvm against a hand-written PyTorch reference on the same
architecture, data, batch and seed, **interleaved in one process** (round r times every
method once, in a rotating order), and reports medians over rounds and the ratio to the
reference: on a shared, noisy machine a ratio measured this way is meaningful where absolute
times are not. A benchmark exits non-zero only on an error, never because a ratio is high.
"""

from __future__ import annotations

import math
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F


def machine(device: torch.device | str = "cpu") -> dict:
    """The device and thread count the figures were measured with: the GPU's name only for a
    CUDA ``device`` (its own, not GPU 0's)."""
    device = torch.device(device)
    info = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
    }
    if device.type == "cuda":
        info["cuda"] = torch.cuda.get_device_name(device)
    return info


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(
    methods: dict[str, Callable[[], None]], rounds: int, device: torch.device
) -> dict[str, float]:
    """Median seconds of one call of each method, over ``rounds`` interleaved rounds (the
    order rotates each round so that no method always runs after the same neighbour)."""
    names = list(methods)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            sync(device)
            t0 = time.perf_counter()
            methods[name]()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return {n: statistics.median(t) for n, t in times.items()}


def table(title: str, rows: list[dict], reference: str = "hand-written") -> str:
    """A text table of ``rows`` (dicts with ``case``, ``method``, ``seconds`` and optional
    ``ratio``, ``peak_mb``)."""
    lines = [title, f"{'case':<34} {'method':<26} {'median':>10} {'ratio':>7} {'vs comp.':>8}"]
    for row in rows:
        ratio = f"{row['ratio']:.3f}" if row.get("ratio") is not None else ""
        to_compiled = row.get("ratio_to_compiled")
        to_compiled = f"{to_compiled:.3f}" if to_compiled is not None else ""
        extra = f"  peak {row['peak_mb']:.0f} MB" if row.get("peak_mb") is not None else ""
        if row.get("compile_seconds") is not None:
            extra += f"  compiled in {row['compile_seconds']:.1f} s"
        lines.append(
            f"{row['case']:<34} {row['method']:<26} {1e3 * row['seconds']:>8.3f}ms {ratio:>7} "
            f"{to_compiled:>8}" + extra
        )
    lines.append(
        f"(ratio: median / the {reference} reference's; vs comp.: / the compiled hand-written "
        "reference's, in the same run)"
    )
    return "\n".join(lines)


def report(name: str, title: str, rows: list[dict], device: torch.device, path: str | None):
    """Print the table of ``rows`` and write them (with the machine) as JSON to ``path``;
    return the result dict."""
    print(table(f"{title} on {device} ({machine(device)})", rows))
    result = {"benchmark": name, "device": str(device), "machine": machine(device), "rows": rows}
    if path:
        import json

        with open(path, "w") as f:
            json.dump(result, f, indent=1)
    return result


# --- hand-written references: the VAE of pyrolvm.models.VAE / guides.AmortizedNormal --------


def log_weights(model, guide, x, k, detach_guide=False):
    """(K, B) log-weights log p(x, z) - log q(z | x) of the Gaussian-latent Bernoulli VAE, and
    the draws z (K, B, L), in plain PyTorch."""
    loc, scale = guide.encode(x)
    eps = torch.randn((k,) + loc.shape, device=x.device, dtype=x.dtype)
    z = loc + scale * eps
    if detach_guide:  # log q with the parameters detached (STL, DReG)
        log_q = (
            -0.5 * ((z - loc.detach()) / scale.detach()) ** 2
            - scale.detach().log()
            - 0.5 * math.log(2 * math.pi)
        ).sum(-1)
    else:
        log_q = (-0.5 * eps**2 - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
    log_pz = (-0.5 * z**2 - 0.5 * math.log(2 * math.pi)).sum(-1)
    logits = model.decoder(z)
    log_px = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(
        -1
    )
    return log_px + log_pz - log_q, z


def handwritten_loss(kind: str, model, guide, k: int = 1) -> Callable:
    """``loss_fn(x) -> (loss, surrogate)`` of the objective ``kind`` written by hand: the loss
    (nats, summed over the batch) and the tensor whose gradient is the estimator."""

    def loss_fn(x):
        if kind == "trace" or kind == "iwae":
            log_w, _ = log_weights(model, guide, x, k)
            bound = log_w[0] if k == 1 else torch.logsumexp(log_w, 0) - math.log(k)
            loss = -bound.sum()
            return loss, loss
        if kind == "meanfield":  # analytic KL(q || N(0, I))
            loc, scale = guide.encode(x)
            z = loc + scale * torch.randn_like(loc)
            logits = model.decoder(z)
            log_px = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
            kl = (0.5 * (loc**2 + scale**2 - 1) - scale.log()).sum(-1)
            loss = -(log_px - kl).sum()
            return loss, loss
        if kind == "score":  # REINFORCE without baseline (TraceGraph_ELBO's surrogate)
            loc, scale = guide.encode(x)
            z = (loc + scale * torch.randn_like(loc)).detach()
            log_q = (
                -0.5 * ((z - loc) / scale) ** 2 - scale.log() - 0.5 * math.log(2 * math.pi)
            ).sum(-1)
            log_pz = (-0.5 * z**2 - 0.5 * math.log(2 * math.pi)).sum(-1)
            log_px = -F.binary_cross_entropy_with_logits(model.decoder(z), x, reduction="none").sum(
                -1
            )
            elbo = log_px + log_pz - log_q
            return -elbo.sum(), -(elbo + log_q * elbo.detach()).sum()
        if kind == "dreg":  # Tucker et al. 2019: w~ on the model, w~^2 on the path into q
            log_w, z = log_weights(model, guide, x, k, detach_guide=True)
            w = torch.softmax(log_w, 0).detach()
            z.register_hook(lambda g: g * w.unsqueeze(-1))
            return -(torch.logsumexp(log_w, 0) - math.log(k)).sum(), -(w * log_w).sum()
        raise ValueError(kind)

    return loss_fn


def handwritten_step(
    kind: str, model, guide, opt, k: int = 1, compiled: bool = False, read: bool = True
) -> Callable[[torch.Tensor], torch.Tensor | None]:
    """One optimizer step of the objective ``kind`` written by hand, reading the loss as a
    float each step like ``SVI.step``; with ``read=False`` the step returns the loss (a
    detached 0-d tensor) for the caller to read later, without a host synchronisation. With
    ``compiled`` the loss and its backward pass are compiled by ``torch.compile`` (inductor),
    the optimizer step stays ``opt.step()``."""
    loss_fn = handwritten_loss(kind, model, guide, k)
    if compiled:
        loss_fn = torch.compile(loss_fn)

    def step(x):
        opt.zero_grad()
        loss, surrogate = loss_fn(x)
        surrogate.backward()
        opt.step()
        if not read:
            return loss.detach()
        math.isfinite(loss.item())
        return None

    return step


def read_losses(losses: list) -> list[float]:
    """The losses of several steps (0-d tensors or floats) as floats, with one transfer from the
    device: as ``train`` reads them."""
    tensors = [
        torch.as_tensor(v, dtype=torch.float64) if not isinstance(v, torch.Tensor) else v
        for v in losses
    ]
    if not tensors:
        return []
    where = tensors[0].device
    return torch.stack([t.detach().to(where, torch.float64).reshape(()) for t in tensors]).tolist()
