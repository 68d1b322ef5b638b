"""The linear-Gaussian latent-variable model (probabilistic PCA with isotropic noise).

Tipping & Bishop (1999), "Probabilistic principal component analysis", eqs. (2)-(7):
``z ~ N(0, I_L)``, ``x | z ~ N(W z + b, sigma^2 I_D)``, so that exactly
``x ~ N(b, W W^T + sigma^2 I)`` and ``z | x ~ N(M^{-1} W^T (x - b) / sigma^2, M^{-1})`` with
``M = I + W^T W / sigma^2``. The closed forms make it the reference model for checking
ELBOs, gradient estimators and importance-sampled log-likelihoods against exact answers.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ..errors import ConfigError
from ..nets import check_latent_dim


class LinearGaussian(nn.Module):
    """Pyro model ``z ~ N(0, I)``, ``x | z ~ N(W z + b, sigma^2 I)`` with exact marginal and
    posterior.

    ``model(x)`` takes x of shape (B, D) under one ``pyro.plate("data", B)``; latent site ``"z"``
    (event shape (L,)), observed site ``"x"`` (event shape (D,)). The parameters are registered
    with ``pyro.module(name, ...)`` and can be learned.

    Args:
        weight (torch.Tensor): W, shape (D, L).
        bias (torch.Tensor): b, shape (D,).
        noise_scale (float): sigma > 0 (stored as its log, ``log_noise_scale``).
        name (str): prefix in Pyro's param store.

    Raises:
        ConfigError: ``noise_scale <= 0``.
    """

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor,
        noise_scale: float,
        name: str = "linear_gaussian",
    ) -> None:
        super().__init__()
        weight = torch.as_tensor(weight, dtype=torch.get_default_dtype())
        self.latent_dim = check_latent_dim(weight.shape[-1])
        self.weight = nn.Parameter(weight.clone())
        self.bias = nn.Parameter(torch.as_tensor(bias, dtype=weight.dtype).clone())
        if not float(noise_scale) > 0:
            raise ConfigError(f"noise_scale must be positive, got {noise_scale!r}")
        self.log_noise_scale = nn.Parameter(torch.tensor(float(noise_scale)).log())
        self.name = name

    @property
    def noise_scale(self) -> torch.Tensor:
        """sigma, a 0-d tensor."""
        return self.log_noise_scale.exp()

    def forward(self, x: torch.Tensor | None, batch_size: int | None = None) -> torch.Tensor:
        pyro.module(self.name, self)
        batch_size = x.shape[0] if x is not None else batch_size
        with pyro.plate("data", batch_size):
            prior_loc = self.bias.new_zeros(self.latent_dim)  # (and no scalar copied from the host)
            z = pyro.sample("z", dist.Normal(prior_loc, torch.ones_like(prior_loc)).to_event(1))
            loc = z @ self.weight.T + self.bias
            pyro.sample("x", dist.Normal(loc, self.noise_scale).to_event(1), obs=x)
        return z

    def marginal(self) -> dist.MultivariateNormal:
        """The exact marginal p(x) = N(b, W W^T + sigma^2 I), event shape (D,)."""
        d = self.weight.shape[0]
        cov = self.weight @ self.weight.T + self.noise_scale**2 * torch.eye(
            d, dtype=self.weight.dtype, device=self.weight.device
        )
        return dist.MultivariateNormal(self.bias, covariance_matrix=cov)

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x) in nats for x of shape (B, D); returns shape (B,)."""
        return self.marginal().log_prob(x)

    def posterior(self, x: torch.Tensor) -> dist.MultivariateNormal:
        """The exact posterior p(z | x) for x of shape (B, D): a MultivariateNormal with loc of
        shape (B, L) and a shared covariance (L, L)."""
        s2 = self.noise_scale**2
        eye = torch.eye(self.latent_dim, dtype=self.weight.dtype, device=self.weight.device)
        precision = eye + self.weight.T @ self.weight / s2
        cov = torch.linalg.inv(precision)
        loc = (x - self.bias) @ self.weight @ cov / s2
        return dist.MultivariateNormal(loc, covariance_matrix=cov)
