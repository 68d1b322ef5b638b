"""The MIWAE family of Rainforth et al. (2018): MIWAE, PIWAE, CIWAE."""

import math

import torch

from ...errors import ConfigError
from .base import MultiSampleELBO, accumulate_grads, param_tensors
from .dreg import DReG


def miwae_bound(log_w, m):
    """``(1/M) sum_m log (1/K) sum_k w_mk`` per datapoint, shape (B,), for log-weights of
    shape (M * K, B) split into M groups of K consecutive particles (nats)."""
    grouped = log_w.reshape(m, log_w.shape[0] // m, log_w.shape[1])
    return (torch.logsumexp(grouped, dim=1) - math.log(grouped.shape[1])).mean(0)


def _check_groups(num_groups):
    if int(num_groups) < 1:
        raise ConfigError(f"the number of groups M must be >= 1, got {num_groups}")
    return int(num_groups)


class MIWAE(MultiSampleELBO):
    r"""The multiply importance-weighted bound of Rainforth, Kosiorek, Le, Maddison, Igl,
    Wood & Teh (2018), "Tighter Variational Bounds are Not Necessarily Better" (their MIWAE
    objective):

    .. math::
        \mathcal{L}_{M,K}(x) = \frac1M \sum_{m=1}^M \log \frac1K \sum_{k=1}^K w_{mk},

    an average of M independent IWAE bounds with K particles each (M * K particles drawn in
    one vectorized pass), per datapoint, times the plate scale. M = 1 is :class:`IWAE`
    (exactly), K = 1 is the ELBO averaged over M particles. Its reparameterized gradient is
    unbiased for :math:`\nabla\mathcal{L}_{M,K}`.

    Args:
        num_particles (int): K >= 1, particles per group.
        num_groups (int): M >= 1.
        max_plate_nesting, batch_plate: see :class:`~pyrolvm.inference.MultiSampleELBO`.

    Raises:
        ConfigError: M < 1; as :class:`~pyrolvm.inference.MultiSampleELBO`.
    """

    def __init__(
        self, num_particles=5, num_groups=1, max_plate_nesting=float("inf"), batch_plate=None
    ):
        m = _check_groups(num_groups)
        if int(num_particles) < 1:
            raise ConfigError(f"num_particles must be >= 1, got {num_particles}")
        super().__init__(m * int(num_particles), max_plate_nesting, batch_plate)
        self.num_groups, self.group_size = m, int(num_particles)

    def bound(self, log_w):
        """The per-datapoint MIWAE bound, shape (B,), from log-weights of shape (M * K, B)."""
        return miwae_bound(log_w, self.num_groups)


class PIWAE(MIWAE):
    r"""Partially importance-weighted auto-encoder (Rainforth et al. 2018): one draw
    of M * K particles; the model (generative network) follows the gradient of the IWAE bound
    with all M * K particles, the guide (inference network) that of the MIWAE bound
    :math:`\mathcal{L}_{M,K}` (:class:`MIWAE`). Each part is unbiased for its own target's
    gradient. The loss reported is the negative IWAE bound with M * K particles (the model's
    target). Needs disjoint model and guide parameters.

    Args, Raises: as :class:`MIWAE`; also ConfigError for parameters shared by model and guide.
    """

    def bound(self, log_w):
        """The IWAE bound over all M * K particles, shape (B,) (the model's target)."""
        return torch.logsumexp(log_w, dim=0) - math.log(self.num_particles)

    def loss_tensor_and_grads(self, model, guide, *args, **kwargs):
        """The negative IWAE_{MK} bound as a detached 0-d float64 tensor; IWAE_{MK} gradients
        for the model's params and MIWAE_{M,K} gradients for the guide's are accumulated into
        ``.grad``."""
        weights = self.importance_weights(model, guide, *args, **kwargs)
        model_params = param_tensors(weights.model_trace)
        guide_params = param_tensors(weights.guide_trace)
        if model_params & guide_params:
            raise ConfigError(
                "PIWAE needs disjoint model and guide parameters, but the model "
                "and the guide share some: use MIWAE or IWAE for such a pair"
            )
        model_params, guide_params = list(model_params), list(guide_params)
        log_w, scale = weights.log_w, weights.scale
        for params, target in (
            (model_params, self.bound),
            (guide_params, lambda lw: miwae_bound(lw, self.num_groups)),
        ):
            surrogate = -scale * target(log_w).sum()
            if params and surrogate.requires_grad:
                grads = torch.autograd.grad(surrogate, params, retain_graph=True, allow_unused=True)
                accumulate_grads(params, grads)
        return -scale * self.bound(log_w.detach()).sum().double()


class CIWAE(MultiSampleELBO):
    r"""The combination importance-weighted bound (Rainforth et al. 2018):

    .. math::
        \mathcal{L}^{\mathrm{CIWAE}}_\beta(x) = \beta\, \frac1K \sum_k \log w_k
            + (1 - \beta) \log \frac1K \sum_k w_k,

    a convex combination of the ELBO and the IWAE bound on the same K particles, per
    datapoint, times the plate scale; beta = 1 is the ELBO, beta = 0 is :class:`IWAE`. Its
    reparameterized gradient is unbiased for the gradient of the combined bound.

    Args:
        num_particles (int): K >= 1.
        beta (float): the ELBO's weight, in [0, 1].
        max_plate_nesting, batch_plate: see :class:`~pyrolvm.inference.MultiSampleELBO`.

    Raises:
        ConfigError: beta outside [0, 1]; as :class:`~pyrolvm.inference.MultiSampleELBO`.
    """

    def __init__(self, num_particles=5, beta=0.5, max_plate_nesting=float("inf"), batch_plate=None):
        super().__init__(num_particles, max_plate_nesting, batch_plate)
        if not 0.0 <= float(beta) <= 1.0:
            raise ConfigError(f"CIWAE's beta must lie in [0, 1], got {beta}")
        self.beta = float(beta)

    def bound(self, log_w):
        """The per-datapoint CIWAE bound, shape (B,) (nats)."""
        iwae = torch.logsumexp(log_w, dim=0) - math.log(self.num_particles)
        return self.beta * log_w.mean(0) + (1.0 - self.beta) * iwae


class MIWAEDReG(DReG):
    r"""Doubly reparameterized gradients of the MIWAE bound :math:`\mathcal{L}_{M,K}`
    (:class:`MIWAE`): Tucker, Lawson, Gu & Maddison (2019), eq. (5), applied to each of the M
    independent IWAE bounds it averages. With :math:`\tilde w_{mk}` normalized within group m,

    .. math::
        \hat\nabla_\phi = \frac1M \sum_{m,k} \tilde w_{mk}^2\,
            \frac{\partial \log w_{mk}}{\partial z_{mk}}\frac{\partial z_{mk}}{\partial\phi},
        \qquad
        \hat\nabla_\theta = \frac1M \sum_{m,k} \tilde w_{mk}\,
            \nabla_\theta \log p_\theta(x, z_{mk}),

    unbiased for :math:`\nabla\mathcal{L}_{M,K}`; M = 1 is :class:`DReG`. The loss is the
    negative MIWAE bound. (For Rényi-alpha with alpha != 0 the same construction does not
    give an unbiased estimator of the VR bound's gradient and is not offered.)

    Args:
        num_particles (int): K >= 1, particles per group.
        num_groups (int): M >= 1.
        max_plate_nesting, batch_plate, single_pass: see :class:`DReG`.

    Raises: as :class:`DReG` and :class:`MIWAE`.
    """

    def __init__(
        self,
        num_particles=5,
        num_groups=1,
        max_plate_nesting=float("inf"),
        batch_plate=None,
        single_pass=True,
    ):
        m = _check_groups(num_groups)
        if int(num_particles) < 1:
            raise ConfigError(f"num_particles must be >= 1, got {num_particles}")
        super().__init__(m * int(num_particles), max_plate_nesting, batch_plate, single_pass)
        self.num_groups, self.group_size = m, int(num_particles)

    def bound(self, log_w):
        """The per-datapoint MIWAE bound, shape (B,)."""
        return miwae_bound(log_w, self.num_groups)

    def particle_weights(self, log_w):
        """(w~ / M, w~), each (M * K, B), with w~ normalized within each group of K."""
        if self.num_groups == 1:
            return super().particle_weights(log_w)
        grouped = log_w.reshape(self.num_groups, self.group_size, log_w.shape[1])
        inner = torch.softmax(grouped, dim=1).reshape(log_w.shape).detach()
        return inner / self.num_groups, inner
