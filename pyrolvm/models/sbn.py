"""Sigmoid belief networks: VAEs whose latent variables are discrete.

A layer of binary latents ``z ~ Bernoulli(sigmoid(b))`` with ``x | z ~ Bernoulli(logits=f(z))``
(Neal 1992; the 200-unit SBN of Mnih & Gregor 2014, NVIL, section 6, and Mnih & Rezende 2016,
VIMCO, section 6.1), and its categorical variant whose latent is ``latent_dim`` one-hot
vectors of ``num_categories`` classes (Jang, Gu & Poole 2017, section 4.2). With a
``temperature`` the prior is replaced by its Concrete relaxation (Maddison, Mnih & Teh 2017,
eqs. (20)-(21)), the objective they optimize with relaxed (non-straight-through) guides.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import TorchDistribution
from torch import nn

from ..errors import ConfigError
from ..nets import ScalarOnDevice, check_latent_dim, mlp, set_output_bias

#: The ``latent`` types of :class:`SigmoidBeliefNet`.
LATENTS: tuple[str, ...] = ("bernoulli", "categorical")


class SigmoidBeliefNet(nn.Module):
    """Pyro model with discrete latents and a Bernoulli likelihood.

    ``model(x)`` takes x of shape (B, D) (binary) under one ``pyro.plate("data", B)``.
    The latent site ``"z"`` has event shape (latent_dim,) with values in {0, 1}
    (``latent="bernoulli"``) or (latent_dim, num_categories) one-hot rows
    (``latent="categorical"``); the observed site ``"x"`` has event shape (D,). The prior
    logits are learned. Parameters are registered with ``pyro.module(name, ...)``.

    Args:
        data_dim (int): D.
        latent_dim (int): number of binary units, or of categorical variables.
        latent (str): ``"bernoulli"`` or ``"categorical"``.
        num_categories (int): classes per categorical variable (>= 2).
        hidden (sequence of int): decoder hidden sizes; ``()`` is the linear SBN layer
            ``logits = W z + c``.
        activation (str): decoder activation.
        data_mean (torch.Tensor or None): mean training image (D,); the output bias starts at
            its logit.
        temperature (float or None): if set, the prior is the Concrete relaxation
            (``RelaxedBernoulli`` / ``RelaxedOneHotCategorical``) at this temperature, for use
            with a relaxed guide; ``None`` (default) is the discrete model.
        name (str): prefix in Pyro's param store.

    Raises:
        ConfigError: unknown latent type, num_categories < 2, non-positive temperature.
    """

    def __init__(
        self,
        data_dim: int,
        latent_dim: int = 200,
        latent: str = "bernoulli",
        num_categories: int = 10,
        hidden: Sequence[int] = (),
        activation: str = "tanh",
        data_mean: torch.Tensor | None = None,
        temperature: float | None = None,
        name: str = "decoder",
    ) -> None:
        super().__init__()
        if latent not in LATENTS:
            raise ConfigError(f"unknown latent type {latent!r}: choose one of {', '.join(LATENTS)}")
        if latent == "categorical" and int(num_categories) < 2:
            raise ConfigError(f"num_categories must be >= 2, got {num_categories}")
        if temperature is not None and not temperature > 0:
            raise ConfigError(f"the temperature must be positive, got {temperature}")
        self.data_dim = int(data_dim)
        self.latent_dim = check_latent_dim(latent_dim)
        self.latent = latent
        self.num_categories = int(num_categories) if latent == "categorical" else 1
        self.temperature = temperature
        self._temperature = ScalarOnDevice()  # (made once on the device, not every step)
        self.name = name
        shape = (
            (self.latent_dim,) if latent == "bernoulli" else (self.latent_dim, self.num_categories)
        )
        self.prior_logits = nn.Parameter(torch.zeros(shape))
        self.decoder = mlp(self.latent_dim * self.num_categories, hidden, self.data_dim, activation)
        if data_mean is not None:
            mean = (
                torch.as_tensor(data_mean, dtype=torch.get_default_dtype())
                .cpu()
                .clamp(1e-3, 1 - 1e-3)
            )
            set_output_bias(self.decoder, mean.log() - (-mean).log1p())

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """The event shape of z, (latent_dim,) or (latent_dim, num_categories)."""
        return tuple(self.prior_logits.shape)

    def prior(self) -> TorchDistribution:
        """p(z) (or its Concrete relaxation), event shape :attr:`latent_shape`."""
        logits = self.prior_logits
        if self.latent == "bernoulli":
            if self.temperature is None:
                return dist.Bernoulli(logits=logits).to_event(1)
            return dist.RelaxedBernoulli(
                self._temperature(self.temperature, logits), logits=logits
            ).to_event(1)
        if self.temperature is None:
            return dist.OneHotCategorical(logits=logits).to_event(1)
        return dist.RelaxedOneHotCategorical(
            self._temperature(self.temperature, logits), logits=logits
        ).to_event(1)

    def likelihood_dist(self, z: torch.Tensor) -> TorchDistribution:
        """p(x | z) for z of shape ``(..., *latent_shape)``; event shape (D,)."""
        flat = z.reshape(z.shape[: z.dim() - len(self.latent_shape)] + (-1,))
        return dist.Bernoulli(logits=self.decoder(flat)).to_event(1)

    def forward(self, x: torch.Tensor | None, batch_size: int | None = None) -> torch.Tensor:
        pyro.module(self.name, self)
        batch_size = x.shape[0] if x is not None else batch_size
        with pyro.plate("data", batch_size):
            z = pyro.sample("z", self.prior())
            pyro.sample("x", self.likelihood_dist(z), obs=x)
        return z

    def enumerate_latents(self, max_states: int = 2**16) -> torch.Tensor:
        """All latent states, shape ``(S, *latent_shape)``, for exact sums over z.

        Raises:
            ConfigError: more than ``max_states`` states.
        """
        c = 2 if self.latent == "bernoulli" else self.num_categories
        num = c**self.latent_dim
        if num > max_states:
            raise ConfigError(
                f"{num} latent states exceed max_states={max_states}: exact enumeration is "
                "only for small models; use importance sampling (log_likelihood)"
            )
        states = torch.arange(c, device=self.prior_logits.device)
        idx = torch.cartesian_prod(*[states] * self.latent_dim).reshape(num, -1)
        if self.latent == "bernoulli":
            return idx.to(self.prior_logits.dtype)
        return nn.functional.one_hot(idx, c).to(self.prior_logits.dtype)

    @torch.no_grad()
    def log_marginal(self, x: torch.Tensor, max_states: int = 2**16) -> torch.Tensor:
        """Exact log p(x) in nats by summing over every latent state, for x (B, D); returns
        (B,). Only for small models (see :meth:`enumerate_latents`); discrete prior only.

        Raises:
            ConfigError: too many states, or a relaxed (temperature) prior.
        """
        if self.temperature is not None:
            raise ConfigError("log_marginal needs the discrete prior (temperature=None)")
        z = self.enumerate_latents(max_states)  # (S, ...)
        log_prior = self.prior().log_prob(z)  # (S,)
        log_lik = self.likelihood_dist(z.unsqueeze(1)).log_prob(x)  # (S, B)
        return torch.logsumexp(log_prior.unsqueeze(1) + log_lik, dim=0)

    @torch.no_grad()
    def sample(self, num_samples: int, mean: bool = True) -> torch.Tensor:
        """Images from the model: z from the prior, then the Bernoulli means (``mean=True``)
        or a draw; shape (num_samples, D)."""
        return self.decode(self.prior().sample((num_samples,)), mean=mean)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, mean: bool = True) -> torch.Tensor:
        """The Bernoulli means of p(x | z) (or a draw) for z of shape ``(..., *latent_shape)``;
        z may also be relaxed or a probability vector (the decoder is applied as is).
        Returns shape (..., D)."""
        d = self.likelihood_dist(z)
        return d.mean if mean else d.sample()
