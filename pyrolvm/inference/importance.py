"""Per-datapoint importance weights ``log w = log p(x, z) - log q(z | x)`` from Pyro traces.

The trace-level machinery shared by the multi-sample objectives
(:class:`~pyrolvm.inference.MultiSampleELBO`) and the log-likelihood evaluator: each site's
log-density is summed over every dimension except the particle dimension and the batch
plate's dimension, giving a (K, B) tensor of log-weights, one column per datapoint. The traces
themselves come from Pyro (``pyro.infer.ELBO``'s vectorized particles and
``pyro.infer.enum.get_importance_trace``).
"""

from collections.abc import Callable
from typing import Any

import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask

from ..errors import ConfigError

#: The name Pyro gives the plate of vectorized particles (``pyro.infer.ELBO``).
PARTICLE_PLATE = "num_particles_vectorized"


def prior_proposal(model: Callable) -> Callable:
    """The model's prior as a proposal: ``model`` with its observed sites hidden, so that its
    trace holds the latent sites drawn from p(z). Used for naive Monte Carlo estimates of p(x)."""
    return poutine.block(model, hide_fn=lambda msg: msg.get("is_observed", False))


def latent_sites(trace: Any) -> list[Any]:
    """The unobserved sample sites of a trace, in execution order (a list of site dicts)."""
    return [s for s in trace.nodes.values() if s["type"] == "sample" and not s["is_observed"]]


def find_batch_plate(model_trace: Any, name: str | None = None) -> Any:
    """The batch plate's frame: the plate named ``name``, else the outermost vectorized plate
    (particles excluded) around the first observed site; ``None`` when there is none.

    Raises:
        ConfigError: ``name`` is given but no site lies in a plate of that name.
    """
    frames = {}
    observed = []
    for site in model_trace.nodes.values():
        if site["type"] != "sample":
            continue
        for f in site["cond_indep_stack"]:
            if f.vectorized and f.name != PARTICLE_PLATE:
                frames.setdefault(f.name, f)
        if site["is_observed"]:
            observed.append(site)
    if name is not None:
        if name not in frames:
            raise ConfigError(
                f"no plate named {name!r} in the model; its plates are {sorted(frames)}"
            )
        return frames[name]
    if not observed:
        return None
    for f in observed[0]["cond_indep_stack"]:
        if f.vectorized and f.name != PARTICLE_PLATE:
            return f
    return None


def sum_to_batch(
    log_p: torch.Tensor, site: Any, rank: int, plate: Any, particles: bool = True
) -> torch.Tensor:
    """Sum the log-density ``log_p`` of one site down to shape (K, B) (or (K, 1) outside any
    batch plate).

    Args:
        log_p (torch.Tensor): the site's (unscaled) log-density, at most ``rank`` dimensions.
        site (dict): the trace site (for its plates and name).
        rank (int): the number of plate dimensions, particles included.
        plate: the batch plate's frame (:func:`find_batch_plate`) or ``None``.
        particles (bool): whether dimension ``-rank`` is the particle plate; without it
            (one particle) a leading dimension of size 1 is added.

    Raises:
        ConfigError: more dimensions than plates (enumerated or unplated batch dimensions), or
            a site outside the batch plate.
    """
    if not isinstance(log_p, torch.Tensor):  # a number (e.g. a masked-out site's 0)
        log_p = torch.tensor(float(log_p), device="cpu")
    if log_p.dim() > rank:
        raise ConfigError(
            f"site {site['name']!r} has log_prob of shape {tuple(log_p.shape)}, more dimensions "
            "than its plates: enumerated or unplated batch dimensions are not supported here"
        )
    log_p = log_p.reshape((1,) * (rank - log_p.dim()) + log_p.shape)
    keep = [0] if particles else []
    if plate is not None:
        if not any(f.name == plate.name for f in site["cond_indep_stack"]):
            raise ConfigError(
                f"site {site['name']!r} lies outside the batch plate {plate.name!r}: per-datapoint "
                "importance weights need every latent and observed site inside that plate "
                "(global latent variables are not supported by this estimator)"
            )
        keep.append(rank + plate.dim)
    dims = [d for d in range(rank) if d not in keep]
    log_p = log_p.sum(dims) if dims else log_p
    return log_p if particles else log_p.unsqueeze(0)


def log_weights(
    model_trace: Any,
    guide_trace: Any,
    max_plate_nesting: int,
    batch_plate: str | None = None,
    particles: bool = True,
    latent_weight: float | torch.Tensor = 1.0,
) -> tuple[torch.Tensor, float]:
    """Per-datapoint log importance weights ``log p(x, z_k) - log q(z_k | x)``, unscaled.

    With ``latent_weight`` = beta != 1 the latent sites' terms are weighted:
    ``log p(x | z_k) + beta * (log p(z_k) - log q(z_k | x))``, whose expectation is the
    beta-weighted ELBO ``E_q log p(x | z) - beta KL(q || p)`` (per-site weight, the model is
    not copied). At 1 the weights are exactly the unweighted ones.

    Args:
        model_trace (pyro.poutine.Trace): the model's trace with computed log-densities (from
            ``pyro.infer.enum.get_importance_trace``), the particles in an outermost plate.
        guide_trace (pyro.poutine.Trace): the guide's, alike.
        max_plate_nesting (int): plate dimensions of the traces, the particle plate included.
        batch_plate (str or None): name of the batch plate (default: see :func:`find_batch_plate`).
        particles (bool): whether the traces have a particle plate (``False`` for K = 1,
            where Pyro does not add one).
        latent_weight (float or torch.Tensor): beta, the weight of the latent sites'
            log-densities (a 0-d tensor inside a compiled step).

    Returns:
        (log_w, scale): ``log_w`` of shape (K, B), in nats; ``scale`` is the likelihood scale
        shared by all sites (from ``pyro.plate(subsample_size=...)`` or ``poutine.scale``), to
        multiply a per-datapoint bound by.

    Raises:
        ConfigError: a site outside the batch plate, or sites with different scales.
    """
    plate = find_batch_plate(model_trace, batch_plate)
    total = 0.0
    scales = set()
    for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
        for site in trace.nodes.values():
            if site["type"] != "sample" or (sign < 0 and site["is_observed"]):
                continue
            log_p = scale_and_mask(site["unscaled_log_prob"], 1.0, site["mask"])
            term = sum_to_batch(log_p, site, max_plate_nesting, plate, particles)
            weighted = isinstance(latent_weight, torch.Tensor) or latent_weight != 1.0
            if weighted and not site["is_observed"]:  # (a tensor: an input of a compiled step)
                term = latent_weight * term
            total = total + sign * term
            s = site["scale"]  # a float, unless poutine.scale was given a tensor
            if isinstance(s, torch.Tensor) and s.numel() != 1:
                raise ConfigError(
                    f"site {site['name']!r} has a per-element scale; importance-weighted "
                    "estimators need one scalar scale per site"
                )
            scales.add(float(s))
    if len(scales) > 1:
        raise ConfigError(
            "importance-weighted estimators need every sample site to carry the same scale "
            f"(subsampling or poutine.scale); found {len(scales)} different scales"
        )
    scale = scales.pop() if scales else 1.0
    log_w = total if isinstance(total, torch.Tensor) else torch.tensor(total, device="cpu")
    if log_w.dim() == 1:
        log_w = log_w.unsqueeze(-1)
    return log_w, scale
