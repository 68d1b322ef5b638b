"""STL: the path-derivative ("sticking the landing") ELBO gradient."""

import torch

from .base import MultiSampleELBO


class STL(MultiSampleELBO):
    r"""STL, the "sticking the landing" path-derivative ELBO gradient (Roeder, Wu &
    Duvenaud 2017, "Sticking the Landing: Simple, Lower-Variance Gradient Estimators for
    Variational Inference", eq. (8)):

    .. math::
        \hat\nabla_\phi = \frac1K \sum_k \frac{\partial}{\partial z_k}
        \big[\log p(x, z_k) - \log q_{\bar\phi}(z_k|x)\big] \frac{\partial z_k}{\partial\phi},

    the reparameterized ELBO gradient with the score term :math:`-\nabla_\phi \log q_\phi(z|x)`
    dropped (:math:`\bar\phi`: the guide's parameters held fixed inside :math:`\log q`). The
    dropped term has expectation zero, so the estimator is **unbiased** for the ELBO gradient;
    its variance vanishes when q equals the exact posterior, hierarchical guides
    :math:`q(z_1|x)\,q(z_2|z_1,x)` included (only the parameters are held fixed, the path
    through :math:`z_1` into :math:`q(z_2|z_1)` is kept: see
    :class:`~pyrolvm.inference.MultiSampleELBO`, ``stop_guide_params``). The model's
    gradient is the usual pathwise one. The loss is the negative ELBO (the mean over the K
    particles of :math:`\log w_k`, not the IWAE bound), summed over the batch.

    Args, Raises: see :class:`~pyrolvm.inference.MultiSampleELBO` (``num_particles`` = K,
    averaged).
    """

    stop_guide_params = True

    def bound(self, log_w: torch.Tensor) -> torch.Tensor:
        """The per-datapoint ELBO estimate ``mean_k log w_k``, shape (B,) (nats)."""
        return log_w.mean(0)
