"""The amortization gap (Cremer, Li & Duvenaud 2018, "Inference Suboptimality in Variational
Autoencoders", their decomposition of the inference gap): for test points x,

    log p(x) - ELBO[q_phi]  =  (log p(x) - ELBO[q*])  +  (ELBO[q*] - ELBO[q_phi])
         inference gap         approximation gap         amortization gap

with q_phi the encoder's Gaussian and q* the best Gaussian of the same (diagonal) family for
each point, found by refining a :class:`~pyrolvm.guides.per_datapoint.PerDatapoint` guide,
initialized at the encoder's output, by SVI with the model held fixed."""

from dataclasses import dataclass

import pyro
import torch
from pyro import poutine

from ..errors import ConfigError
from ..guides.per_datapoint import PerDatapoint
from ..inference import BetaELBO, importance_sample, make_optim, mean_and_stderr, svi_step


@dataclass
class AmortizationGap:
    """Per-datapoint figures (tensors of shape (n,), float64, nats) and their summaries.

    Attributes:
        elbo_amortized: ELBO of the encoder's q_phi(z | x).
        elbo_refined: ELBO of the refined per-datapoint q*(z); never below ``elbo_amortized``
            (a point whose refinement did not improve keeps the encoder's q).
        log_likelihood: the importance-sampled log p(x) with q* as the proposal (an IWAE
            estimate with ``eval_samples``, a stochastic lower bound).
        loc, scale: the refined q*'s parameters, shape (n, L).
        steps (int): SVI steps of the refinement.
    """

    elbo_amortized: torch.Tensor
    elbo_refined: torch.Tensor
    log_likelihood: torch.Tensor
    loc: torch.Tensor
    scale: torch.Tensor
    steps: int

    def summary(self):
        """dict of ``amortization_gap``, ``approximation_gap``, ``inference_gap`` and their
        ``*_stderr`` (mean and standard error over the points, nats), and ``gap_points``."""
        out = {}
        for key, values in (
            ("amortization_gap", self.elbo_refined - self.elbo_amortized),
            ("approximation_gap", self.log_likelihood - self.elbo_refined),
            ("inference_gap", self.log_likelihood - self.elbo_amortized),
        ):
            out[key], out[key + "_stderr"] = mean_and_stderr(values)
        out["gap_points"] = len(self.elbo_amortized)
        out["gap_steps"] = self.steps
        return out


def _elbo_and_log_px(model, guide, x, num_samples):
    r = importance_sample(model, guide, x, num_samples=num_samples, batch_size=len(x))
    return r.elbo, r.log_likelihood


def amortization_gap(
    model,
    encode,
    x,
    steps=300,
    lr=1e-2,
    num_particles=10,
    eval_samples=1000,
    name="amortization_gap",
):
    """Refine a per-datapoint guide from the encoder's output and split the inference gap.

    The model's parameters are held fixed (its ``param`` sites are hidden from SVI); only the
    per-datapoint guide's are optimized, by Adam on the ELBO with ``num_particles``
    reparameterized particles over the whole set ``x`` at once, the learning rate decaying
    geometrically from ``lr`` to ``lr / 100`` over the ``steps`` (``ClippedAdam``'s options on
    :func:`~pyrolvm.inference.make_optim`). ELBOs and log p(x) are then estimated with
    ``eval_samples`` samples per point (the global RNG: seed it first). The refined guide's
    parameters are removed from Pyro's param store at the end.

    Args:
        model: a Pyro model ``model(x)`` with latent site ``"z"`` of event shape (L,) under
            ``pyro.plate("data", B)`` (e.g. :class:`pyrolvm.models.VAE`).
        encode (callable): ``encode(x) -> (loc, scale)``, each (n, L): the amortized
            diagonal-Gaussian guide's parameters (e.g. ``AmortizedNormal.encode``).
        x (torch.Tensor): shape (n, D), the points.
        steps (int): SVI steps (>= 0).
        lr (float): Adam's learning rate.
        num_particles (int): particles per SVI step.
        eval_samples (int): samples per point for the final estimates.

    Returns:
        AmortizationGap

    Raises:
        ConfigError: no points, or steps < 0.
    """
    if len(x) < 1 or int(steps) < 0:
        raise ConfigError(
            f"the amortization gap needs >= 1 point and steps >= 0, got {len(x)} and {steps}"
        )
    with torch.no_grad():
        loc, scale = encode(x)
    store = pyro.get_param_store()
    fixed_model = poutine.block(model, hide_fn=lambda msg: msg.get("type") == "param")
    amortized = PerDatapoint(len(x), loc.shape[-1], loc, scale, name=name + "_encoder")
    refined = PerDatapoint(len(x), loc.shape[-1], loc, scale, name=name)
    try:
        with torch.no_grad():
            elbo_a, log_px_a = _elbo_and_log_px(fixed_model, amortized, x, eval_samples)
        decay = 0.01 ** (1.0 / max(1, int(steps)))  # the rate falls to lr / 100 at the end
        # ClippedAdam's options (its default clip of 10) on the one Adam of every run
        optim = make_optim(lr, clip_norm=10.0, lrd=decay)
        elbo = BetaELBO(num_particles)
        for _ in range(int(steps)):
            svi_step(fixed_model, refined, elbo, optim, x)
        with torch.no_grad():
            elbo_r, log_px_r = _elbo_and_log_px(fixed_model, refined, x, eval_samples)
            q_loc, q_scale = (t.detach().clone() for t in refined.encode())
    finally:
        for key in [k for k in store if k.startswith(name)]:
            del store[key]
    better = elbo_r > elbo_a
    elbo_star = torch.where(better, elbo_r, elbo_a)
    q_loc = torch.where(better[:, None], q_loc, loc)
    q_scale = torch.where(better[:, None], q_scale, scale)
    log_px = torch.where(better, log_px_r, log_px_a)
    return AmortizationGap(elbo_a, elbo_star, log_px, q_loc, q_scale, int(steps))
