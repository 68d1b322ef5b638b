"""InfoVAE / MMD-VAE: the ELBO with a maximum-mean-discrepancy penalty between the aggregate
posterior and the prior."""

import math

import torch

from ...errors import ConfigError
from ..importance import latent_sites
from .base import MinibatchELBO


def rbf_kernel(a, b, bandwidth):
    """Gaussian kernel ``exp(-|a_i - b_j|^2 / (2 h^2))``, shape (N, M), for rows a (N, E) and
    b (M, E); Pyro's ``pyro.contrib.gp.kernels.RBF(variance=1, lengthscale=h)``."""
    a, b = a / bandwidth, b / bandwidth
    r2 = (a.pow(2).sum(1, keepdim=True) - 2 * a @ b.T + b.pow(2).sum(1)).clamp(min=0)
    return torch.exp(-0.5 * r2)


def mmd(x, y, bandwidth):
    r"""The (biased, V-statistic) squared maximum mean discrepancy of Gretton et al. (2012)
    ("A Kernel Two-Sample Test"), between the rows of x (N, E) and y (M, E) with :func:`rbf_kernel`:
    ``mean k(x, x') + mean k(y, y') - 2 mean k(x, y)`` (as Pyro's ``Trace_MMD`` computes it); a
    0-d tensor, >= 0."""
    return (
        rbf_kernel(x, x, bandwidth).mean()
        + rbf_kernel(y, y, bandwidth).mean()
        - 2 * rbf_kernel(x, y, bandwidth).mean()
    )


class MMDELBO(MinibatchELBO):
    r"""The InfoVAE objective of Zhao, Song & Ermon (2019), "InfoVAE: Balancing Learning and
    Inference in Variational Autoencoders" (the InfoVAE objective), with the MMD as divergence
    ("MMD-VAE"): in their notation the KL weight is :math:`1 - \alpha` (here ``beta``) and the
    divergence weight :math:`\alpha + \lambda - 1` (here ``mmd_weight``):

    .. math::
        \mathcal L = \sum_{b} \Big(\mathbb E_{q(z|x_b)}\log p(x_b|z)
            - \beta\,\mathrm{KL}(q(z|x_b)\,\|\,p(z))\Big)
            - B\, w\, \mathrm{MMD}^2\big(q(z), p(z)\big),

    per minibatch of B, times the plate scale. The aggregate posterior :math:`q(z)` is
    represented by the K * B guide samples of the batch, the prior by as many fresh draws from
    the model's prior sites (reparameterized where they can be); the MMD is ``mmd`` here, with a
    Gaussian kernel of bandwidth h (Pyro's ``Trace_MMD`` with ``RBF(lengthscale=h)`` computes
    the same statistic; it is not reused because its kernel's parameters would become Pyro
    params that ``SVI`` trains). One MMD term per latent site, summed. ``mmd_weight = 0`` is
    exactly the beta-ELBO (:class:`BetaELBO`; beta = 1: the ELBO).

    Args:
        num_particles (int): K >= 1.
        mmd_weight (float): w >= 0.
        bandwidth (float): h > 0, in units of z.
        beta (float): the KL weight, >= 0 (Zhao et al.'s MMD-VAE uses 0; default 1).
        max_plate_nesting, batch_plate: see :class:`~pyrolvm.inference.MultiSampleELBO`.

    Raises:
        ConfigError: w < 0, h <= 0 or beta < 0; as :class:`~pyrolvm.inference.MultiSampleELBO`.
    """

    def __init__(
        self,
        num_particles=1,
        mmd_weight=1.0,
        bandwidth=1.0,
        beta=1.0,
        max_plate_nesting=float("inf"),
        batch_plate=None,
    ):
        super().__init__(num_particles, max_plate_nesting, batch_plate)
        if not float(mmd_weight) >= 0 or not float(bandwidth) > 0 or not float(beta) >= 0:
            raise ConfigError(
                "MMD needs mmd_weight >= 0, bandwidth > 0 and beta >= 0, got "
                f"{mmd_weight}, {bandwidth}, {beta}"
            )
        self.mmd_weight, self.bandwidth = float(mmd_weight), float(bandwidth)
        self.latent_weight = float(beta)

    def divergence(self, weights):
        """Sum over latent sites of MMD^2 between the guide's samples and prior draws (0-d);
        the guide's auxiliary sites (Pyro's autoguides), absent from the model, are left out."""
        total = 0.0
        for site in latent_sites(weights.guide_trace):
            if site["infer"].get("is_auxiliary"):
                continue
            prior = weights.model_trace.nodes[site["name"]]["fn"]
            z_p = prior.rsample() if prior.has_rsample else prior.sample()
            size = max(1, math.prod(site["fn"].event_shape))
            total = total + mmd(
                site["value"].reshape(-1, size), z_p.reshape(-1, size), self.bandwidth
            )
        return total

    def batch_bound(self, weights):
        """The objective summed over the batch (before the plate scale), 0-d tensor (nats)."""
        total = self.bound(weights.log_w).sum()
        if self.mmd_weight > 0:
            total = total - weights.log_w.shape[1] * self.mmd_weight * self.divergence(weights)
        return total
