"""The base of every multi-sample objective: K vectorized particles, per-datapoint
log-weights of shape (K, B), plate scaling and the reparameterization check."""

import contextlib
import logging
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import pyro
import torch
from pyro import poutine
from pyro.distributions.util import detach
from pyro.infer import ELBO
from pyro.infer.enum import get_importance_trace
from pyro.poutine import Trace
from pyro.poutine.util import prune_subsample_sites
from torch.distributions import TransformedDistribution

from ...errors import ConfigError
from ..importance import guide_factor_sites, is_deterministic, latent_sites, log_weights


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


def _rerun_with_draws_fixed(guide, full_trace, args, kwargs):
    """The guide run once more with every draw of ``full_trace`` (its unpruned trace, the
    subsample indices included) replayed *detached*, its log-densities computed: a function
    of the guide's parameters at fixed z, ``log q_phi(stop(z))``."""
    fixed = Trace()
    for name, site in full_trace.nodes.items():
        site = dict(site)
        if site["type"] == "sample" and not site["is_observed"]:
            site["value"] = site["value"].detach()
        fixed.add_node(name, **site)
    with pyro.validation_enabled(False):  # the first run was checked
        trace = poutine.trace(poutine.replay(guide, trace=fixed)).get_trace(*args, **kwargs)
    trace = prune_subsample_sites(trace)
    sites: list[Any] = list(trace.nodes.values())
    for site in sites:
        if site["type"] == "sample" and not is_deterministic(site):
            try:
                site["unscaled_log_prob"] = site["fn"].log_prob(site["value"])
            except (KeyError, NotImplementedError) as exc:
                raise ConfigError(
                    f"the guide's site {site['name']!r} ({type(site['fn']).__name__}) cannot "
                    "evaluate its density at a given point, which STL and DReG need to hold "
                    f"the guide's parameters fixed (a transform has no inverse: {exc}): use an "
                    "invertible flow (e.g. IAF) or another objective (trace, iwae)"
                ) from None
    return trace


def _reaches(tensor, targets, stop=None):
    """Whether the autograd graph of ``tensor`` reaches one of the nodes ``targets`` (the
    ``grad_fn`` of earlier draws) other than through the node ``stop`` (the site's own draw)."""
    node = getattr(tensor, "grad_fn", None)
    seen, todo = set(), [node] if node is not None else []
    while todo:
        node = todo.pop()
        if node in targets:
            return True
        if node is stop or node in seen:
            continue
        seen.add(node)
        todo.extend(n for n, _ in node.next_functions if n is not None)
    return False


def _draw_dependent_terms(guide_trace):
    """Names of the guide's log q terms (latent sites, factors) that depend on an earlier draw
    other than through their own value: a site whose distribution is computed from an earlier
    draw (q(z2 | z1)), a factor of the draws. Found in the autograd graph; a draw that is a
    leaf tensor (no graph to follow) makes every later term count."""
    draws, leaf, out = set(), False, set()
    for name, site in guide_trace.nodes.items():
        if site["type"] != "sample" or is_deterministic(site):
            continue
        value = site["value"]
        own = getattr(value, "grad_fn", None) if not site["is_observed"] else None
        if leaf or (draws and _reaches(site["unscaled_log_prob"], draws, own)):
            out.add(name)
        if not site["is_observed"] and isinstance(value, torch.Tensor) and value.requires_grad:
            if value.grad_fn is None:
                leaf = True
            else:
                draws.add(value.grad_fn)
    return out


def _stop_guide_params(guide_trace, rerun=None, dependent=()):
    """A copy of ``guide_trace`` whose log q (latent sites and factors) is a function of the
    draws z with the guide's parameters phi held fixed, so that only the path derivative
    through z reaches phi (Roeder et al. 2017, eq. 8; Tucker et al. 2019, eq. 5).

    A term whose distribution depends on phi (and x) only, not on an earlier draw (an
    amortized encoder's site, each site of a mean-field guide), gets a detached copy of its
    distribution (:func:`detached_log_prob`; a factor: its value detached). A term in
    ``dependent`` (:func:`_draw_dependent_terms`: q(z2 | z1), whose location and scale carry
    both phi and z1, or a factor of the draws) cannot be detached without losing the path
    ``d log q(z2 | z1) / d z1 * d z1 / d phi``: its ``log q_phi(z)`` (z attached) is corrected
    by the guide's second run with the draws detached, ``rerun``
    (:func:`_rerun_with_draws_fixed`): ``log q_phi(z) - (log q_phi(stop z) - stop(log
    q_phi(stop z)))``, the same value (exactly: ``t - t.detach()`` is 0), whose gradient is
    the total derivative minus the score term ``d log q_phi(z) / d phi`` at fixed z, i.e. the
    path derivative alone, for any guide."""
    trace = Trace()
    for name, site in guide_trace.nodes.items():
        if site["type"] == "sample" and not is_deterministic(site):
            if name in dependent:
                assert rerun is not None
                if name not in rerun.nodes:
                    raise ConfigError(
                        f"the guide's site {name!r} is missing from its second run with the "
                        "draws held fixed (STL and DReG run the guide twice): the guide must "
                        "have a static structure given its draws"
                    )
                fixed = rerun.nodes[name]["unscaled_log_prob"]
                log_q = site["unscaled_log_prob"] - (fixed - fixed.detach())
            elif site["is_observed"]:
                log_q = torch.as_tensor(site["unscaled_log_prob"]).detach()
            else:
                log_q = detached_log_prob(site)
            site = dict(site, unscaled_log_prob=log_q)
        trace.add_node(name, **site)
    return trace


def _check_rerun(guide_trace, rerun):
    """Refuse a guide whose second run (draws fixed) gives other log-densities than the first:
    a guide with randomness of its own (dropout in training mode), which the path derivative
    cannot hold fixed."""
    for name, site in guide_trace.nodes.items():
        if site["type"] != "sample" or is_deterministic(site) or name not in rerun.nodes:
            continue
        a = torch.as_tensor(site["unscaled_log_prob"]).detach()
        b = torch.as_tensor(rerun.nodes[name]["unscaled_log_prob"]).detach()
        if a.shape != b.shape or not torch.allclose(a, b, rtol=1e-4, atol=1e-4):
            raise ConfigError(
                f"STL and DReG run the guide a second time with its draws held fixed, but its "
                f"site {name!r} got another log-density then: the guide must be a "
                "deterministic function of its arguments, parameters and draws (put dropout "
                "layers in eval mode), or use IWAE"
            )


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
    - ``stop_guide_params``: evaluate log q with the guide's parameters held fixed in the
      surrogate, the draws attached (path derivatives only: STL, DReG). A site whose
      distribution depends on the guide's parameters and the data only (an amortized
      encoder, a mean-field guide) gets a detached copy of its distribution. A guide with a
      site computed from an earlier draw (q(z1) q(z2 | z1)) or a factor of the draws is run
      a second time with its draws replayed detached, and for those terms
      ``log q_phi(z) - (log q_phi(stop z) - stop(log q_phi(stop z)))`` keeps log q's value and
      the path through every draw while removing the score term at fixed z. Such a guide
      must be a deterministic function of its arguments, parameters and draws (no dropout
      in training mode: refused with a ``ConfigError`` on the first call);
    - ``needs_rsample``: refuse guides with non-reparameterized latent sites (``False`` for
      score-function estimators such as VIMCO).

    The log-weights follow ``Trace_ELBO``: a guide's ``pyro.factor`` is part of log q
    (subtracted; one declared ``has_rsample=False`` is a score-function term, refused where
    ``needs_rsample``), a ``pyro.deterministic`` record adds nothing. A pair without latent
    sites gets K equal weights (its exact log-likelihood). A guide site configured for
    enumeration (``infer={"enumerate": ...}``) is refused: only ``TraceEnum_ELBO``
    enumerates.

    Under a subsampled plate (``pyro.plate(..., subsample_size=B)``, or ``poutine.scale``)
    the scale multiplies the per-datapoint bound *outside* the log-sum-exp, which is the
    unbiased estimate of the full-data bound. (Pyro's ``RenyiELBO`` with ``alpha=0`` equals
    :class:`IWAE` on a plain batch, since it too keeps plate dimensions, but it applies the
    scale inside the log-sum-exp.)

    Args:
        num_particles (int): K >= 1.
        max_plate_nesting (int): plate dimensions of the model (guessed by one run if omitted,
            by ``pyro.infer.ELBO``).
        batch_plate (str or None): name of the batch plate; default the outermost plate
            enclosing every observed data site (``pyro.deterministic`` records and factors
            not counted; see :func:`~pyrolvm.inference.find_batch_plate`), none (one joint
            weight per batch) if no plate encloses them all.

    Raises:
        ConfigError: K < 1; a non-reparameterizable guide site (or guide factor) where
            ``needs_rsample``; a guide site configured for enumeration; a latent site outside
            the batch plate (the message names ``Trace_ELBO`` and ``batch_plate=``); sites
            with different scales (it names ``make_elbo("beta")`` for KL annealing).
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
        self._record_guide = False
        self._recorded = None
        self._rerun_checked = False

    def _get_trace(self, model, guide, args, kwargs):
        if not self._record_guide:
            return get_importance_trace("flat", self.max_plate_nesting, model, guide, args, kwargs)
        # keep the guide (with its particle plate) and its unpruned trace (subsample indices
        # included) for a second run with the draws fixed (_stop_guide_params)
        recorder = poutine.trace(guide)
        traces = get_importance_trace("flat", self.max_plate_nesting, model, recorder, args, kwargs)
        self._recorded = (guide, recorder.trace)
        return traces

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
        self._record_guide = stop_guide_params
        try:
            if self.max_plate_nesting == float("inf"):  # the first call guesses it (and logs)
                with _quiet("pyro.infer.elbo"):
                    model_trace, guide_trace = next(self._get_traces(model, guide, args, kwargs))
            else:
                model_trace, guide_trace = next(self._get_traces(model, guide, args, kwargs))
        finally:
            self._record_guide = False
        if stop_guide_params:
            guide_trace = self._stop_guide_params(guide_trace, args, kwargs)
        # what no importance-weighted estimator takes (global latents, mixed scales) first,
        # then what this one does not (non-reparameterized sites, enumeration)
        log_w, scale = log_weights(
            model_trace,
            guide_trace,
            int(self.max_plate_nesting),
            self.batch_plate,
            particles=self.num_particles > 1,
            latent_weight=self.latent_weight,
        )
        if check_rsample:
            self.check_guide(guide_trace)
        if log_w.shape[0] != self.num_particles:
            # no site carries the particle dimension (no latent site in the pair): every
            # particle has the same weight
            log_w = log_w.expand(self.num_particles, log_w.shape[1])
        return ImportanceWeights(log_w, scale, model_trace, guide_trace)

    def check_guide(self, guide_trace: Any) -> None:
        """Refuse a guide this objective cannot estimate right: a site configured for
        enumeration (``infer={"enumerate": ...}``, which only ``TraceEnum_ELBO`` honours; Pyro's
        own ELBOs warn), and where ``needs_rsample``, a latent site without ``rsample`` or a
        factor declared ``has_rsample=False`` (both need a score-function term).

        Raises:
            ConfigError: naming the site and what to use instead.
        """
        name = type(self).__name__
        for site in guide_trace.nodes.values():
            if site["type"] == "sample" and site["infer"].get("enumerate"):
                raise ConfigError(
                    f"the guide's site {site['name']!r} is configured for enumeration "
                    f"(infer={{'enumerate': {site['infer']['enumerate']!r}}}), which {name} "
                    "does not do (it would draw the site): use Pyro's TraceEnum_ELBO to "
                    "enumerate it, or remove the enumerate flag (config_enumerate) to sample it"
                )
        if not self.needs_rsample:
            return
        for site in latent_sites(guide_trace):
            if not site["fn"].has_rsample:
                raise ConfigError(
                    f"{name} needs reparameterized guide sites, but "
                    f"{site['name']!r} ({type(site['fn']).__name__}) has no rsample: use "
                    "VIMCO or a score-function estimator (TraceGraph_ELBO) instead"
                )
        for site in guide_factor_sites(guide_trace):
            if not site["fn"].has_rsample:
                raise ConfigError(
                    f"{name} needs reparameterized guide sites, but the guide's factor "
                    f"{site['name']!r} is declared has_rsample=False (a score-function term): "
                    "use VIMCO or a score-function estimator (TraceGraph_ELBO) instead"
                )

    def _stop_guide_params(self, guide_trace, args, kwargs):
        """``guide_trace`` with log q a function of the draws only (see
        :func:`_stop_guide_params`); the guide runs a second time only if a term depends on
        an earlier draw."""
        guide, full = self._recorded or (None, None)
        self._recorded = None
        dependent = _draw_dependent_terms(guide_trace)
        if not dependent:
            return _stop_guide_params(guide_trace)
        rerun = _rerun_with_draws_fixed(guide, full, args, kwargs)
        if not self._rerun_checked:
            _check_rerun(guide_trace, rerun)
            self._rerun_checked = True
        return _stop_guide_params(guide_trace, rerun, dependent)

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
