"""The variational Rényi bound, per datapoint."""

import math

import torch

from .base import MultiSampleELBO


class Renyi(MultiSampleELBO):
    r"""The variational Rényi (VR) bound of Li & Turner (2016), "Rényi Divergence Variational
    Inference" (the VR bound L_alpha and its K-sample Monte Carlo estimate):

    .. math::
        \hat{\mathcal L}_{\alpha,K}(x) = \frac{1}{1-\alpha}
            \log \frac1K \sum_{k=1}^K w_k^{1-\alpha}, \qquad w_k = \frac{p(x, z_k)}{q(z_k|x)},

    computed **per datapoint** (the log-sum-exp runs over particles separately for each element
    of the batch plate) and multiplied by the plate scale *outside* it, so that it stays an
    estimate of the full-data objective under a subsampled plate (Pyro's ``RenyiELBO`` puts the
    scale inside the log-sum-exp). alpha = 0 is exactly :class:`IWAE`; alpha -> 1 tends to the
    ELBO (at alpha = 1 exactly: the mean of log w). For alpha in [0, 1) and any K the estimate's
    expectation lies below log p(x) (Li & Turner's bound on the K-sample estimate); for alpha < 0 it
    can exceed it. The gradient is the reparameterized one (Li & Turner's reparameterized VR
    gradient), unbiased
    for the gradient of :math:`\mathbb{E}[\hat{\mathcal L}_{\alpha,K}]`.

    Args:
        num_particles (int): K >= 1.
        alpha (float): the Rényi order.
        max_plate_nesting, batch_plate: see :class:`~pyrolvm.inference.MultiSampleELBO`.

    Raises: see :class:`~pyrolvm.inference.MultiSampleELBO`.
    """

    def __init__(
        self, num_particles=5, alpha=0.0, max_plate_nesting=float("inf"), batch_plate=None
    ):
        super().__init__(num_particles, max_plate_nesting, batch_plate)
        self.alpha = float(alpha)

    def bound(self, log_w):
        """The per-datapoint VR bound estimate, shape (B,), from log-weights (K, B) (nats)."""
        if self.alpha == 1.0:
            return log_w.mean(0)
        a = 1.0 - self.alpha
        return (torch.logsumexp(a * log_w, dim=0) - math.log(self.num_particles)) / a
