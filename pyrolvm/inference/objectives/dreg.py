"""DReG: doubly reparameterized gradients of the IWAE bound."""

from collections.abc import Callable
from typing import Any

import torch

from ...errors import ConfigError
from ..importance import find_batch_plate, latent_sites
from .base import MultiSampleELBO, accumulate_grads, param_tensors


class DReG(MultiSampleELBO):
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

    Holding :math:`\phi` fixed in :math:`\log q_\phi(z_k|x)` means the guide's parameters
    only, never the draws: for a hierarchical guide :math:`q(z_1|x)\,q(z_2|z_1, x)` the path
    :math:`\partial \log q(z_2|z_1)/\partial z_1 \cdot \partial z_1/\partial\phi` stays
    (see :class:`~pyrolvm.inference.MultiSampleELBO`, ``stop_guide_params``; such a guide
    is run a second time with its draws fixed, and must be a deterministic function of them).
    For a guide with one latent site (an amortized encoder) one backward pass suffices: the
    gradient arriving at :math:`z_k` is multiplied by :math:`\tilde w_k` (a tensor hook).
    Otherwise (a latent feeding another guide site) the model and guide gradients come from two
    backward passes over one forward pass. A parameter used by both the model and the guide
    is rejected, since its gradient would mix the two estimators. Works per datapoint under
    the batch plate, like :class:`IWAE`. The loss is the negative IWAE bound;
    :meth:`~pyrolvm.inference.MultiSampleELBO.differentiable_loss` is IWAE's (its plain
    gradient is IWAE's, not DReG's: use ``loss_and_grads`` (or :meth:`loss_tensor_and_grads`)
    for the DReG gradient).

    Args: see :class:`~pyrolvm.inference.MultiSampleELBO` (``num_particles`` = K).
        single_pass (bool): use the one-backward hook where the guide has one latent site
            (default); ``False`` always takes the general two-pass computation.

    Raises:
        ConfigError: K < 1; a non-reparameterized guide site; a latent site outside the batch
            plate; a parameter shared by model and guide; a guide whose second run with the
            draws fixed gives other densities (dropout in training mode) or a flow without
            an inverse.
    """

    def __init__(
        self,
        num_particles: int = 5,
        max_plate_nesting: float = float("inf"),
        batch_plate: str | None = None,
        single_pass: bool = True,
    ) -> None:
        super().__init__(num_particles, max_plate_nesting, batch_plate)
        self.single_pass = single_pass

    def particle_weights(self, log_w):
        """(outer, inner), each (K, B), detached: the model's gradient is
        ``sum_k outer_k grad log p(x, z_k)`` and the guide's path derivative is weighted by
        ``outer_k * inner_k``. For IWAE both are the normalized weights w~_k (so the guide
        gets w~_k^2); subclasses for other bounds (:class:`MIWAEDReG`) override it."""
        normalized = torch.softmax(log_w, dim=0).detach()
        return normalized, normalized

    def _one_pass(self, weights, site, normalized, inner=None):
        """One backward pass, for a guide with a single latent site z: its value feeds only
        log p(x, z) and the detached log q(z), so multiplying the gradient arriving at z_k by
        w~_k turns the IWAE surrogate's w~_k into w~_k^2 on the path into the guide, and
        leaves the model's gradient w~_k grad_theta log p(x, z_k) as it is."""
        inner = normalized if inner is None else inner
        surrogate = -weights.scale * (normalized * weights.log_w).sum()
        if not surrogate.requires_grad:
            return
        if self.num_particles == 1:  # w~ = 1: the hook would multiply by one
            surrogate.backward(retain_graph=self.retain_graph)
            return
        value = site["value"]
        rank = int(self.max_plate_nesting)
        plate = find_batch_plate(weights.model_trace, self.batch_plate)
        shape = [1] * rank
        shape[0] = inner.shape[0]
        if plate is not None:
            shape[rank + plate.dim] = inner.shape[1]
        event_dim = value.dim() - len(site["fn"].batch_shape)
        w = inner.reshape(shape + [1] * event_dim)
        handle = value.register_hook(lambda g: g * w.to(g.dtype))
        try:
            surrogate.backward(retain_graph=self.retain_graph)
        finally:
            handle.remove()

    def _two_passes(self, model_params, guide_params, weights, normalized, inner=None):
        """The general case: separate gradients of two surrogates for model and guide."""
        log_w, scale = weights.log_w, weights.scale
        # model: IWAE gradient sum_k w~_k grad log w_k (log q does not depend on theta)
        surrogate_model = -scale * (normalized * log_w).sum()
        # guide: squared normalized weights on the path derivative (q's params are detached)
        squared = normalized.pow(2) if inner is None or inner is normalized else normalized * inner
        surrogate_guide = -scale * (squared * log_w).sum()
        if model_params and surrogate_model.requires_grad:
            grads = torch.autograd.grad(
                surrogate_model, model_params, retain_graph=True, allow_unused=True
            )
            accumulate_grads(model_params, grads)
        if guide_params and surrogate_guide.requires_grad:
            grads = torch.autograd.grad(
                surrogate_guide,
                guide_params,
                retain_graph=self.retain_graph,
                allow_unused=True,
            )
            accumulate_grads(guide_params, grads)

    def loss_tensor_and_grads(
        self, model: Callable, guide: Callable, *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        """The negative IWAE bound as a detached 0-d float64 tensor (nats); DReG gradients are
        accumulated into the ``.grad`` of the model's and the guide's parameters."""
        weights = self.importance_weights(model, guide, *args, stop_guide_params=True, **kwargs)
        model_params = param_tensors(weights.model_trace)
        guide_params = param_tensors(weights.guide_trace)
        if model_params & guide_params:
            raise ConfigError(
                "DReG needs disjoint model and guide parameters, but the model and the guide "
                "share some: use IWAE for such a pair"
            )
        normalized, inner = self.particle_weights(weights.log_w)
        latent = latent_sites(weights.guide_trace)
        if len(latent) == 1 and latent[0]["value"].requires_grad and self.single_pass:
            self._one_pass(weights, latent[0], normalized, inner)
        else:
            self._two_passes(list(model_params), list(guide_params), weights, normalized, inner)
        return -weights.scale * self.bound(weights.log_w.detach()).sum().double()
