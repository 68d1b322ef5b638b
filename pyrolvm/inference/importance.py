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

_SCALE_REMEDY = (
    "for KL annealing or a beta-weighted KL use make_elbo('beta', beta=..., anneal=...) "
    "instead of poutine.scale; for a subsampled plate put every site inside it (naming it "
    "with batch_plate=... if needed); or use Trace_ELBO, which allows per-site scales"
)


def prior_proposal(model: Callable) -> Callable:
    """The model's prior as a proposal: ``model`` with its observed sites hidden, so that its
    trace holds the latent sites drawn from p(z). Used for naive Monte Carlo estimates of p(x)."""
    return poutine.block(model, hide_fn=lambda msg: msg.get("is_observed", False))


def latent_sites(trace: Any) -> list[Any]:
    """The unobserved sample sites of a trace, in execution order (a list of site dicts)."""
    return [s for s in trace.nodes.values() if s["type"] == "sample" and not s["is_observed"]]


def is_deterministic(site: Any) -> bool:
    """Whether a sample site is a ``pyro.deterministic`` record (Pyro 1.9 writes it as an
    observed, masked ``Delta`` with ``infer={"_deterministic": True}``): it adds nothing to any
    density and is skipped by the importance weights and the batch-plate search."""
    return bool(site["infer"].get("_deterministic"))


def is_factor(site: Any) -> bool:
    """Whether a sample site is a ``pyro.factor`` (an observed ``Unit`` site that Pyro marks
    ``infer={"is_auxiliary": True}``)."""
    return bool(site["infer"].get("is_auxiliary")) and type(site["fn"]).__name__ == "Unit"


def guide_factor_sites(trace: Any) -> list[Any]:
    """The observed sample sites of a guide's trace other than ``pyro.deterministic`` records:
    its ``pyro.factor`` statements (and any observed site), whose log-densities are part of
    log q, as in ``Trace_ELBO``."""
    return [
        s
        for s in trace.nodes.values()
        if s["type"] == "sample" and s["is_observed"] and not is_deterministic(s)
    ]


def _frames(site: Any) -> list[Any]:
    """The vectorized plates around a site, particles excluded, outermost first."""
    return [f for f in site["cond_indep_stack"] if f.vectorized and f.name != PARTICLE_PLATE]


def find_batch_plate(model_trace: Any, name: str | None = None) -> Any:
    """The batch plate's frame: the plate named ``name``, else the outermost vectorized plate
    (particles excluded) that encloses every observed site carrying data; ``None`` when there
    is none (the importance weights are then one joint weight per batch).

    The observed sites carrying data are the model's observed sample sites other than
    ``pyro.deterministic`` records (never data) and ``pyro.factor`` statements (used only when
    the model observes nothing else).

    Raises:
        ConfigError: ``name`` is given but no site lies in a plate of that name.
    """
    frames = {}
    observed, factors = [], []
    for site in model_trace.nodes.values():
        if site["type"] != "sample" or is_deterministic(site):
            continue
        for f in _frames(site):
            frames.setdefault(f.name, f)
        if site["is_observed"]:
            (factors if is_factor(site) else observed).append(site)
    if name is not None:
        if name not in frames:
            raise ConfigError(
                f"no plate named {name!r} in the model; its plates are {sorted(frames)}"
            )
        return frames[name]
    observed = observed or factors
    if not observed:
        return None
    shared = [
        f
        for f in _frames(observed[0])
        if all(any(g.name == f.name for g in _frames(s)) for s in observed[1:])
    ]
    return shared[0] if shared else None


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
    if not isinstance(log_p, torch.Tensor):  # a number (e.g. a masked-out site's 0): a tensor
        value = site.get("value")  # where the site's value lies (and in its dtype if real)
        if isinstance(value, torch.Tensor):
            dtype = value.dtype if value.is_floating_point() else None
            log_p = torch.full((), float(log_p), dtype=dtype, device=value.device)
        else:
            log_p = torch.full((), float(log_p), device="cpu")
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
                f"site {site['name']!r} lies outside the batch plate {plate.name!r} (a global "
                "latent variable or factor): per-datapoint importance weights need every "
                "latent and observed site inside that plate. Use Trace_ELBO "
                "(make_elbo('trace')) for a model with global latent variables, or name the "
                "plate over the datapoints with batch_plate=... if it is not "
                f"{plate.name!r}"
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

    As in ``Trace_ELBO``, log q includes the guide's observed sites (its ``pyro.factor``
    statements); ``pyro.deterministic`` records (model or guide) add nothing and are skipped.

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
        (log_w, scale): ``log_w`` of shape (K, B), in nats ((1, B) if no site carries the
        particle dimension, (1, 1) for a pair without sites); ``scale`` is the likelihood scale
        shared by all sites (from ``pyro.plate(subsample_size=...)`` or ``poutine.scale``), to
        multiply a per-datapoint bound by.

    Raises:
        ConfigError: a site outside the batch plate (naming ``Trace_ELBO`` and
            ``batch_plate=``), or sites with different scales (naming ``make_elbo("beta")``).
    """
    plate = find_batch_plate(model_trace, batch_plate)
    total = 0.0
    scales: dict[float, list[str]] = {}
    for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
        for site in trace.nodes.values():
            if site["type"] != "sample" or is_deterministic(site):
                continue
            log_p = scale_and_mask(site["unscaled_log_prob"], 1.0, site["mask"])
            term = sum_to_batch(log_p, site, max_plate_nesting, plate, particles)
            # beta weighs log p(z) and log q(z), a guide's factors being part of log q (a
            # tensor beta: an input of a compiled step)
            weighted = isinstance(latent_weight, torch.Tensor) or latent_weight != 1.0
            if weighted and (sign < 0 or not site["is_observed"]):
                term = latent_weight * term
            total = total + sign * term
            s = site["scale"]  # a float, unless poutine.scale was given a tensor
            if isinstance(s, torch.Tensor) and s.numel() != 1:
                raise ConfigError(
                    f"site {site['name']!r} has a per-element scale (poutine.scale with a "
                    "tensor); importance-weighted estimators need one scalar scale shared by "
                    "all sites: " + _SCALE_REMEDY
                )
            scales.setdefault(float(s), []).append(site["name"])
    if len(scales) > 1:
        found = "; ".join(f"{k:g} at {', '.join(map(repr, v))}" for k, v in scales.items())
        raise ConfigError(
            "importance-weighted estimators need every sample site to carry the same scale "
            f"(a subsampled plate's N / B), but the scales differ: {found}. " + _SCALE_REMEDY
        )
    scale = next(iter(scales)) if scales else 1.0
    if not isinstance(total, torch.Tensor):  # no site at all: a number, where the values lie
        values = [
            site["value"]
            for trace in (model_trace, guide_trace)
            for site in trace.nodes.values()
            if isinstance(site.get("value"), torch.Tensor)
        ]
        total = torch.full((), float(total), device=values[0].device if values else "cpu")
    log_w = total
    if log_w.dim() == 0:  # no site at all: one weight, log 1 = 0
        log_w = log_w.reshape(1, 1)
    elif log_w.dim() == 1:
        log_w = log_w.unsqueeze(-1)
    return log_w, scale
