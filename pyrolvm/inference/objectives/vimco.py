"""VIMCO: the multi-sample score-function estimator with leave-one-out baselines."""

import math

import torch
from pyro.distributions.util import scale_and_mask

from ...errors import ConfigError
from ..importance import find_batch_plate, guide_factor_sites, latent_sites, sum_to_batch
from .base import ImportanceWeights, MultiSampleELBO


class VIMCO(MultiSampleELBO):
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
    categorical latents, and factors declared ``has_rsample=False``); reparameterized sites
    contribute their path derivative through :math:`\log w_k`. A site configured for
    enumeration is refused (VIMCO would sample it; Pyro's ELBOs warn). Computed per
    datapoint under the batch plate; the loss is the negative IWAE bound.

    **On a reparameterized guide VIMCO is IWAE.** As Pyro's ``TraceGraph_ELBO`` does, only
    the guide's non-reparameterized sites get the score term; where every site is
    reparameterized (a Gaussian guide) there is none, and the gradient is :class:`IWAE`'s,
    draw for draw. For VIMCO's score-function estimator on a continuous latent, sample it
    without reparameterization (``dist.Normal(loc, scale).has_rsample_(False)``; ``pyrolvm
    train vae --elbo vimco --no-reparam``).

    With ``leave_one_out=False`` the learning signal is :math:`\hat L` itself: the plain
    multi-sample score-function (REINFORCE) estimator that VIMCO improves on, also unbiased,
    with far higher variance; it works for any K >= 1.

    Args: see :class:`~pyrolvm.inference.MultiSampleELBO`; ``num_particles`` = K >= 2
        (>= 1 without leave-one-out baselines).
        leave_one_out (bool): use VIMCO's leave-one-out baselines (default) or none.

    Raises:
        ConfigError: K < 2 with leave-one-out baselines; a latent site outside the batch plate.
    """

    needs_rsample = False

    def __init__(
        self,
        num_particles: int = 5,
        max_plate_nesting: float = float("inf"),
        batch_plate: str | None = None,
        leave_one_out: bool = True,
    ) -> None:
        if leave_one_out and int(num_particles) < 2:
            raise ConfigError(
                f"VIMCO's leave-one-out baselines need num_particles >= 2, got {num_particles}"
            )
        super().__init__(num_particles, max_plate_nesting, batch_plate)
        self.leave_one_out = leave_one_out

    def learning_signal(self, log_w: torch.Tensor) -> torch.Tensor:
        """The per-particle learning signal of the score term, shape (K, B), detached:
        ``L - L_{-k}`` (leave-one-out) or ``L`` (plain score function)."""
        lw = log_w.detach()
        bound = self.bound(lw)
        if not self.leave_one_out:
            return bound.expand_as(lw)
        k = self.num_particles
        # leave-one-out bounds L_{-k}: replace log w_k by the mean of the other log-weights
        loo_mean = (lw.sum(0, keepdim=True) - lw) / (k - 1)  # (K, B)
        eye = torch.eye(k, dtype=torch.bool, device=lw.device)
        eye = eye.reshape((k, k) + (1,) * (lw.dim() - 1))
        replaced = torch.where(eye, loo_mean.unsqueeze(1), lw.unsqueeze(0))  # (K, K, B)
        loo_bound = torch.logsumexp(replaced, dim=1) - math.log(k)  # (K, B)
        return bound.unsqueeze(0) - loo_bound

    def surrogate(self, weights: ImportanceWeights) -> torch.Tensor:
        """Minus (the IWAE bound plus a zero-valued score term whose gradient is VIMCO's)."""
        bound = self.bound(weights.log_w)
        log_q = self._score_log_q(weights)
        score = (self.learning_signal(weights.log_w) * log_q).sum()
        return -weights.scale * (bound.sum() + score - score.detach())

    def _score_log_q(self, weights):
        """Sum of log q over the guide's non-reparameterized sites, shape (K, B) (or 0.)."""
        rank = int(self.max_plate_nesting)
        plate = find_batch_plate(weights.model_trace, self.batch_plate)
        total = 0.0
        guide = weights.guide_trace
        for site in latent_sites(guide) + guide_factor_sites(guide):
            if site["fn"].has_rsample:  # a factor declared has_rsample=False scores too
                continue
            log_q = scale_and_mask(site["unscaled_log_prob"], 1.0, site["mask"])
            total = total + sum_to_batch(log_q, site, rank, plate, self.num_particles > 1)
        return total
