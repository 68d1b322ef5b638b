"""Free bits: the ELBO with the KL of each latent dimension (or group) floored at lambda."""

import torch
from torch.distributions import Independent

from ...errors import ConfigError
from ..importance import latent_sites
from .base import MinibatchELBO

#: How free bits groups the latent dimensions.
FREE_BITS_GROUPS = ("dimension", "site")


def elementwise_log_prob(fn, value):
    """The log-density of ``value`` under ``fn`` per element of the event, shape
    ``fn.batch_shape + (E,)`` with E the flattened event size (``Independent`` unwrapped)."""
    batch_shape = fn.batch_shape
    while isinstance(fn, Independent):
        fn = fn.base_dist
    log_p = fn.log_prob(value)
    return log_p.reshape(tuple(batch_shape) + (-1,))


def kl_per_dimension(model_trace, guide_trace):
    """Monte Carlo estimates of ``KL(q(z_j | x) || p(z_j))`` per latent dimension j, averaged
    over the particles and the batch: ``{site name: tensor of shape (E,)}`` in nats, from
    ``log q(z_j) - log p(z_j)`` at the sampled z (the prior and guide must factorize over the
    event dimensions, as a diagonal Gaussian and N(0, I) do)."""
    out = {}
    for site in latent_sites(guide_trace):
        name = site["name"]
        log_q = elementwise_log_prob(site["fn"], site["value"])
        log_p = elementwise_log_prob(model_trace.nodes[name]["fn"], site["value"])
        diff = log_q - log_p.expand_as(log_q)
        out[name] = diff.reshape(-1, diff.shape[-1]).mean(0)
    return out


class FreeBitsELBO(MinibatchELBO):
    r"""The free-bits objective of Kingma, Salimans, Jozefowicz, Chen, Sutskever & Welling
    (2016), "Improved Variational Inference with Inverse Autoregressive Flow", the "free bits"
    objective of its appendix: with the latent dimensions split into groups j,

    .. math::
        \tilde{\mathcal L} = \mathbb{E}_{x \sim \mathcal M}\big[\mathbb{E}_{q(z|x)}
            \log p(x|z)\big] - \sum_j \max\big(\lambda,\,
            \mathbb{E}_{x \sim \mathcal M}[\mathrm{KL}(q(z_j|x) \,\|\, p(z_j))]\big),

    the KL of a group averaged over the minibatch :math:`\mathcal M` before the floor (so a
    group below lambda nats gets no gradient pushing it further down). Computed as the ELBO
    summed over the batch minus :math:`B \sum_j \mathrm{relu}(\lambda - \widehat{KL}_j)`,
    with :math:`\widehat{KL}_j` the Monte Carlo estimate from the K particles
    (:func:`kl_per_dimension`); times the plate scale. Groups: ``"dimension"`` (each latent
    dimension of each site, the per-dimension variant) or ``"site"`` (all of a latent site's
    dimensions together). lambda = 0 is no floor: the loss and gradients are exactly the
    ELBO's (a negative Monte Carlo KL estimate is not clipped then).

    The bound is per minibatch, not per datapoint; the gradient is the reparameterized one of
    the minibatch objective.

    Args:
        num_particles (int): K >= 1.
        free_bits (float): lambda >= 0, nats per group.
        per (str): ``"dimension"`` or ``"site"``.
        max_plate_nesting, batch_plate: see :class:`~pyrolvm.inference.MultiSampleELBO`.

    Raises:
        ConfigError: lambda < 0 or an unknown ``per``; as
            :class:`~pyrolvm.inference.MultiSampleELBO`.
    """

    def __init__(
        self,
        num_particles=1,
        free_bits=0.0,
        per="dimension",
        max_plate_nesting=float("inf"),
        batch_plate=None,
    ):
        super().__init__(num_particles, max_plate_nesting, batch_plate)
        if not float(free_bits) >= 0:
            raise ConfigError(f"free bits lambda must be >= 0 nats, got {free_bits}")
        if per not in FREE_BITS_GROUPS:
            raise ConfigError(
                f"unknown free-bits grouping {per!r}: choose one of {', '.join(FREE_BITS_GROUPS)}"
            )
        self.free_bits, self.per = float(free_bits), per

    def batch_bound(self, weights):
        """The free-bits objective summed over the batch (before the plate scale), a 0-d
        tensor (nats)."""
        total = self.bound(weights.log_w).sum()
        if self.free_bits > 0:
            kl = kl_per_dimension(weights.model_trace, weights.guide_trace)
            kl = torch.cat(
                [v if self.per == "dimension" else v.sum(0, keepdim=True) for v in kl.values()]
            )
            total = total - weights.log_w.shape[1] * torch.relu(self.free_bits - kl).sum()
        return total
