"""The amortization gap (Cremer, Li & Duvenaud 2018, "Inference Suboptimality in Variational
Autoencoders", their decomposition of the inference gap): for test points x,

    log p(x) - ELBO[q_phi]  =  (log p(x) - ELBO[q*])  +  (ELBO[q*] - ELBO[q_phi])
         inference gap         approximation gap         amortization gap

with q_phi the guide and q* the best per-datapoint **mean-field Gaussian** (a diagonal
Gaussian for every latent site of every point), found by SVI with the model held fixed,
started at the guide's own means and standard deviations. For a diagonal-Gaussian encoder this
is Cremer et al.'s q* of the same family; for a richer guide (full covariance, flows,
hierarchical) q* is the mean-field optimum, and the point keeps q_phi where q* does not beat
it (so the gap reported is never negative, and a lower bound of the gap to the guide's own
family)."""

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites

from ..errors import ConfigError
from ..inference import (
    BetaELBO,
    find_batch_plate,
    importance_sample,
    latent_sites,
    make_optim,
    mean_and_stderr,
    svi_step,
)
from ..inference.batches import Data, as_tuple, num_rows
from ..inference.latent import check_latent_sites

#: The smallest standard deviation of the refined q*.
MIN_SCALE = 1e-4


@dataclass
class AmortizationGap:
    """Per-datapoint figures (tensors of shape (n,), float64, nats) and their summaries.

    Attributes:
        elbo_amortized: ELBO of the guide q_phi(z | x).
        elbo_refined: ELBO of the refined per-datapoint q*(z); never below ``elbo_amortized``
            (a point whose refinement did not improve keeps the guide's q).
        log_likelihood: the importance-sampled log p(x) with the better of q* and q_phi as the
            proposal (an IWAE estimate with ``eval_samples``, a stochastic lower bound).
        loc, scale (dict): latent site name -> the refined q*'s means and standard deviations,
            each of the site's value shape for the n points (e.g. (n, L)); for a point that
            kept q_phi, the guide's own means and standard deviations.
        steps (int): SVI steps of the refinement.
    """

    elbo_amortized: torch.Tensor
    elbo_refined: torch.Tensor
    log_likelihood: torch.Tensor
    loc: dict[str, torch.Tensor]
    scale: dict[str, torch.Tensor]
    steps: int

    def summary(self) -> dict:
        """dict of ``amortization_gap``, ``approximation_gap``, ``inference_gap`` and their
        ``*_stderr`` (mean and standard error over the points, nats), ``gap_points`` and
        ``gap_steps``."""
        out: dict[str, Any] = {}
        for key, values in (
            ("amortization_gap", self.elbo_refined - self.elbo_amortized),
            ("approximation_gap", self.log_likelihood - self.elbo_refined),
            ("inference_gap", self.log_likelihood - self.elbo_amortized),
        ):
            out[key], out[key + "_stderr"] = mean_and_stderr(values)
        out["gap_points"] = len(self.elbo_amortized)
        out["gap_steps"] = self.steps
        return out


def _softplus_inverse(y):
    return y + torch.log(-torch.expm1(-y))


def _moments(guide, data, args, kwargs, sites, draws=64):
    """Each latent site's mean and standard deviation under the guide at ``data``, shape of
    the site's value: the distribution's own where it has them (the draw of the sites it
    depends on held at one draw), else those of ``draws`` draws."""
    out = {}
    missing = []
    for name, site in sites.items():
        try:
            mean, sd = site["fn"].mean, site["fn"].stddev
            mean, sd = mean.expand(site["value"].shape), sd.expand(site["value"].shape)
            if torch.isfinite(mean).all() and torch.isfinite(sd).all():
                out[name] = (mean.detach(), sd.detach())
                continue
        except (NotImplementedError, RuntimeError):
            pass
        missing.append(name)
    if missing:
        with poutine.block(), torch.no_grad():
            values = {name: [] for name in missing}
            for _ in range(draws):
                t = poutine.trace(guide).get_trace(*as_tuple(data), *args, **kwargs)
                for name in missing:
                    values[name].append(t.nodes[name]["value"])
        for name in missing:
            v = torch.stack(values[name])
            out[name] = (v.mean(0), v.std(0))
    return out


class _MeanField:
    """The per-datapoint mean-field Gaussian q*: for every latent site a diagonal Gaussian
    with free (loc, scale) per datapoint and element, under the model's batch plate; called
    with the model's signature (its arguments ignored: the n points of the refinement)."""

    def __init__(self, name, plate, size, sites, moments, device):
        self.name, self.plate, self.size, self.device = name, plate, size, device
        self.init = {}
        self.event_dims = {}
        for site_name, site in sites.items():
            loc, sd = moments[site_name]
            raw = _softplus_inverse((sd - MIN_SCALE).clamp_min(1e-6))
            self.init[site_name] = (loc.detach().clone(), raw.detach().clone())
            self.event_dims[site_name] = site["fn"].event_dim

    def params(self):
        out = {}
        for site_name, (loc, raw) in self.init.items():
            loc_p = pyro.param(f"{self.name}.{site_name}.loc", loc)
            raw_p = pyro.param(f"{self.name}.{site_name}.raw_scale", raw)
            out[site_name] = (loc_p, F.softplus(raw_p) + MIN_SCALE)
        return out

    def __call__(self, *args, **kwargs):
        with pyro.plate(self.plate.name, self.size, dim=self.plate.dim, device=self.device):
            for site_name, (loc, scale) in self.params().items():
                pyro.sample(site_name, dist.Normal(loc, scale).to_event(self.event_dims[site_name]))


def _elbo_and_log_px(model, guide, data, args, kwargs, num_samples):
    n = num_rows(data)
    r = importance_sample(
        model, guide, data, *args, num_samples=num_samples, batch_size=n, **kwargs
    )
    return r.elbo, r.log_likelihood


def sites_in_the_batch_plate(guide_trace: Any, plate: Any) -> dict[str, Any]:
    """The guide's latent sites by name, each in the batch ``plate`` and no other.

    Raises:
        ConfigError: a latent site outside the batch plate or inside a further plate.
    """
    sites = {s["name"]: s for s in latent_sites(prune_subsample_sites(guide_trace))}
    for site in sites.values():
        plates = [f.name for f in site["cond_indep_stack"] if f.vectorized]
        if plate is None or plates != [plate.name]:
            raise ConfigError(
                f"the amortization gap refines each point's latent sites under the batch "
                f"plate, but site {site['name']!r} lies in the plates {plates}: it needs "
                "every latent site in the batch plate and no other"
            )
    return sites


def amortization_gap(
    model: Callable,
    guide: Callable,
    data: Data,
    *args: Any,
    steps: int = 300,
    lr: float = 1e-2,
    num_particles: int = 10,
    eval_samples: int = 1000,
    batch_plate: str | None = None,
    name: str = "amortization_gap",
    **kwargs: Any,
) -> AmortizationGap:
    """Refine a per-datapoint mean-field Gaussian from the guide and split the inference gap.

    The latent sites are read from the traces of ``guide`` and ``model`` on the points (any
    names, any number of sites; each must lie in the batch plate only). q* holds, for every
    site, a diagonal Gaussian per point started at the guide's means and standard deviations
    (the distribution's own, or of 64 draws where it has none, e.g. a flow). The model's
    parameters are held fixed (its ``param`` sites are hidden from SVI); only q*'s are
    optimized, by Adam on the ELBO with ``num_particles`` reparameterized particles over all
    n points at once, the learning rate decaying geometrically from ``lr`` to ``lr / 100``
    over the ``steps`` (``ClippedAdam``'s options on
    :func:`~pyrolvm.inference.make_optim`). ELBOs and log p(x) of q_phi and q* are then
    estimated by :func:`pyrolvm.inference.importance_sample` with ``eval_samples`` samples per
    point (the global RNG: seed it first). q*'s parameters are removed from Pyro's param store
    at the end.

    Args:
        model, guide (callable): the Pyro model, called as ``model(*data, *args, **kwargs)``,
            and its guide q_phi, with the model's signature.
        data (torch.Tensor or tuple of torch.Tensor): the n points along dim 0.
        steps, lr, num_particles, eval_samples (int, float, int, int): SVI steps (>= 0),
            Adam's learning rate, particles per step, samples per point of the estimates.
        batch_plate, name (str or None, str): the batch plate's name (default: the one
            around the data); the prefix of q*'s parameters in the param store.

    Returns:
        AmortizationGap

    Raises:
        ConfigError: no points, steps < 0, guide and model sampling different latent sites,
            or a latent site outside the batch plate or inside a further plate.
    """
    n = num_rows(data)
    if n < 1 or int(steps) < 0:
        raise ConfigError(
            f"the amortization gap needs >= 1 point and steps >= 0, got {n} and {steps}"
        )
    points = as_tuple(data)
    guide_trace, model_trace = check_latent_sites(model, guide, *points, *args, **kwargs)
    plate = find_batch_plate(model_trace, batch_plate)
    sites = sites_in_the_batch_plate(guide_trace, plate)
    moments = _moments(guide, points, args, kwargs, sites)
    store = pyro.get_param_store()
    fixed_model = poutine.block(model, hide_fn=lambda msg: msg.get("type") == "param")
    refined = _MeanField(name, plate, n, sites, moments, points[0].device)
    try:
        with torch.no_grad():
            elbo_a, log_px_a = _elbo_and_log_px(
                fixed_model, guide, points, args, kwargs, eval_samples
            )
        decay = 0.01 ** (1.0 / max(1, int(steps)))  # the rate falls to lr / 100 at the end
        # ClippedAdam's options (its default clip of 10) on the one Adam of every run
        optim = make_optim(lr, clip_norm=10.0, lrd=decay)
        elbo = BetaELBO(num_particles)
        step_model = functools.partial(fixed_model, **kwargs) if kwargs else fixed_model
        step_guide = functools.partial(refined, **kwargs) if kwargs else refined
        for _ in range(int(steps)):
            svi_step(step_model, step_guide, elbo, optim, *points, *args)
        with torch.no_grad():
            elbo_r, log_px_r = _elbo_and_log_px(
                fixed_model, refined, points, args, kwargs, eval_samples
            )
            q = {
                k: (loc.detach().clone(), sd.detach().clone())
                for k, (loc, sd) in refined.params().items()
            }
    finally:
        for key in [k for k in store if k.startswith(name + ".")]:
            del store[key]
    better = elbo_r > elbo_a
    elbo_star = torch.where(better, elbo_r, elbo_a)
    log_px = torch.where(better, log_px_r, log_px_a)
    locs, scales = {}, {}
    for site_name, (loc, sd) in q.items():
        mean0, sd0 = moments[site_name]
        shape = [1] * loc.dim()
        pos = loc.dim() - refined.event_dims[site_name] + plate.dim
        shape[pos] = n
        keep = better.reshape(shape)
        locs[site_name] = torch.where(keep, loc, mean0)
        scales[site_name] = torch.where(keep, sd, sd0)
    return AmortizationGap(elbo_a, elbo_star, log_px, locs, scales, int(steps))
