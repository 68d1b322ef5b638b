"""ELBO objectives as ``pyro.infer.ELBO`` subclasses, and a registry of them by name.

Every class here is usable as ``SVI(model, guide, optim, loss=...)``. Its ``loss`` is the
negative bound summed over the batch plate (nats), like ``Trace_ELBO``'s.
"""

import math

import torch
from pyro.infer import ELBO, Trace_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO

from ..errors import ConfigError
from .importance import guess_max_plate_nesting, log_weights, vectorized_traces


class IWAE(ELBO):
    r"""The importance-weighted bound of Burda, Grosse & Salakhutdinov (2016), eq. (8):

    .. math::
        \mathcal{L}_K(x) = \mathbb{E}_{z_{1:K} \sim q(z|x)}
        \Big[\log \frac{1}{K} \sum_{k=1}^K \frac{p(x, z_k)}{q(z_k | x)}\Big]
        \le \log p(x),

    computed **per datapoint** (the log-sum-exp runs over particles separately for each element
    of the batch plate) with the K particles vectorized in one outermost plate. Its gradient is
    the reparameterized one of eq. (13), unbiased for :math:`\nabla \mathcal{L}_K`; it needs a
    guide whose latent sites are all reparameterizable and inside the batch plate. K = 1 is
    the standard ELBO. :math:`\mathcal{L}_K` is non-decreasing in K (Burda et al., Theorem 1).

    The loss is :math:`-\sum_n \mathcal{L}_K(x_n)` over the batch, times the sites' common
    scale (e.g. ``full_size / batch_size`` under a subsampled plate).

    Args:
        num_particles (int): K >= 1.
        max_plate_nesting (int): plate dimensions of the model (guessed by one run if omitted).
        batch_plate (str or None): name of the batch plate; default the outermost plate around
            the first observed site.

    Raises:
        ConfigError: K < 1; a non-reparameterizable guide site (use a score-function
        estimator); a latent site outside the batch plate.
    """

    def __init__(self, num_particles=5, max_plate_nesting=float("inf"), batch_plate=None):
        if int(num_particles) < 1:
            raise ConfigError(f"num_particles must be >= 1, got {num_particles}")
        super().__init__(num_particles=int(num_particles), max_plate_nesting=max_plate_nesting)
        self.batch_plate = batch_plate

    def _get_trace(self, model, guide, args, kwargs):
        """One (model_trace, guide_trace) pair with the particles in an outermost plate."""
        if self.max_plate_nesting == float("inf"):
            self.max_plate_nesting = guess_max_plate_nesting(model, guide, args, kwargs)
        return vectorized_traces(
            model, guide, args, kwargs, self.num_particles, self.max_plate_nesting
        )

    def _log_weights(self, model, guide, args, kwargs):
        model_trace, guide_trace = self._get_trace(model, guide, args, kwargs)
        for site in guide_trace.nodes.values():
            if site["type"] == "sample" and not site["is_observed"]:
                if not site["fn"].has_rsample:
                    raise ConfigError(
                        f"{type(self).__name__} needs reparameterized guide sites, but "
                        f"{site['name']!r} ({type(site['fn']).__name__}) has no rsample: use a "
                        "score-function estimator (TraceGraph_ELBO) instead"
                    )
        return log_weights(model_trace, guide_trace, self.max_plate_nesting, self.batch_plate)

    def differentiable_loss(self, model, guide, *args, **kwargs):
        """The negative bound summed over the batch, as a differentiable 0-d tensor (nats)."""
        log_w, scale = self._log_weights(model, guide, args, kwargs)
        bound = torch.logsumexp(log_w, dim=0) - math.log(self.num_particles)
        return -scale * bound.sum()

    def loss(self, model, guide, *args, **kwargs):
        """The negative bound summed over the batch, as a float (nats)."""
        with torch.no_grad():
            return self.differentiable_loss(model, guide, *args, **kwargs).item()

    def loss_and_grads(self, model, guide, *args, **kwargs):
        """The loss as a float; its gradient is accumulated into the parameters' ``.grad``."""
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        if loss.requires_grad:
            loss.backward(retain_graph=self.retain_graph)
        return loss.item()


def _trace(num_particles):
    return Trace_ELBO(num_particles=num_particles, vectorize_particles=num_particles > 1)


def _meanfield(num_particles):
    return TraceMeanField_ELBO(num_particles=num_particles, vectorize_particles=num_particles > 1)


def _tracegraph(num_particles):
    return TraceGraph_ELBO(num_particles=num_particles, vectorize_particles=num_particles > 1)


def _dreg(num_particles):
    from .estimators import DReG

    return DReG(num_particles)


def _stl(num_particles):
    from .estimators import STL

    return STL(num_particles)


def _vimco(num_particles):
    from .estimators import VIMCO

    return VIMCO(num_particles)


#: Objectives by the names the CLI uses: each maps ``num_particles`` to an ELBO instance.
ELBOS = {
    "trace": _trace,
    "meanfield": _meanfield,
    "tracegraph": _tracegraph,
    "iwae": IWAE,
    "dreg": _dreg,
    "stl": _stl,
    "vimco": _vimco,
}


def make_elbo(name, num_particles=1):
    """Build an objective by name (see :data:`ELBOS`): ``trace`` (``Trace_ELBO``), ``meanfield``
    (``TraceMeanField_ELBO``, analytic KL where available), ``tracegraph`` (``TraceGraph_ELBO``,
    score function with Rao-Blackwellization and the guide's baselines), ``iwae`` (:class:`IWAE`),
    ``dreg``, ``stl``, ``vimco`` (:mod:`pyrolvm.inference.estimators`; VIMCO needs
    num_particles >= 2).

    Raises:
        ConfigError: unknown name, or num_particles < 1.
    """
    if name not in ELBOS:
        raise ConfigError(f"unknown ELBO {name!r}: choose one of {', '.join(ELBOS)}")
    if int(num_particles) < 1:
        raise ConfigError(f"num_particles must be >= 1, got {num_particles}")
    return ELBOS[name](int(num_particles))
