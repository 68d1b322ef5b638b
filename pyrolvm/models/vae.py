"""The variational autoencoder's generative model p(x, z) = N(z; 0, I) p_theta(x | z).

Kingma & Welling (2014), "Auto-Encoding Variational Bayes", section 3 and appendix C; the
architecture defaults follow Burda, Grosse & Salakhutdinov (2016), "Importance Weighted
Autoencoders", section 5 (784-200-200-50, tanh, output bias at the logit of the mean pixel).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import cast

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import TorchDistribution
from pyro.infer.util import is_validation_enabled
from torch import nn

from ..checks import check_batch
from ..errors import ConfigError, DataError
from ..nets import check_latent_dim, mlp, set_output_bias
from .likelihoods import (
    LIKELIHOODS,
    likelihood_dist,
    likelihood_mean,
    likelihood_sample,
    outputs_per_pixel,
    to_levels,
)
from .priors import PRIORS, Prior, make_prior


class VAE(nn.Module):
    """Pyro model of a VAE: ``z ~ N(0, I)``, ``x | z ~ Bernoulli(logits=f(z))`` or
    ``N(f(z), diag(exp(2 * log_scale)))`` with a learned per-pixel scale.

    Call ``model(x)`` with ``x`` of shape (B, D); one ``pyro.plate("data", B)`` covers the batch,
    the latent site is ``"z"`` (event shape (latent_dim,)) and the observed site ``"x"``
    (event shape (D,)). Calling ``model(None, batch_size=B)`` samples B images' worth of latent
    and likelihood without observations. The decoder is registered with ``pyro.module(name, ...)``.

    **Missing data.** ``model(x, mask)`` with a bool ``mask`` of shape (B, D), ``True`` where a
    pixel is observed, scores only the observed pixels: the site ``"x"`` is p(x | z) masked per
    pixel (Pyro's ``TorchDistribution.mask``), so its log-density is log p(x_obs | z), the
    ELBO bounds log p(x_obs) and importance sampling estimates it (Mattei & Frellsen 2019,
    "MIWAE", eq. 4). The values of ``x`` at missing pixels are ignored (any value in the
    likelihood's support). A datapoint with no observed pixel contributes zero likelihood.

    Args:
        data_dim (int): D, pixels per image.
        latent_dim (int): size of z (> 0).
        hidden (sequence of int): decoder hidden sizes.
        activation (str): ``tanh``, ``relu``, ``softplus`` or ``elu``.
        likelihood (str): ``"bernoulli"`` (x in {0, 1}) or ``"gaussian"`` (real x).
        data_mean (torch.Tensor or None): mean training image, shape (D,); the decoder's output
            bias starts at its logit (Bernoulli, clamped to [1e-3, 1 - 1e-3]) or at the mean
            itself (Gaussian), as in Burda et al. (2016).
        name (str): prefix of the decoder's parameters in Pyro's param store.
        prior (str): p(z), one of :data:`~pyrolvm.models.PRIORS`: ``"normal"``
            (N(0, I)), ``"vamp"`` (:class:`~pyrolvm.models.VampPrior`, needs
            ``posterior``) or ``"flow"`` (:class:`~pyrolvm.models.FlowPrior`); the
            prior module is ``self.prior``, registered with the decoder.
        num_pseudo_inputs (int): K of the VampPrior.
        posterior (callable or None): for the VampPrior, the guide's ``posterior(u)``
            (e.g. ``guide.posterior`` of :class:`~pyrolvm.guides.AmortizedNormal`).
        pseudo_init (torch.Tensor or None): initial pseudo-inputs, shape (K, D).
        prior_flows (int): steps of the flow prior.
        levels (int): grey levels of the ``"categorical"`` likelihood (256 for 8-bit images);
            the observed x in [0, 1] is scored as the level ``round(x * (levels - 1))``.

    The other likelihoods: ``"continuous-bernoulli"`` (a density on [0, 1] for grey levels
    without binarization) and ``"categorical"`` (see :func:`~pyrolvm.models.scored_on`).

    Raises:
        ConfigError: unknown likelihood, prior or activation, or a latent_dim < 1.
    """

    prior: Prior

    def __init__(
        self,
        data_dim: int,
        latent_dim: int = 50,
        hidden: Sequence[int] = (200, 200),
        activation: str = "tanh",
        likelihood: str = "bernoulli",
        data_mean: torch.Tensor | None = None,
        name: str = "decoder",
        prior: str = "normal",
        num_pseudo_inputs: int = 500,
        posterior: Callable[[torch.Tensor], TorchDistribution] | None = None,
        pseudo_init: torch.Tensor | None = None,
        prior_flows: int = 2,
        levels: int = 256,
    ) -> None:
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise ConfigError(
                f"unknown likelihood {likelihood!r}: choose one of {', '.join(LIKELIHOODS)}"
            )
        self.data_dim = int(data_dim)
        self.latent_dim = check_latent_dim(latent_dim)
        self.likelihood = likelihood
        self.name = name
        if prior not in PRIORS:
            raise ConfigError(f"unknown prior {prior!r}: choose one of {', '.join(PRIORS)}")
        if likelihood == "categorical" and int(levels) < 2:
            raise ConfigError(f"a categorical likelihood needs >= 2 levels, got {levels}")
        self.levels = int(levels)
        self.prior_name = prior
        self.prior = make_prior(
            prior,
            self.latent_dim,
            self.data_dim,
            num_pseudo_inputs,
            posterior,
            pseudo_init,
            prior_flows,
        )
        width = self.data_dim * outputs_per_pixel(likelihood, self.levels)
        self.decoder = mlp(self.latent_dim, hidden, width, activation)
        if likelihood == "gaussian":
            self.log_scale = nn.Parameter(torch.full((self.data_dim,), math.log(0.1)))
        if data_mean is not None and likelihood in ("bernoulli", "gaussian"):
            mean = torch.as_tensor(data_mean, dtype=torch.get_default_dtype()).cpu()
            if likelihood == "bernoulli":
                mean = mean.clamp(1e-3, 1 - 1e-3)
                mean = mean.log() - (-mean).log1p()
            set_output_bias(self.decoder, mean)

    def likelihood_dist(self, z: torch.Tensor) -> TorchDistribution:
        """The distribution p(x | z) for z of shape (..., latent_dim); event shape (D,)."""
        return likelihood_dist(
            self.likelihood, self.decoder(z), getattr(self, "log_scale", None), self.levels
        )

    def forward(
        self,
        x: torch.Tensor | None,
        mask: torch.Tensor | None = None,
        batch_size: int | None = None,
    ) -> torch.Tensor:
        pyro.module(self.name, self)
        if x is not None:
            check_batch(
                x,
                self.data_dim,
                binary=self.likelihood == "bernoulli",
                network=self.decoder,
            )
            if mask is not None:
                check_mask(mask, x)
        batch_size = x.shape[0] if x is not None else batch_size
        with pyro.plate("data", batch_size):
            z = pyro.sample("z", self.prior.distribution())
            obs = x
            if x is not None and self.likelihood == "categorical":
                obs = to_levels(x, self.levels)
            likelihood = self.likelihood_dist(z)
            if mask is not None:
                likelihood = mask_pixels(likelihood, mask)
            pyro.sample("x", likelihood, obs=obs)
        return z

    @torch.no_grad()
    def sample(self, num_samples: int, mean: bool = True) -> torch.Tensor:
        """Draw images from the model: z from the prior, then the mean of p(x | z)
        (``mean=True``) or a draw from it.

        Returns:
            torch.Tensor of shape (num_samples, D).
        """
        z = self.prior.distribution().sample((num_samples,))
        return self.decode(z, mean=mean)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, mean: bool = True) -> torch.Tensor:
        """The mean of p(x | z) (Bernoulli probabilities or Gaussian means) or a draw from it,
        for z of shape (..., latent_dim); returns shape (..., D)."""
        d = self.likelihood_dist(z)
        if mean:
            return likelihood_mean(self.likelihood, d, self.levels)
        return likelihood_sample(self.likelihood, d, self.levels)


def check_mask(mask: object, x: torch.Tensor) -> None:
    """Raise :class:`~pyrolvm.errors.DataError` unless ``mask`` is a bool tensor of the shape of
    ``x`` (B, D). Runs while Pyro's validation is enabled, as
    :func:`~pyrolvm.checks.check_batch`."""
    if not is_validation_enabled():
        return
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise DataError(
            "the mask must be a bool tensor, True where a pixel is observed "
            f"(e.g. mask = x_observed_flags.bool()), got {getattr(mask, 'dtype', type(mask))}"
        )
    if mask.shape != x.shape:
        raise DataError(
            f"the mask has shape {tuple(mask.shape)} but x has {tuple(x.shape)}: one flag per pixel"
        )


def mask_pixels(likelihood: TorchDistribution, mask: torch.Tensor) -> TorchDistribution:
    """A per-pixel likelihood ``Independent(base, 1)`` (event shape (D,)) with the pixels where
    ``mask`` (bool, shape (..., D)) is ``False`` removed from its log-density:
    ``Independent(base.mask(mask), 1)``, whose log-density is the sum over observed pixels.

    Raises:
        ConfigError: ``likelihood`` is not an ``Independent`` of per-pixel distributions.
    """
    if not isinstance(likelihood, dist.Independent) or likelihood.reinterpreted_batch_ndims != 1:
        raise ConfigError(
            "a pixel mask needs a likelihood that factorizes over pixels, got "
            f"{type(likelihood).__name__}"
        )
    base = cast(TorchDistribution, likelihood.base_dist)
    return base.mask(mask).to_event(1)
