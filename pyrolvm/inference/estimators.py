"""Multi-sample gradient estimators as ``pyro.infer.ELBO`` subclasses: DReG, STL and VIMCO.

All three reuse :class:`~pyrolvm.inference.elbos.IWAE`'s vectorized traces and per-datapoint
log-weights (:mod:`pyrolvm.inference.importance`); they differ from it only in the surrogate
whose gradient is accumulated. The reported loss is the negative bound in nats (the IWAE bound
for DReG and VIMCO, the ELBO for STL), summed over the batch plate and multiplied by the sites'
common scale, like ``Trace_ELBO``'s.
"""

import math

import torch
from pyro.distributions.util import detach, scale_and_mask
from pyro.poutine import Trace

from ..errors import ConfigError
from .elbos import IWAE
from .importance import _reduce, find_batch_plate, log_weights


def _latent_sites(trace):
    return [s for s in trace.nodes.values() if s["type"] == "sample" and not s["is_observed"]]


def _param_tensors(trace):
    """Unconstrained leaf tensors of the ``param`` sites of a trace (what ``SVI`` updates)."""
    return {
        site["value"].unconstrained()
        for site in trace.nodes.values()
        if site["type"] == "param"
    }


def _stop_guide_params(guide_trace):
    """A copy of ``guide_trace`` whose latent sites' log-densities are evaluated with the
    distribution's parameters detached but the sampled value attached, so that only the path
    derivative through z reaches the guide's parameters (Roeder et al. 2017, eq. 8)."""
    trace = Trace()
    for name, site in guide_trace.nodes.items():
        if site["type"] == "sample" and not site["is_observed"]:
            site = dict(site)
            site["unscaled_log_prob"] = detach(site["fn"]).log_prob(site["value"])
        trace.add_node(name, **site)
    return trace


class _MultiSampleELBO(IWAE):
    """Shared parts of the multi-sample estimators below: vectorized traces, per-datapoint
    log-weights, the reported bound."""

    def _traces_and_weights(self, model, guide, args, kwargs, stop_guide_params):
        model_trace, guide_trace = self._get_trace(model, guide, args, kwargs)
        if stop_guide_params:
            self._check_reparameterized(guide_trace)
            guide_trace = _stop_guide_params(guide_trace)
        log_w, scale = log_weights(
            model_trace, guide_trace, self.max_plate_nesting, self.batch_plate
        )
        return model_trace, guide_trace, log_w, scale

    def _check_reparameterized(self, guide_trace):
        for site in _latent_sites(guide_trace):
            if not site["fn"].has_rsample:
                raise ConfigError(
                    f"{type(self).__name__} needs reparameterized guide sites, but "
                    f"{site['name']!r} ({type(site['fn']).__name__}) has no rsample: use VIMCO "
                    "or a score-function estimator (TraceGraph_ELBO) instead"
                )

    def _bound(self, log_w):
        """Per-datapoint IWAE bound, shape (B,)."""
        return torch.logsumexp(log_w, dim=0) - math.log(self.num_particles)

    def loss(self, model, guide, *args, **kwargs):
        """The negative IWAE bound summed over the batch, as a float (nats)."""
        with torch.no_grad():
            _, _, log_w, scale = self._traces_and_weights(
                model, guide, args, kwargs, stop_guide_params=False
            )
            return -scale * self._bound(log_w).sum().item()

    @staticmethod
    def _accumulate(params, grads):
        for p, g in zip(params, grads):
            if g is None:
                continue
            if p.grad is None:
                p.grad = g.detach().clone()
            else:
                p.grad += g.detach()


class DReG(_MultiSampleELBO):
    r"""Doubly reparameterized gradient estimator of the IWAE bound (Tucker, Lawson, Gu &
    Maddison 2019, "Doubly Reparameterized Gradient Estimators for Monte Carlo Objectives",
    eq. (5) for the guide, eq. (2) for the model).

    With :math:`\tilde w_k = w_k / \sum_j w_j` and :math:`z_k = z(\epsilon_k, \phi)`:

    .. math::
        \hat\nabla_\phi = \sum_k \tilde w_k^2\,
            \frac{\partial \log w_k}{\partial z_k}\frac{\partial z_k}{\partial \phi},
        \qquad
        \hat\nabla_\theta = \sum_k \tilde w_k\, \nabla_\theta \log p_\theta(x, z_k),

    where in :math:`\log w_k = \log p(x, z_k) - \log q_\phi(z_k|x)` the guide's parameters are
    held fixed (only the path through :math:`z_k` is differentiated). Both are **unbiased** for
    :math:`\nabla \mathcal{L}_K` (the guide part because the score term's expectation is
    rewritten by reparameterizing twice); unlike the plain IWAE gradient, the guide's
    signal-to-noise ratio does not decay as :math:`1/\sqrt K` (Rainforth et al. 2018). At K = 1
    the guide gradient equals STL's.

    For a guide with one latent site (an amortized encoder) one backward pass suffices: the
    gradient arriving at :math:`z_k` is multiplied by :math:`\tilde w_k` (a tensor hook).
    Otherwise (a latent feeding another guide site) the model and guide gradients come from two
    backward passes over one forward pass. A parameter used by both the model and the guide
    is rejected, since its gradient would mix the two estimators. Works per datapoint under the batch plate, like :class:`IWAE`.

    Args: as :class:`IWAE` (``num_particles`` = K).

    Raises:
        ConfigError: K < 1; a non-reparameterized guide site; a latent site outside the batch
        plate; a parameter shared by model and guide.
    """

    #: always use the general two-pass computation (for tests)
    _two_pass = False

    def _one_pass(self, model_trace, site, log_w, weights, scale):
        """One backward pass, for a guide with a single latent site z: its value feeds only
        log p(x, z) and the detached log q(z), so multiplying the gradient arriving at z_k by
        w~_k turns the IWAE surrogate's w~_k into w~_k^2 on the path into the guide, and
        leaves the model's gradient w~_k grad_theta log p(x, z_k) as it is."""
        value = site["value"]
        rank = self.max_plate_nesting + 1
        plate = find_batch_plate(model_trace, self.batch_plate)
        shape = [1] * rank
        shape[0] = weights.shape[0]
        if plate is not None:
            shape[rank + plate.dim] = weights.shape[1]
        event_dim = value.dim() - len(site["fn"].batch_shape)
        w = weights.reshape(shape + [1] * event_dim)
        handle = value.register_hook(lambda g: g * w)
        try:
            surrogate = -scale * (weights * log_w).sum()
            if surrogate.requires_grad:
                surrogate.backward(retain_graph=self.retain_graph)
        finally:
            handle.remove()

    def _two_passes(self, model_params, guide_params, log_w, weights, scale):
        """The general case: separate gradients of two surrogates for model and guide."""
        # model: IWAE gradient sum_k w~_k grad log w_k (log q does not depend on theta)
        surrogate_model = -scale * (weights * log_w).sum()
        # guide: squared normalized weights on the path derivative (q's params are detached)
        surrogate_guide = -scale * (weights.pow(2) * log_w).sum()
        if model_params and surrogate_model.requires_grad:
            grads = torch.autograd.grad(
                surrogate_model, model_params, retain_graph=True, allow_unused=True
            )
            self._accumulate(model_params, grads)
        if guide_params and surrogate_guide.requires_grad:
            grads = torch.autograd.grad(
                surrogate_guide, guide_params, retain_graph=self.retain_graph,
                allow_unused=True,
            )
            self._accumulate(guide_params, grads)

    def differentiable_loss(self, model, guide, *args, **kwargs):
        """The negative IWAE bound (nats), differentiable; its plain gradient is IWAE's,
        not DReG's: use :meth:`loss_and_grads` for the DReG gradient."""
        return IWAE.differentiable_loss(self, model, guide, *args, **kwargs)

    def loss_and_grads(self, model, guide, *args, **kwargs):
        """The negative IWAE bound as a float (nats); DReG gradients are accumulated into the
        ``.grad`` of the model's and the guide's parameters."""
        model_trace, guide_trace, log_w, scale = self._traces_and_weights(
            model, guide, args, kwargs, stop_guide_params=True
        )
        bound = self._bound(log_w)
        model_params, guide_params = _param_tensors(model_trace), _param_tensors(guide_trace)
        if model_params & guide_params:
            raise ConfigError(
                "DReG needs disjoint model and guide parameters, but the model and the guide "
                "share some: use IWAE for such a pair"
            )
        weights = torch.softmax(log_w, dim=0).detach()
        latent = _latent_sites(guide_trace)
        if len(latent) == 1 and latent[0]["value"].requires_grad and not self._two_pass:
            self._one_pass(model_trace, latent[0], log_w, weights, scale)
        else:
            self._two_passes(list(model_params), list(guide_params), log_w, weights, scale)
        return -scale * bound.sum().item()


class STL(_MultiSampleELBO):
    r"""STL, the "sticking the landing" path-derivative ELBO gradient (Roeder, Wu &
    Duvenaud 2017, "Sticking the Landing: Simple, Lower-Variance Gradient Estimators for Variational
    Inference", eq. (8)):

    .. math::
        \hat\nabla_\phi = \frac1K \sum_k \frac{\partial}{\partial z_k}
        \big[\log p(x, z_k) - \log q_{\bar\phi}(z_k|x)\big] \frac{\partial z_k}{\partial\phi},

    the reparameterized ELBO gradient with the score term :math:`-\nabla_\phi \log q_\phi(z|x)`
    dropped (:math:`\bar\phi`: the guide's parameters held fixed inside :math:`\log q`). The
    dropped term has expectation zero, so the estimator is **unbiased** for the ELBO gradient;
    its variance vanishes when q equals the exact posterior. The model's gradient is the usual
    pathwise one. The loss is the negative ELBO (the mean over the K particles of
    :math:`\log w_k`, not the IWAE bound), summed over the batch.

    Args: as :class:`IWAE` (``num_particles`` = K, averaged).

    Raises:
        ConfigError: K < 1; a non-reparameterized guide site; a latent site outside the batch
        plate.
    """

    def differentiable_loss(self, model, guide, *args, **kwargs):
        """Negative ELBO surrogate (nats) whose gradient is the STL estimator."""
        _, _, log_w, scale = self._traces_and_weights(
            model, guide, args, kwargs, stop_guide_params=True
        )
        return -scale * log_w.mean(0).sum()

    # The negative ELBO (not the IWAE bound) as a float; loss_and_grads is IWAE's, which
    # differentiates this class's surrogate.
    loss = IWAE.loss


class VIMCO(_MultiSampleELBO):
    r"""VIMCO, the multi-sample score-function estimator of the IWAE bound with leave-one-out
    baselines (Mnih & Rezende 2016, "Variational Inference for Monte Carlo Objectives",
    eqs. (8)-(10)):

    .. math::
        \hat\nabla = \sum_k \big(\hat L - \hat L_{-k}\big)\nabla_\phi \log q_\phi(z_k|x)
            + \sum_k \tilde w_k \nabla \log w_k,
        \qquad
        \hat L_{-k} = \log \frac1K\Big(\sum_{j \ne k} w_j + \hat w_{-k}\Big),

    with :math:`\hat L = \log \frac1K \sum_k w_k` and :math:`\hat w_{-k}` the geometric mean
    :math:`\exp\big(\frac1{K-1}\sum_{j\ne k}\log w_j\big)`. The baseline of particle k does not
    depend on :math:`z_k`, so the estimator is **unbiased** for :math:`\nabla\mathcal{L}_K`.
    The score term covers the guide's non-reparameterized sites (e.g. Bernoulli or
    categorical latents); reparameterized sites contribute their path derivative through
    :math:`\log w_k`. Computed per datapoint under the batch plate.

    With ``leave_one_out=False`` the learning signal is :math:`\hat L` itself: the plain
    multi-sample score-function (REINFORCE) estimator that VIMCO improves on, also unbiased,
    with far higher variance; it works for any K >= 1.

    Args: as :class:`IWAE`; ``num_particles`` = K >= 2 (>= 1 without leave-one-out baselines).
        leave_one_out (bool): use VIMCO's leave-one-out baselines (default) or none.

    Raises:
        ConfigError: K < 2 with leave-one-out baselines; a latent site outside the batch plate.
    """

    def __init__(self, num_particles=5, max_plate_nesting=float("inf"), batch_plate=None,
                 leave_one_out=True):
        if leave_one_out and int(num_particles) < 2:
            raise ConfigError(
                f"VIMCO's leave-one-out baselines need num_particles >= 2, got {num_particles}"
            )
        super().__init__(num_particles, max_plate_nesting, batch_plate)
        self.leave_one_out = leave_one_out

    def differentiable_loss(self, model, guide, *args, **kwargs):
        """Surrogate loss (nats-valued tensor whose gradient is VIMCO's; its value is the
        negative IWAE bound, the score term contributing zero)."""
        model_trace, guide_trace, log_w, scale = self._traces_and_weights(
            model, guide, args, kwargs, stop_guide_params=False
        )
        bound = self._bound(log_w)
        k = self.num_particles
        if not self.leave_one_out:
            learning_signal = bound.detach().expand_as(log_w)
            log_q = self._score_log_q(model_trace, guide_trace)
            score = (learning_signal * log_q).sum()
            return -scale * (bound.sum() + score - score.detach())
        # leave-one-out bounds L_{-k}: replace log w_k by the mean of the other log-weights
        lw = log_w.detach()
        loo_mean = (lw.sum(0, keepdim=True) - lw) / (k - 1)  # (K, B)
        eye = torch.eye(k, dtype=torch.bool).reshape((k, k) + (1,) * (lw.dim() - 1))
        replaced = torch.where(eye, loo_mean.unsqueeze(1), lw.unsqueeze(0))  # (K, K, B)
        loo_bound = torch.logsumexp(replaced, dim=1) - math.log(k)  # (K, B)
        learning_signal = bound.detach().unsqueeze(0) - loo_bound  # (K, B)
        log_q = self._score_log_q(model_trace, guide_trace)
        score = (learning_signal * log_q).sum()
        score = score - score.detach()  # contributes gradient only
        return -scale * (bound.sum() + score)

    def _score_log_q(self, model_trace, guide_trace):
        """Sum of log q over the guide's non-reparameterized sites, shape (K, B) (or 0.)."""
        rank = self.max_plate_nesting + 1
        plate = find_batch_plate(model_trace, self.batch_plate)
        total = 0.0
        for site in _latent_sites(guide_trace):
            if site["fn"].has_rsample:
                continue
            total = total + _reduce(
                scale_and_mask(site["unscaled_log_prob"], 1.0, site["mask"]), site, rank, plate
            )
        return total
