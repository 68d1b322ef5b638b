"""The conditional VAE for structured output prediction and its deterministic baseline.

Sohn, Lee & Yan (2015), "Learning Structured Output Representation using Deep Conditional
Generative Models", section 3 and figure 1: for an input x, a latent z is drawn from a learned
conditional prior p(z | x) and the output y from the generation network p(y | x, z); the
recognition network q(z | x, y) is the guide (:class:`pyrolvm.guides.CVAEGuide`). The
baseline is the deterministic network of their section 4.1 (figure 1a), ``y ~ p(y | x)`` with
no latent, whose prediction ŷ the CVAE's prior network may read (figure 1d, "recurrent
connection"), as Pyro's ``examples/cvae`` does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution
from torch import nn

from ..errors import ConfigError
from ..nets import check_latent_dim, mlp

#: The ``likelihood`` choices of :class:`CVAE`.
CVAE_LIKELIHOODS: tuple[str, ...] = ("bernoulli", "gaussian")
#: The ``prior`` choices of :class:`CVAE`: the learned p(z | x), or N(0, I) whatever x.
CVAE_PRIORS: tuple[str, ...] = ("conditional", "standard")


class BaselineNet(nn.Module):
    """The deterministic baseline as a Pyro model without latent variables:
    ``y | x ~ Bernoulli(logits=f(x))`` (Sohn et al. 2015, figure 1a).

    ``model(x, y)`` with x of shape (B, x_dim) and y of shape (B, y_dim) under one
    ``pyro.plate("data", B)``; the observed site is ``"y"`` (event shape (y_dim,)). Its guide is
    :func:`no_latents`; the ELBO is then exactly log p(y | x), so ``pyrolvm.inference.train``
    fits it by maximum likelihood and importance sampling (any K) returns log p(y | x).

    Args:
        x_dim (int): size of the input x.
        y_dim (int): size of the output y.
        hidden (sequence of int): hidden sizes.
        activation (str): hidden nonlinearity.
        name (str): prefix in Pyro's param store.

    Raises:
        ConfigError: unknown activation or a non-positive size.
    """

    def __init__(
        self,
        x_dim: int,
        y_dim: int,
        hidden: Sequence[int] = (500, 500),
        activation: str = "relu",
        name: str = "baseline_net",
    ) -> None:
        super().__init__()
        self.x_dim, self.y_dim, self.name = int(x_dim), int(y_dim), name
        self.net = mlp(self.x_dim, hidden, self.y_dim, activation)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        pyro.module(self.name, self)
        logits = self.net(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("y", dist.Bernoulli(logits=logits).to_event(1), obs=y)
        return logits

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """ŷ = E[y | x], the Bernoulli means, shape (B, y_dim)."""
        return torch.sigmoid(self.net(x))


def no_latents(*args: object, **kwargs: object) -> None:
    """The guide of a model without latent variables (:class:`BaselineNet`): samples nothing."""


class CVAE(nn.Module):
    """Pyro model of the conditional VAE: ``z | x ~ N(mu(x), diag(sigma(x)^2))`` (the
    conditional prior network; ``prior="standard"``: ``z ~ N(0, I)`` independent of x, the
    class-conditional VAE of Kingma et al. 2014's M2 with the label observed),
    ``y | x, z ~ Bernoulli(logits=g(x, z))`` or ``N(g(x, z), diag(exp(2 * log_scale)))``
    (the generation network).

    The input x is any vector: quadrants of an image (Sohn et al. 2015, section 4.1), or a
    one-hot label with the image as the output y (the class-conditional VAE,
    ``pyrolvm train cvae --condition label``).

    ``model(x, y)`` with x of shape (B, x_dim) and y of shape (B, y_dim) (``y=None``: sample
    it) under one ``pyro.plate("data", B)``; latent site ``"z"`` (event shape (latent_dim,)),
    observed site ``"y"`` (event shape (y_dim,)). With the guide q(z | x, y) the ELBO bounds
    log p(y | x) (Sohn et al. 2015, eq. 4) and importance sampling estimates it (their eq. 6,
    with q as the proposal).

    Args:
        x_dim (int): size of the input x.
        y_dim (int): size of the output y.
        latent_dim (int): size of z (> 0).
        hidden (sequence of int): hidden sizes of the prior and generation networks.
        activation (str): hidden nonlinearity.
        likelihood (str): ``"bernoulli"`` (y in {0, 1}) or ``"gaussian"``.
        baseline (BaselineNet or None): a trained baseline whose prediction ŷ(x) the prior
            network reads beside x (Sohn et al. 2015, section 3.3); it is held fixed (no
            gradient flows into it).
        prior (str): ``"conditional"`` (the learned prior network p(z | x)) or
            ``"standard"`` (N(0, I); no prior network, so no baseline either).
        min_scale (float): lower bound of the prior's standard deviation.
        name (str): prefix in Pyro's param store.

    Raises:
        ConfigError: unknown likelihood, prior or activation, a latent_dim < 1, a baseline of
            other sizes, or a baseline with the standard prior.
    """

    def __init__(
        self,
        x_dim: int,
        y_dim: int,
        latent_dim: int = 50,
        hidden: Sequence[int] = (500, 500),
        activation: str = "relu",
        likelihood: str = "bernoulli",
        baseline: BaselineNet | None = None,
        min_scale: float = 1e-4,
        name: str = "cvae",
        prior: str = "conditional",
    ) -> None:
        super().__init__()
        if likelihood not in CVAE_LIKELIHOODS:
            raise ConfigError(
                f"unknown likelihood {likelihood!r}: choose one of {', '.join(CVAE_LIKELIHOODS)}"
            )
        if prior not in CVAE_PRIORS:
            raise ConfigError(f"unknown prior {prior!r}: choose one of {', '.join(CVAE_PRIORS)}")
        if baseline is not None and prior == "standard":
            raise ConfigError(
                "the baseline's prediction feeds the prior network, which the standard prior "
                "N(0, I) has not: drop the baseline or use prior='conditional'"
            )
        if baseline is not None and (baseline.x_dim, baseline.y_dim) != (int(x_dim), int(y_dim)):
            raise ConfigError(
                f"the baseline maps {baseline.x_dim} -> {baseline.y_dim} values, the CVAE "
                f"{x_dim} -> {y_dim}: build both for the same input and output"
            )
        self.x_dim, self.y_dim = int(x_dim), int(y_dim)
        self.latent_dim = check_latent_dim(latent_dim)
        self.likelihood, self.min_scale, self.name = likelihood, min_scale, name
        self.baseline, self.prior_kind = baseline, prior
        prior_in = self.x_dim + (self.y_dim if baseline is not None else 0)
        self.prior_net = (
            mlp(prior_in, hidden, 2 * self.latent_dim, activation)
            if prior == "conditional"
            else None
        )
        self.generation_net = mlp(self.x_dim + self.latent_dim, hidden, self.y_dim, activation)
        if likelihood == "gaussian":
            self.log_scale = nn.Parameter(torch.full((self.y_dim,), math.log(0.1)))

    def prior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Location and scale of p(z | x), each (B, latent_dim), for x of shape (B, x_dim)."""
        if self.prior_net is None:
            loc = x.new_zeros(x.shape[:-1] + (self.latent_dim,))
            return loc, torch.ones_like(loc)
        if self.baseline is not None:
            with torch.no_grad():
                y_hat = self.baseline.predict(x)
            x = torch.cat([x, y_hat], dim=-1)
        loc, raw = self.prior_net(x).split(self.latent_dim, dim=-1)
        return loc, F.softplus(raw) + self.min_scale

    def likelihood_dist(self, x: torch.Tensor, z: torch.Tensor) -> TorchDistribution:
        """p(y | x, z) for z of shape (..., B, latent_dim) and x of shape (B, x_dim);
        event shape (y_dim,)."""
        out = self.generation_net(torch.cat([x.expand(z.shape[:-1] + x.shape[-1:]), z], -1))
        if self.likelihood == "bernoulli":
            return dist.Bernoulli(logits=out).to_event(1)
        return dist.Normal(out, self.log_scale.exp()).to_event(1)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        pyro.module(self.name, self)
        loc, scale = self.prior(x)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(loc, scale).to_event(1))
            pyro.sample("y", self.likelihood_dist(x, z), obs=y)
        return z

    @torch.no_grad()
    def sample(self, x: torch.Tensor, num_samples: int = 1, mean: bool = True) -> torch.Tensor:
        """Outputs for each input: z ~ p(z | x), then the mean of p(y | x, z) (``mean=True``)
        or a draw from it.

        Returns:
            torch.Tensor of shape (num_samples, B, y_dim).
        """
        loc, scale = self.prior(x)
        z = dist.Normal(loc, scale).sample((int(num_samples),))
        d = self.likelihood_dist(x, z)
        return d.mean if mean else d.sample()
