"""The two-layer amortized guide ``q(z1 | x) q(z2 | z1)`` of Burda, Grosse & Salakhutdinov
(2016), section 5, for :class:`pyrolvm.models.TwoLayerVAE`."""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_batch
from ..nets import check_latent_dim, mlp


class TwoLayerGuide(nn.Module):
    """``q(z1 | x) = N(mu1(x), diag(sigma1(x)^2))`` through ``hidden[0]``, then
    ``q(z2 | z1) = N(mu2(z1), diag(sigma2(z1)^2))`` through ``hidden[1]`` (scales
    ``softplus(.) + min_scale``), both reparameterized, under one ``pyro.plate("data", B)``;
    sites ``"z1"`` and ``"z2"``. Registered with ``pyro.module(name, ...)``.

    Args:
        data_dim (int): D.
        latent_dims (tuple of int): sizes of z1 and z2.
        hidden (tuple of sequence of int): layers of q(z1 | x) and q(z2 | z1).
        activation (str): hidden-layer nonlinearity.
        min_scale (float): lower bound of the standard deviations.
        name (str): prefix in Pyro's param store.

    Raises:
        ConfigError: unknown activation or a latent size < 1.
    """

    def __init__(
        self,
        data_dim: int,
        latent_dims: Sequence[int] = (100, 50),
        hidden: Sequence[Sequence[int]] = ((200, 200), (100, 100)),
        activation: str = "tanh",
        min_scale: float = 1e-4,
        name: str = "encoder",
    ) -> None:
        super().__init__()
        self.data_dim = int(data_dim)
        self.latent_dims = tuple(check_latent_dim(n) for n in latent_dims)
        self.latent_dim = self.latent_dims[0]
        l1, l2 = self.latent_dims
        self.encoder = mlp(self.data_dim, hidden[0], 2 * l1, activation)
        self.upper = mlp(l1, hidden[1], 2 * l2, activation)
        self.min_scale, self.name = min_scale, name

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Location and scale of q(z1 | x), each (..., latent_dims[0])."""
        loc, raw = self.encoder(x).split(self.latent_dims[0], dim=-1)
        return loc, F.softplus(raw) + self.min_scale

    def forward(self, x: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        pyro.module(self.name, self)
        check_batch(x, self.data_dim, network=self.encoder)
        loc, scale = self.encode(x)
        with pyro.plate("data", x.shape[0]):
            z1 = pyro.sample("z1", dist.Normal(loc, scale).to_event(1))
            loc2, raw2 = self.upper(z1).split(self.latent_dims[1], dim=-1)
            pyro.sample("z2", dist.Normal(loc2, F.softplus(raw2) + self.min_scale).to_event(1))
        return z1


__all__ = ["TwoLayerGuide"]
