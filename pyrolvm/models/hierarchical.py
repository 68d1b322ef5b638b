"""The VAE with two stochastic layers of Burda, Grosse & Salakhutdinov (2016), "Importance
Weighted Autoencoders", section 5: ``z2 ~ p(z2)``, ``z1 | z2 ~ N(mu(z2), diag(sigma(z2)^2))``,
``x | z1 ~ p(x | z1)``, with the paper's sizes (latents 100 and 50; deterministic layers
200-200 between x and z1, 100-100 between z1 and z2; tanh)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution
from torch import nn

from ..checks import check_batch
from ..errors import ConfigError
from ..nets import check_latent_dim, mlp, set_output_bias
from .likelihoods import (
    LIKELIHOODS,
    likelihood_dist,
    likelihood_mean,
    likelihood_sample,
    outputs_per_pixel,
    to_levels,
)
from .priors import Prior, make_prior


class TwoLayerVAE(nn.Module):
    """Pyro model of the two-stochastic-layer VAE (Burda et al. 2016, section 5).

    ``model(x)`` with x of shape (B, D) under one ``pyro.plate("data", B)``: latent sites
    ``"z2"`` (event shape (latent_dims[1],), the top layer, drawn from the prior) and ``"z1"``
    (event shape (latent_dims[0],), a diagonal Gaussian whose mean and ``softplus`` scale come
    from z2 through ``hidden[1]``), observed site ``"x"`` (event shape (D,)) from z1 through
    ``hidden[0]``. Pair it with :class:`pyrolvm.guides.TwoLayerGuide`
    (``q(z1 | x) q(z2 | z1)``). Registered with ``pyro.module(name, ...)``.

    Args:
        data_dim (int): D.
        latent_dims (tuple of int): sizes of z1 and z2 (Burda et al.: 100, 50).
        hidden (tuple of sequence of int): deterministic layers of p(x | z1) and p(z1 | z2)
            (Burda et al.: (200, 200) and (100, 100)).
        activation (str): hidden-layer nonlinearity.
        likelihood (str): as :class:`pyrolvm.models.VAE`.
        data_mean (torch.Tensor or None): mean training image (D,), the output bias's start
            (Bernoulli: its logit; Gaussian: itself).
        name (str): prefix in Pyro's param store.
        prior (str): p(z2): ``"normal"`` or ``"flow"`` (the VampPrior needs a one-layer guide).
        prior_flows (int): steps of the flow prior.
        levels (int): grey levels of the categorical likelihood.
        min_scale (float): lower bound of p(z1 | z2)'s standard deviation.

    Raises:
        ConfigError: unknown likelihood or activation, a latent size < 1, or ``prior="vamp"``.
    """

    prior: Prior

    def __init__(
        self,
        data_dim: int,
        latent_dims: Sequence[int] = (100, 50),
        hidden: Sequence[Sequence[int]] = ((200, 200), (100, 100)),
        activation: str = "tanh",
        likelihood: str = "bernoulli",
        data_mean: torch.Tensor | None = None,
        name: str = "decoder",
        prior: str = "normal",
        prior_flows: int = 2,
        levels: int = 256,
        min_scale: float = 1e-4,
    ) -> None:
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise ConfigError(
                f"unknown likelihood {likelihood!r}: choose one of {', '.join(LIKELIHOODS)}"
            )
        if prior == "vamp":
            raise ConfigError(
                "the VampPrior is for one stochastic layer: use --prior normal or flow with "
                "--layers 2"
            )
        self.data_dim, self.likelihood, self.name = int(data_dim), likelihood, name
        self.latent_dims = tuple(check_latent_dim(n) for n in latent_dims)
        self.latent_dim = self.latent_dims[0]
        self.levels, self.min_scale = int(levels), min_scale
        l1, l2 = self.latent_dims
        self.prior = make_prior(prior, l2, self.data_dim, prior_flows=prior_flows)
        self.top = mlp(l2, hidden[1], 2 * l1, activation)
        width = self.data_dim * outputs_per_pixel(likelihood, self.levels)
        self.decoder = mlp(l1, hidden[0], width, activation)
        if likelihood == "gaussian":
            self.log_scale = nn.Parameter(torch.full((self.data_dim,), math.log(0.1)))
        if data_mean is not None and likelihood in ("bernoulli", "gaussian"):
            mean = torch.as_tensor(data_mean, dtype=torch.float32)
            if likelihood == "bernoulli":
                mean = mean.clamp(1e-3, 1 - 1e-3)
                mean = mean.log() - (-mean).log1p()
            set_output_bias(self.decoder, mean)

    def conditional(self, z2: torch.Tensor) -> TorchDistribution:
        """p(z1 | z2) for z2 of shape (..., latent_dims[1]); event shape (latent_dims[0],)."""
        loc, raw = self.top(z2).split(self.latent_dims[0], dim=-1)
        return dist.Normal(loc, F.softplus(raw) + self.min_scale).to_event(1)

    def likelihood_dist(self, z1: torch.Tensor) -> TorchDistribution:
        """p(x | z1) for z1 of shape (..., latent_dims[0]); event shape (D,)."""
        return likelihood_dist(
            self.likelihood, self.decoder(z1), getattr(self, "log_scale", None), self.levels
        )

    def forward(self, x: torch.Tensor | None, batch_size: int | None = None) -> torch.Tensor:
        pyro.module(self.name, self)
        if x is not None:
            check_batch(
                x, self.data_dim, binary=self.likelihood == "bernoulli", network=self.decoder
            )
        batch_size = x.shape[0] if x is not None else batch_size
        with pyro.plate("data", batch_size):
            z2 = pyro.sample("z2", self.prior.distribution())
            z1 = pyro.sample("z1", self.conditional(z2))
            obs = x
            if x is not None and self.likelihood == "categorical":
                obs = to_levels(x, self.levels)
            pyro.sample("x", self.likelihood_dist(z1), obs=obs)
        return z1

    @torch.no_grad()
    def sample(self, num_samples: int, mean: bool = True) -> torch.Tensor:
        """Images from the model (z2 from the prior, z1 from p(z1 | z2), then the mean of
        p(x | z1) or a draw); shape (num_samples, D)."""
        z2 = self.prior.distribution().sample((num_samples,))
        return self.decode(self.conditional(z2).sample(), mean=mean)

    @torch.no_grad()
    def decode(self, z1: torch.Tensor, mean: bool = True) -> torch.Tensor:
        """The mean of p(x | z1) or a draw from it; shape (..., D)."""
        d = self.likelihood_dist(z1)
        if mean:
            return likelihood_mean(self.likelihood, d, self.levels)
        return likelihood_sample(self.likelihood, d, self.levels)


__all__ = ["TwoLayerVAE"]
