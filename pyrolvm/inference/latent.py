r"""Diagnostics of a trained encoder's latent space, from its diagonal-Gaussian outputs
:math:`q(z|x_n) = \mathcal N(\mu_n, \mathrm{diag}\,\sigma_n^2)` on a set of datapoints and the
prior :math:`p(z) = \mathcal N(0, I)`: the KL per latent dimension and the rate, active units,
and the mutual information :math:`I_q(x; z)`. Pure tensor functions (no model or guide).

- Rate and distortion (Alemi et al. 2018, "Fixing a Broken ELBO"):
  :math:`R = \mathbb E_x \mathrm{KL}(q(z|x)\,\|\,p(z))`, :math:`D = -\mathbb E_x
  \mathbb E_q \log p(x|z)`, so that ELBO = -(R + D).
- Active units (Burda, Grosse & Salakhutdinov 2016, section 5.2): unit u is active when
  :math:`A_u = \mathrm{Cov}_x(\mathbb E_{q(z|x)}[z_u]) > 0.01`.
- Mutual information (Hoffman & Johnson 2016, "ELBO surgery", the
  decomposition of the average KL):
  :math:`\mathbb E_x \mathrm{KL}(q(z|x)\|p(z)) = I_q(x;z) + \mathrm{KL}(q(z)\|p(z))` with the
  aggregate posterior :math:`q(z) = \frac1N\sum_n q(z|x_n)`; :math:`I_q` is estimated as
  :math:`\frac1N \sum_i [\log q(z_i|x_i) - \log \frac1N \sum_j q(z_i|x_j)]`, :math:`z_i \sim
  q(z|x_i)` (consistent as N grows; biased for finite N, by at most :math:`\log N` above).
"""

import math

import torch

from ..errors import ConfigError


def _check(loc, scale=None):
    if scale is None:  # the activity statistic: a variance over N >= 2 rows
        if loc.dim() != 2 or loc.shape[0] < 2:
            raise ConfigError(
                f"latent diagnostics need loc of shape (N, L) with N >= 2, got {tuple(loc.shape)}"
            )
        return
    if loc.dim() != 2 or loc.shape != scale.shape or loc.shape[0] < 2:
        raise ConfigError(
            "latent diagnostics need loc and scale of one shape (N, L) with "
            f"N >= 2, got {tuple(loc.shape)} and {tuple(scale.shape)}"
        )


def kl_per_dimension(loc, scale):
    """``E_x KL(N(mu_u(x), sigma_u(x)^2) || N(0, 1))`` per latent dimension u, shape (L,), in
    nats: the closed form ``0.5 (mu^2 + sigma^2 - 1) - log sigma`` averaged over the rows."""
    _check(loc, scale)
    return (0.5 * (loc.pow(2) + scale.pow(2) - 1.0) - scale.log()).mean(0)


def unit_activity(loc):
    """``Cov_x(E_q[z_u | x])``, the variance over datapoints of each posterior mean, shape (L,)
    (Burda et al. 2016's activity statistic; unbiased sample variance).

    Raises:
        ConfigError: ``loc`` is not of shape (N, L) with N >= 2."""
    _check(loc)
    return loc.var(0)


def active_units(loc, threshold=0.01):
    """The number of units u with :func:`unit_activity` above ``threshold`` (an int)."""
    return int((unit_activity(loc) > threshold).sum())


def mutual_information(loc, scale, generator=None):
    """The estimate of ``I_q(x; z)`` in nats described in the module docstring: one draw z_i
    per row, and the aggregate posterior's density from all N rows (cost O(N^2 L)).

    Args:
        loc, scale (torch.Tensor): shape (N, L), the encoder's outputs on N datapoints.
        generator (torch.Generator or None): for the draws (default: torch's global RNG).

    Returns:
        float
    """
    _check(loc, scale)
    loc, scale = loc.double(), scale.double()
    # drawn on the CPU (the generator's device), so the figure is the same on every device
    cpu = generator.device if generator is not None else "cpu"
    eps = torch.randn(loc.shape, generator=generator, dtype=loc.dtype, device=cpu).to(loc.device)
    z = loc + scale * eps  # (N, L)
    log_norm = -0.5 * math.log(2 * math.pi) - scale.log()  # (N, L)
    own = (log_norm - 0.5 * eps.pow(2)).sum(-1)  # log q(z_i | x_i)
    # log q(z_i | x_j) for all i, j: (N, N)
    cross = (log_norm[None] - 0.5 * ((z[:, None] - loc[None]) / scale[None]).pow(2)).sum(-1)
    aggregate = torch.logsumexp(cross, dim=1) - math.log(loc.shape[0])
    return (own - aggregate).mean().item()


def latent_summary(loc, scale, threshold=0.01, mi_points=1000, generator=None):
    """The latent diagnostics written to a VAE run's metrics.json.

    Args:
        loc, scale (torch.Tensor): shape (N, L), the encoder's outputs on (test) datapoints.
        threshold (float): the activity threshold of an active unit.
        mi_points (int): the first ``mi_points`` rows enter the mutual-information estimate
            (its cost is quadratic in them).
        generator (torch.Generator or None): for the mutual information's draws.

    Returns:
        dict: ``kl_per_dim`` (list of L floats, nats), ``rate`` (their sum, nats),
        ``activity`` (list of L floats), ``active_units`` (int), ``mutual_information``
        (nats, at most ``log(mi_points)``), ``mi_points``.
    """
    _check(loc, scale)
    kl = kl_per_dimension(loc, scale)
    n = min(int(mi_points), loc.shape[0])
    return {
        "kl_per_dim": kl.tolist(),
        "rate": kl.sum().item(),
        "activity": unit_activity(loc).tolist(),
        "active_units": active_units(loc, threshold),
        "mutual_information": mutual_information(loc[:n], scale[:n], generator),
        "mi_points": n,
    }
