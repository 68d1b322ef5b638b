"""A non-amortized guide: free variational parameters per datapoint (the lectures'
"phi^i per datapoint"), as in stochastic variational inference before amortization
(Hoffman, Blei, Wang & Paisley 2013), and the reference against which an encoder's
amortization gap is measured (Cremer, Li & Duvenaud 2018)."""

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError


def _softplus_inverse(y):
    return y + torch.log(-torch.expm1(-y))


class PerDatapoint(nn.Module):
    """Diagonal-Gaussian guide ``q(z_n) = N(m_n, diag(s_n^2))`` with its own (N, L) parameters
    for each of N datapoints; ``s = softplus(raw) + min_scale``.

    ``guide(x)`` with x of N rows (the datapoints in the order of the parameters) samples the
    site ``latent_site`` (event shape (L,)) under ``pyro.plate("data", N)``, so it pairs with
    any model of that signature whose latent site it covers (:class:`pyrolvm.models.VAE`,
    :class:`pyrolvm.models.LinearGaussian`). For SVI over a **subsampled** plate, call
    ``guide(x_batch, subsample=idx)`` with the batch's indices into the N datapoints: the guide
    then uses rows ``idx`` of its parameters under ``pyro.plate("data", N, subsample=idx)``,
    for a model that takes the same keyword and opens the same plate (its sites are scaled
    by N / B, an unbiased estimate of the full-data ELBO).

    Args:
        num_data (int): N.
        latent_dim (int): L.
        loc, scale (torch.Tensor or None): initial values, shape (N, L) (e.g. an encoder's
            output); default 0 and 1.
        latent_site (str): the model's latent site.
        min_scale (float): lower bound of the standard deviations.
        name (str): prefix of the parameters in Pyro's param store.

    Raises:
        ConfigError: N or L < 1, initial values of another shape, a batch of another size.
    """

    def __init__(
        self,
        num_data,
        latent_dim,
        loc=None,
        scale=None,
        latent_site="z",
        min_scale=1e-4,
        name="per_datapoint",
    ):
        super().__init__()
        if int(num_data) < 1 or int(latent_dim) < 1:
            raise ConfigError(f"PerDatapoint needs N, L >= 1, got {num_data}, {latent_dim}")
        shape = (int(num_data), int(latent_dim))
        loc = torch.zeros(shape) if loc is None else torch.as_tensor(loc).detach().clone()
        scale = torch.ones(shape) if scale is None else torch.as_tensor(scale).detach().clone()
        if loc.shape != shape or scale.shape != shape:
            raise ConfigError(
                f"initial loc and scale must have shape {shape}, got "
                f"{tuple(loc.shape)} and {tuple(scale.shape)}"
            )
        self.loc = nn.Parameter(loc)
        self.raw_scale = nn.Parameter(_softplus_inverse((scale - min_scale).clamp_min(1e-6)))
        self.num_data, self.latent_dim = shape
        self.latent_site, self.min_scale, self.name = latent_site, min_scale, name

    def encode(self, x=None):
        """The variational parameters (loc, scale), each of shape (N, L)."""
        return self.loc, F.softplus(self.raw_scale) + self.min_scale

    def forward(self, x, batch_size=None, subsample=None):
        pyro.module(self.name, self)
        loc, scale = self.encode()
        if subsample is None:
            if x is not None and x.shape[0] != self.num_data:
                raise ConfigError(
                    f"PerDatapoint holds {self.num_data} datapoints but got a "
                    f"batch of {x.shape[0]}: pass subsample=indices"
                )
            with pyro.plate("data", self.num_data):
                return pyro.sample(self.latent_site, dist.Normal(loc, scale).to_event(1))
        with pyro.plate("data", self.num_data, subsample=subsample) as idx:
            return pyro.sample(self.latent_site, dist.Normal(loc[idx], scale[idx]).to_event(1))
