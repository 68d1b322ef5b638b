"""Amortized guides q(z | x): an encoder network maps each datapoint to its posterior
approximation (Kingma & Welling 2014, section 2.4 and appendix C.2)."""

import pyro
import pyro.distributions as dist
import torch.nn.functional as F
from torch import nn

from ..nets import check_latent_dim, mlp


class AmortizedNormal(nn.Module):
    """Diagonal-Gaussian amortized guide ``q(z | x) = N(mu(x), diag(sigma(x)^2))``.

    ``guide(x)`` takes x of shape (B, D) under ``pyro.plate("data", B)`` and samples the site
    named ``latent_site`` with event shape (latent_dim,), reparameterized. The scale is
    ``softplus(.) + min_scale``. The encoder is registered with ``pyro.module(name, ...)``.

    Args:
        data_dim (int): D, size of one flattened datapoint.
        latent_dim (int): size of z (> 0).
        hidden (sequence of int): encoder hidden sizes.
        activation (str): ``tanh``, ``relu``, ``softplus`` or ``elu``.
        latent_site (str): name of the model's latent sample site (``"z"`` for
            :class:`pyrolvm.models.VAE`).
        min_scale (float): lower bound of the posterior standard deviation.
        name (str): prefix of the encoder's parameters in Pyro's param store.

    Raises:
        ConfigError: unknown activation, or a latent_dim < 1.
    """

    def __init__(self, data_dim, latent_dim=50, hidden=(200, 200), activation="tanh",
                 latent_site="z", min_scale=1e-4, name="encoder"):
        super().__init__()
        self.latent_dim = check_latent_dim(latent_dim)
        self.encoder = mlp(data_dim, hidden, 2 * self.latent_dim, activation)
        self.latent_site = latent_site
        self.min_scale = min_scale
        self.name = name

    def encode(self, x):
        """Posterior location and scale, each of shape (..., latent_dim), for x of shape (..., D)."""
        loc, raw = self.encoder(x).split(self.latent_dim, dim=-1)
        return loc, F.softplus(raw) + self.min_scale

    def forward(self, x, batch_size=None):
        pyro.module(self.name, self)
        loc, scale = self.encode(x)
        with pyro.plate("data", x.shape[0]):
            return pyro.sample(self.latent_site, dist.Normal(loc, scale).to_event(1))
