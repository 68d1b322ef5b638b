"""The importance-weighted bound (IWAE)."""

from .base import MultiSampleELBO


class IWAE(MultiSampleELBO):
    r"""The importance-weighted bound of Burda, Grosse & Salakhutdinov (2016), eq. (8):

    .. math::
        \mathcal{L}_K(x) = \mathbb{E}_{z_{1:K} \sim q(z|x)}
        \Big[\log \frac{1}{K} \sum_{k=1}^K \frac{p(x, z_k)}{q(z_k | x)}\Big]
        \le \log p(x),

    computed **per datapoint** (the log-sum-exp runs over particles separately for each element
    of the batch plate). Its gradient is the reparameterized one of eq. (13), unbiased for
    :math:`\nabla \mathcal{L}_K`; it needs a guide whose latent sites are all
    reparameterizable and inside the batch plate. K = 1 is the standard ELBO.
    :math:`\mathcal{L}_K` is non-decreasing in K (Burda et al., Theorem 1).

    The loss is :math:`-\sum_n \mathcal{L}_K(x_n)` over the batch, times the sites' common
    scale (e.g. ``full_size / batch_size`` under a subsampled plate).

    Why not Pyro's ``RenyiELBO(alpha=0)``, which is the same bound: on a full batch the two
    agree (both keep the plate dimensions out of the log-sum-exp), but under a subsampled plate
    or ``poutine.scale`` ``RenyiELBO`` multiplies the log-weights by the scale *inside* the
    log-sum-exp, which is not an estimate of the full-data bound, while IWAE scales the
    per-datapoint bound; and IWAE refuses a non-reparameterized guide site with a clear error
    (its gradient would silently miss the score term).

    Args, Raises: see :class:`~pyrolvm.inference.MultiSampleELBO` (``num_particles`` = K).
    """
