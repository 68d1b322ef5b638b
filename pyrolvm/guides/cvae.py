"""The recognition network q(z | x, y) of the conditional VAE (Sohn, Lee & Yan 2015,
section 3.1): the guide of :class:`pyrolvm.models.CVAE`."""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..nets import check_latent_dim, mlp


class CVAEGuide(nn.Module):
    """Diagonal-Gaussian recognition network ``q(z | x, y) = N(mu(x, y), diag(sigma(x, y)^2))``.

    ``guide(x, y)`` with x of shape (B, x_dim) and y of shape (B, y_dim) samples ``"z"``
    (event shape (latent_dim,)) under ``pyro.plate("data", B)``, reparameterized.

    Args:
        x_dim (int): size of the input x.
        y_dim (int): size of the output y.
        latent_dim (int): size of z (> 0).
        hidden (sequence of int): hidden sizes.
        activation (str): hidden nonlinearity.
        min_scale (float): lower bound of the standard deviation.
        name (str): prefix in Pyro's param store.

    Raises:
        ConfigError: unknown activation or a latent_dim < 1; at call time, ``y=None``.
    """

    def __init__(
        self,
        x_dim: int,
        y_dim: int,
        latent_dim: int = 50,
        hidden: Sequence[int] = (500, 500),
        activation: str = "relu",
        min_scale: float = 1e-4,
        name: str = "recognition_net",
    ) -> None:
        super().__init__()
        self.latent_dim = check_latent_dim(latent_dim)
        self.min_scale, self.name = min_scale, name
        self.recognition_net = mlp(int(x_dim) + int(y_dim), hidden, 2 * self.latent_dim, activation)

    def encode(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Location and scale of q(z | x, y), each (B, latent_dim)."""
        loc, raw = self.recognition_net(torch.cat([x, y], -1)).split(self.latent_dim, dim=-1)
        return loc, F.softplus(raw) + self.min_scale

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        pyro.module(self.name, self)
        if y is None:
            raise ConfigError(
                "the recognition network q(z | x, y) needs the output y; to predict y from x, "
                "sample the model's prior network (CVAE.sample)"
            )
        loc, scale = self.encode(x, y)
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("z", dist.Normal(loc, scale).to_event(1))
