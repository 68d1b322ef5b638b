"""Amortized guides for discrete latents: q(z | x) a product of Bernoullis or of one-hot
categoricals, optionally replaced by their continuous relaxation (Concrete / Gumbel-softmax;
Maddison, Mnih & Teh 2017, Jang, Gu & Poole 2017) with or without the straight-through
estimator (Bengio et al. 2013; Jang et al. 2017, section 2.2), all from Pyro's distributions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import TorchDistribution
from pyro.poutine.runtime import InferDict
from torch import nn

from ..errors import ConfigError
from ..nets import ScalarOnDevice, check_latent_dim, mlp
from .baselines import Baseline

#: The ``relaxation`` choices of :class:`AmortizedBernoulli` and :class:`AmortizedCategorical`.
RELAXATIONS: tuple[str, ...] = ("none", "concrete", "straight_through")


class _AmortizedDiscrete(nn.Module):
    baseline: Baseline  # in __dict__, not a submodule (see __init__)

    def __init__(
        self,
        data_dim: int,
        latent_dim: int,
        out_dim: int,
        hidden: Sequence[int],
        activation: str,
        relaxation: str | None,
        temperature: float,
        latent_site: str,
        baseline: str,
        baseline_beta: float,
        name: str,
    ) -> None:
        super().__init__()
        relaxation = "none" if relaxation is None else relaxation
        if relaxation not in RELAXATIONS:
            raise ConfigError(
                f"unknown relaxation {relaxation!r}: choose one of {', '.join(RELAXATIONS)}"
            )
        if not float(temperature) > 0:
            raise ConfigError(f"the temperature must be positive, got {temperature}")
        if baseline != "none" and relaxation != "none":
            raise ConfigError(
                "a score-function baseline is for discrete latents sampled without relaxation: "
                "drop --relaxation or --baseline"
            )
        self.latent_dim = check_latent_dim(latent_dim)
        self.encoder = mlp(data_dim, hidden, out_dim, activation)
        self.relaxation = relaxation
        self.temperature = float(temperature)
        self._temperature = ScalarOnDevice()  # (made once on the device, not every step)
        self.latent_site = latent_site
        self.name = name
        # outside this module's children: registered under its own name (Pyro's nn_baseline)
        self.__dict__["baseline"] = Baseline(
            baseline, data_dim, baseline_beta, name=f"{name}_baseline"
        )

    def posterior(self, x: torch.Tensor) -> TorchDistribution:
        """The distribution q(z | x) under the current relaxation."""
        raise NotImplementedError

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        """``(probs,)``: the posterior's probabilities, shape (..., latent_dim) or
        (..., latent_dim, num_categories), for x of shape (..., D); a tuple like
        :meth:`pyrolvm.guides.AmortizedNormal.encode`'s, so ``encode(x)[0]`` is the mean."""
        return (self.posterior_discrete(x).mean,)

    def posterior_discrete(self, x: torch.Tensor) -> TorchDistribution:
        """q(z | x) without relaxation."""
        relaxation, self.relaxation = self.relaxation, "none"
        try:
            return self.posterior(x)
        finally:
            self.relaxation = relaxation

    def forward(self, x: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        pyro.module(self.name, self)
        q = self.posterior(x)
        infer: dict[str, Any] = (
            self.baseline.infer(self.latent_site, x) if self.relaxation == "none" else {}
        )
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample(self.latent_site, q, infer=cast(InferDict, infer))
        self.baseline.match(self.latent_site, infer, z.shape[: z.dim() - len(q.event_shape)])
        return z


class AmortizedBernoulli(_AmortizedDiscrete):
    """``q(z | x) = prod_j Bernoulli(z_j; sigmoid(f_j(x)))`` for the binary latents of
    :class:`pyrolvm.models.SigmoidBeliefNet`; site ``latent_site`` with event shape
    (latent_dim,), under ``pyro.plate("data", B)`` for x of shape (B, D).

    ``relaxation="none"`` samples discrete z (score-function estimators: ``TraceGraph_ELBO``
    with the chosen ``baseline``, or VIMCO); ``"concrete"`` samples Pyro's
    ``RelaxedBernoulli`` (pair it with the model's relaxed prior, ``temperature`` set there
    too); ``"straight_through"`` samples ``RelaxedBernoulliStraightThrough``: hard {0, 1}
    values forward, relaxed gradients backward (biased).

    Under a relaxation the reported loss is not a bound on log p(x) (the guide's density is
    that of the relaxed sample); evaluate a trained model with ``relaxation = "none"`` (the
    same encoder as a discrete proposal) and importance sampling.

    Args:
        data_dim (int): D.
        latent_dim (int): number of binary units.
        hidden (sequence of int): encoder hidden sizes (``()``: linear, as in NVIL's SBN).
        activation (str): encoder activation.
        relaxation (str): ``"none"``, ``"concrete"`` or ``"straight_through"``.
        temperature (float): relaxation temperature lambda > 0.
        latent_site (str): the model's latent site name.
        baseline (str): ``"none"``, ``"decaying_avg"`` or ``"neural"`` (discrete sampling only).
        baseline_beta (float): decay of the moving-average baseline.
        name (str): prefix in Pyro's param store.

    Raises:
        ConfigError: unknown relaxation, activation or baseline, temperature <= 0, or a
            baseline under a relaxation (its draws are reparameterized).
    """

    def __init__(
        self,
        data_dim: int,
        latent_dim: int = 200,
        hidden: Sequence[int] = (),
        activation: str = "tanh",
        relaxation: str = "none",
        temperature: float = 0.5,
        latent_site: str = "z",
        baseline: str = "none",
        baseline_beta: float = 0.9,
        name: str = "encoder",
    ) -> None:
        super().__init__(
            data_dim,
            latent_dim,
            latent_dim,
            hidden,
            activation,
            relaxation,
            temperature,
            latent_site,
            baseline,
            baseline_beta,
            name,
        )

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of q, shape (..., latent_dim), for x (..., D)."""
        return self.encoder(x)

    def posterior(self, x: torch.Tensor) -> TorchDistribution:
        """The distribution q(z | x), event shape (latent_dim,)."""
        logits = self.logits(x)
        if self.relaxation == "concrete":
            t = self._temperature(self.temperature, logits)
            return dist.RelaxedBernoulli(t, logits=logits).to_event(1)
        if self.relaxation == "straight_through":
            t = self._temperature(self.temperature, logits)
            return dist.RelaxedBernoulliStraightThrough(t, logits=logits).to_event(1)
        return dist.Bernoulli(logits=logits).to_event(1)


class AmortizedCategorical(_AmortizedDiscrete):
    """``q(z | x) = prod_j OneHotCategorical(z_j; softmax(f_j(x)))`` for the categorical
    variant of :class:`pyrolvm.models.SigmoidBeliefNet`; site ``latent_site`` with event
    shape (latent_dim, num_categories). Relaxations: Pyro's ``RelaxedOneHotCategorical``
    (Gumbel-softmax / Concrete) and ``RelaxedOneHotCategoricalStraightThrough``; otherwise as
    :class:`AmortizedBernoulli`.

    Raises:
        ConfigError: as :class:`AmortizedBernoulli`, or num_categories < 2.
    """

    def __init__(
        self,
        data_dim: int,
        latent_dim: int = 20,
        num_categories: int = 10,
        hidden: Sequence[int] = (200,),
        activation: str = "tanh",
        relaxation: str = "none",
        temperature: float = 0.5,
        latent_site: str = "z",
        baseline: str = "none",
        baseline_beta: float = 0.9,
        name: str = "encoder",
    ) -> None:
        if int(num_categories) < 2:
            raise ConfigError(f"num_categories must be >= 2, got {num_categories}")
        super().__init__(
            data_dim,
            latent_dim,
            latent_dim * int(num_categories),
            hidden,
            activation,
            relaxation,
            temperature,
            latent_site,
            baseline,
            baseline_beta,
            name,
        )
        self.num_categories = int(num_categories)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of q, shape (..., latent_dim, num_categories), for x (..., D)."""
        out = self.encoder(x)
        return out.reshape(out.shape[:-1] + (self.latent_dim, self.num_categories))

    def posterior(self, x: torch.Tensor) -> TorchDistribution:
        """The distribution q(z | x), event shape (latent_dim, num_categories)."""
        logits = self.logits(x)
        if self.relaxation == "concrete":
            t = self._temperature(self.temperature, logits)
            return dist.RelaxedOneHotCategorical(t, logits=logits).to_event(1)
        if self.relaxation == "straight_through":
            t = self._temperature(self.temperature, logits)
            return dist.RelaxedOneHotCategoricalStraightThrough(t, logits=logits).to_event(1)
        return dist.OneHotCategorical(logits=logits).to_event(1)
