"""The base of every multi-sample objective: K vectorized particles, per-datapoint
log-weights of shape (K, B), plate scaling and the reparameterization check."""

import contextlib
import logging
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from pyro.distributions.util import detach
from pyro.infer import ELBO
from pyro.infer.enum import get_importance_trace
from pyro.poutine import Trace
from torch.distributions import TransformedDistribution

from ...errors import ConfigError
from ..importance import latent_sites, log_weights


@contextlib.contextmanager
def _quiet(logger_name):
    """Raise a logger's level to WARNING for the block (Pyro logs its plate-nesting guess at
    INFO, which the evaluator's several objectives would print once each)."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


class ImportanceWeights(NamedTuple):
    """One draw of K particles for a batch of B datapoints.

    Attributes:
        log_w (torch.Tensor): shape (K, B), ``log p(x_b, z_kb) - log q(z_kb | x_b)`` in nats,
            unscaled.
        scale (float): the sites' common likelihood scale (``N / B`` under a subsampled
            plate, else 1), by which a per-datapoint bound summed over the batch is multiplied.
        model_trace, guide_trace (pyro.poutine.Trace): the traces the weights come from.
    """

    log_w: torch.Tensor
    scale: float
    model_trace: Trace
    guide_trace: Trace


def _transforms(fn):
    """The transforms of a (possibly wrapped: ``Independent``, ``ExpandedDistribution``, ...)
    ``TransformedDistribution``, each part of a ``ComposeTransform`` listed; ``[]`` for any
    other distribution."""
    while not isinstance(fn, TransformedDistribution) and hasattr(fn, "base_dist"):
        fn = fn.base_dist
    out, todo = [], list(getattr(fn, "transforms", []))
    while todo:
        t = todo.pop(0)
        todo[:0] = getattr(t, "parts", [])
        out.append(t)
    return out


def detached_log_prob(site):
    """``log q(z)`` of a guide's sample site at its value z, with the distribution's parameters
    detached and z attached (Roeder et al. 2017, eq. 8): a detached copy of ``site["fn"]``.

    For a flow (a ``TransformedDistribution``) the copy's transforms forget the values cached
    while sampling (which hold the attached base draw), so that the copy inverts them at z with
    the detached parameters: exact for any invertible transform, at the cost of the inverse
    (one network pass per latent dimension for an autoregressive flow such as IAF).

    Raises:
        ConfigError: a transform without an inverse (Pyro's planar and radial flows), whose
            density at a given z cannot be evaluated: such a guide cannot be used with STL or
            DReG.
    """
    fn = detach(site["fn"])
    for t in _transforms(fn):
        if getattr(t, "_cached_x_y", None) is not None:  # torch's cache of size 1
            t._cached_x_y = None, None
    try:
        return fn.log_prob(site["value"])
    except (KeyError, NotImplementedError) as exc:
        raise ConfigError(
            f"the guide's site {site['name']!r} ({type(site['fn']).__name__}) cannot evaluate "
            "its density at a given point with its parameters detached, which STL and DReG "
            f"need (a transform has no inverse: {exc}): use an invertible flow (e.g. IAF) "
            "or another objective (trace, iwae)"
        ) from None


def _stop_guide_params(guide_trace):
    """A copy of ``guide_trace`` whose latent sites' log-densities are evaluated with the
    distribution's parameters detached but the sampled value attached, so that only the path
    derivative through z reaches the guide's parameters (Roeder et al. 2017, eq. 8); see
    :func:`detached_log_prob`."""
    trace = Trace()
    for name, site in guide_trace.nodes.items():
        if site["type"] == "sample" and not site["is_observed"]:
            site = dict(site)
            site["unscaled_log_prob"] = detached_log_prob(site)
        trace.add_node(name, **site)
    return trace


def param_tensors(trace):
    """Unconstrained leaf tensors of the ``param`` sites of a trace (what ``SVI`` updates)."""
    return {
        site["value"].unconstrained() for site in trace.nodes.values() if site["type"] == "param"
    }


def accumulate_grads(params, grads):
    """Add ``grads`` (``None`` entries skipped) into the ``.grad`` of ``params``."""
    for p, g in zip(params, grads, strict=True):
        if g is None:
            continue
        if p.grad is None:
            p.grad = g.detach().clone()
        else:
            p.grad += g.detach()


class MultiSampleELBO(ELBO):
    r"""Base class of the multi-sample objectives (IWAE, DReG, STL, VIMCO, ...): a
    ``pyro.infer.ELBO`` whose K particles are vectorized in Pyro's outermost particle plate and
    whose log-weights are kept **per datapoint**, shape (K, B), so that each subclass is the
    few lines of its bound and surrogate.

    A subclass sets

    - :meth:`bound`: the per-datapoint bound from the (K, B) log-weights (default: the IWAE
      bound :math:`\log \frac1K \sum_k w_k`); :meth:`loss` reports minus its batch sum times
      the plate scale, in nats, like ``Trace_ELBO``;
    - :meth:`surrogate`: the tensor whose gradient is the estimator (default: minus the bound,
      differentiated by reparameterization);
    - ``stop_guide_params``: evaluate log q with the guide's parameters detached in the
      surrogate (path derivatives only: STL, DReG);
    - ``needs_rsample``: refuse guides with non-reparameterized latent sites (``False`` for
      score-function estimators such as VIMCO).

    Under a subsampled plate (``pyro.plate(..., subsample_size=B)``, or ``poutine.scale``)
    the scale multiplies the per-datapoint bound *outside* the log-sum-exp, which is the
    unbiased estimate of the full-data bound. (Pyro's ``RenyiELBO`` with ``alpha=0`` equals
    :class:`IWAE` on a plain batch, since it too keeps plate dimensions, but it applies the
    scale inside the log-sum-exp.)

    Args:
        num_particles (int): K >= 1.
        max_plate_nesting (int): plate dimensions of the model (guessed by one run if omitted,
            by ``pyro.infer.ELBO``).
        batch_plate (str or None): name of the batch plate; default the outermost plate around
            the first observed site.

    Raises:
        ConfigError: K < 1; a non-reparameterizable guide site where ``needs_rsample``; a
            latent site outside the batch plate; sites with different scales.
    """

    stop_guide_params = False
    needs_rsample = True
    #: beta, the weight of the latent sites' log-densities in the log-weights (1: the plain
    #: ``log p(x, z) - log q(z | x)``; see :func:`~pyrolvm.inference.log_weights`).
    latent_weight = 1.0
    #: Float attributes that change between steps (an annealed weight): a compiled step
    #: (:mod:`pyrolvm.inference.compiled`) takes them as 0-d tensor inputs, not constants, so
    #: they may enter arithmetic but no Python branch.
    graph_inputs: tuple[str, ...] = ()

    def __init__(
        self,
        num_particles: int = 5,
        max_plate_nesting: float = float("inf"),
        batch_plate: str | None = None,
    ) -> None:
        if int(num_particles) < 1:
            raise ConfigError(f"num_particles must be >= 1, got {num_particles}")
        super().__init__(
            num_particles=int(num_particles),
            max_plate_nesting=max_plate_nesting,
            vectorize_particles=True,
        )
        self.batch_plate = batch_plate

    def _get_trace(self, model, guide, args, kwargs):
        return get_importance_trace("flat", self.max_plate_nesting, model, guide, args, kwargs)

    def guess_plate_nesting(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any):
        """Set ``max_plate_nesting`` by one run of guide and model (``pyro.infer.ELBO``'s
        guess, its log line silenced), if it is not known yet; the run's draws are discarded."""
        if self.max_plate_nesting == float("inf"):
            with _quiet("pyro.infer.elbo"):
                self._guess_max_plate_nesting(model, guide, args, kwargs)

    def importance_weights(
        self,
        model: Callable,
        guide: Callable,
        *args: Any,
        stop_guide_params: bool = False,
        check_rsample: bool = True,
        **kwargs: Any,
    ) -> ImportanceWeights:
        """Run guide and model once with K vectorized particles.

        Args:
            model (callable): the Pyro model, called as ``model(*args, **kwargs)``.
            guide (callable): its guide, with the model's signature.
            stop_guide_params (bool): log q evaluated with the guide's parameters detached.
            check_rsample (bool): refuse non-reparameterized guide sites where the objective
                ``needs_rsample`` (``False`` for mere evaluation).

        Returns:
            ImportanceWeights
        """
        if self.max_plate_nesting == float("inf"):  # the first call guesses it (and logs)
            with _quiet("pyro.infer.elbo"):
                model_trace, guide_trace = next(self._get_traces(model, guide, args, kwargs))
        else:
            model_trace, guide_trace = next(self._get_traces(model, guide, args, kwargs))
        if self.needs_rsample and check_rsample:
            for site in latent_sites(guide_trace):
                if not site["fn"].has_rsample:
                    raise ConfigError(
                        f"{type(self).__name__} needs reparameterized guide sites, but "
                        f"{site['name']!r} ({type(site['fn']).__name__}) has no rsample: use "
                        "VIMCO or a score-function estimator (TraceGraph_ELBO) instead"
                    )
        if stop_guide_params:
            guide_trace = _stop_guide_params(guide_trace)
        log_w, scale = log_weights(
            model_trace,
            guide_trace,
            int(self.max_plate_nesting),
            self.batch_plate,
            particles=self.num_particles > 1,
            latent_weight=self.latent_weight,
        )
        return ImportanceWeights(log_w, scale, model_trace, guide_trace)

    def bound(self, log_w: torch.Tensor) -> torch.Tensor:
        """The per-datapoint bound, shape (B,), from log-weights of shape (K, B) (nats).
        Default: the IWAE bound ``logsumexp_k(log w) - log K``."""
        return torch.logsumexp(log_w, dim=0) - math.log(self.num_particles)

    def surrogate(self, weights: ImportanceWeights) -> torch.Tensor:
        """The 0-d tensor whose gradient is the estimator (default: minus the bound summed over
        the batch, times the scale)."""
        return -weights.scale * self.bound(weights.log_w).sum()

    def differentiable_loss(
        self, model: Callable, guide: Callable, *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        """The surrogate loss as a differentiable 0-d tensor (nats)."""
        weights = self.importance_weights(
            model, guide, *args, stop_guide_params=self.stop_guide_params, **kwargs
        )
        return self.surrogate(weights)

    def loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> float:
        """Minus the bound summed over the batch, times the scale, as a float (nats)."""
        with torch.no_grad():
            weights = self.importance_weights(model, guide, *args, **kwargs)
            return -weights.scale * self.bound(weights.log_w).sum().item()

    def loss_and_grads(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> float:
        """The loss as a float (nats); the estimator's gradient is accumulated into the
        parameters' ``.grad``."""
        return self.loss_tensor_and_grads(model, guide, *args, **kwargs).item()

    def loss_tensor_and_grads(
        self, model: Callable, guide: Callable, *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        """:meth:`loss_and_grads` with the loss as a detached 0-d float64 tensor on the data's
        device instead of a float, so that a training step needs no host synchronisation
        (:func:`pyrolvm.inference.train` reads the values only when it prints them)."""
        weights = self.importance_weights(
            model, guide, *args, stop_guide_params=self.stop_guide_params, **kwargs
        )
        surrogate = self.surrogate(weights)
        if surrogate.requires_grad:
            surrogate.backward(retain_graph=self.retain_graph)
        return -weights.scale * self.bound(weights.log_w.detach()).sum().double()


class MinibatchELBO(MultiSampleELBO):
    """A :class:`MultiSampleELBO` whose objective is not a sum of per-datapoint bounds but a
    function of the whole minibatch (free bits, MMD): a subclass sets :meth:`batch_bound`,
    the objective summed over the batch before the plate scale; the loss is minus it times
    the scale, the surrogate its reparameterized gradient."""

    def bound(self, log_w):
        """The per-datapoint ELBO estimate (the mean of the log-weights over K), shape (B,)."""
        return log_w.mean(0)

    def batch_bound(self, weights):
        """The objective of the batch (0-d tensor, nats); default the ELBO summed."""
        return self.bound(weights.log_w).sum()

    def surrogate(self, weights):
        return -weights.scale * self.batch_bound(weights)

    def loss(self, model, guide, *args, **kwargs):
        """Minus the objective of the batch, times the scale, as a float (nats)."""
        with torch.no_grad():
            weights = self.importance_weights(model, guide, *args, **kwargs)
            return -weights.scale * self.batch_bound(weights).item()

    def loss_tensor_and_grads(self, model, guide, *args, **kwargs):
        """The loss as a detached 0-d float64 tensor (nats); the gradient accumulated into
        ``.grad``."""
        weights = self.importance_weights(
            model, guide, *args, stop_guide_params=self.stop_guide_params, **kwargs
        )
        total = self.batch_bound(weights)
        surrogate = -weights.scale * total
        if surrogate.requires_grad:
            surrogate.backward(retain_graph=self.retain_graph)
        return -weights.scale * total.detach().double()
