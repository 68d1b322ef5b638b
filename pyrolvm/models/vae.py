"""The variational autoencoder's generative model p(x, z) = N(z; 0, I) p_theta(x | z).

Kingma & Welling (2014), "Auto-Encoding Variational Bayes", section 3 and appendix C; the
architecture defaults follow Burda, Grosse & Salakhutdinov (2016), "Importance Weighted
Autoencoders", section 5 (784-200-200-50, tanh, output bias at the logit of the mean pixel).
The autoregressive decoder option (``decoder="pixelcnn"``) is the PixelVAE of Gulrajani,
Kumar, Ahmed, Taiga, Visin, Vazquez & Courville (2017), "PixelVAE: A Latent Variable Model
for Natural Images".
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
from .autoregressive import AutoregressiveBernoulli, PixelCNN
from .likelihoods import (
    LIKELIHOODS,
    likelihood_dist,
    likelihood_mean,
    likelihood_sample,
    outputs_per_pixel,
    to_levels,
)
from .priors import PRIORS, Prior, make_prior

#: The ``decoder`` choices of :class:`VAE`: ``"mlp"`` (p(x | z) factorizes over pixels) or
#: ``"pixelcnn"`` (autoregressive over pixels given z, PixelVAE).
DECODERS: tuple[str, ...] = ("mlp", "pixelcnn")


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
            (e.g. ``guide.posterior`` of :class:`~pyrolvm.guides.AmortizedNormal`), or later
            with ``model.prior.set_posterior(guide.posterior)``.
        pseudo_init (torch.Tensor or None): initial pseudo-inputs, shape (K, D).
        prior_flows (int): steps of the flow prior.
        levels (int): grey levels of the ``"categorical"`` likelihood (256 for 8-bit images);
            the observed x in [0, 1] is scored as the level ``round(x * (levels - 1))``.
        decoder (str): ``"mlp"`` (the default: x | z factorizes over pixels) or
            ``"pixelcnn"``, the PixelVAE decoder (Gulrajani et al. 2017, section 3; Bernoulli
            likelihood only): ``p(x | z) = prod_d Bernoulli(x_d | f_d(x_<d, z))`` in raster
            order, f a gated :class:`~pyrolvm.models.PixelCNN` of ``decoder_layers`` layers
            whose every layer reads a map of z: the MLP of ``hidden`` sends z to
            ``decoder_cond_channels`` feature maps of the image's size (van den Oord et al.
            2016, "Conditional Image Generation with PixelCNN Decoders", equation 5). log p(x |
            z) is exact in one pass (teacher forcing), so every objective and importance
            sampling work unchanged; drawing x is sequential, one pass per pixel.
        image_shape (tuple of int or None): (H, W) with H * W = D, needed by ``"pixelcnn"``.
        decoder_layers (int): gated layers of the ``"pixelcnn"`` decoder.
        decoder_channels (int): channels of each of its stacks.
        decoder_kernel (int): its odd kernel width.
        decoder_cond_channels (int): channels of the map of z it reads.

    The other likelihoods: ``"continuous-bernoulli"`` (a density on [0, 1] for grey levels
    without binarization) and ``"categorical"`` (see :func:`~pyrolvm.models.scored_on`).

    Raises:
        ConfigError: unknown likelihood, prior, activation or decoder, a latent_dim < 1, or
            a ``"pixelcnn"`` decoder without a Bernoulli likelihood or a matching image_shape.
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
        decoder: str = "mlp",
        image_shape: Sequence[int] | None = None,
        decoder_layers: int = 3,
        decoder_channels: int = 16,
        decoder_kernel: int = 5,
        decoder_cond_channels: int = 4,
    ) -> None:
        super().__init__()
        if decoder not in DECODERS:
            raise ConfigError(f"unknown decoder {decoder!r}: choose one of {', '.join(DECODERS)}")
        if decoder == "pixelcnn":
            if likelihood != "bernoulli":
                raise ConfigError(
                    f"the pixelcnn decoder models binary pixels: use the bernoulli likelihood, "
                    f"not {likelihood!r}"
                )
            if image_shape is None or math.prod(int(s) for s in image_shape) != int(data_dim):
                raise ConfigError(
                    f"the pixelcnn decoder needs the image shape (H, W) with H * W = {data_dim}, "
                    f"got {image_shape}"
                )
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
        self.decoder_kind = decoder
        if decoder == "pixelcnn":
            assert image_shape is not None
            self.pixelcnn = PixelCNN(
                image_shape,
                2,
                decoder_channels,
                decoder_layers,
                decoder_kernel,
                cond_channels=decoder_cond_channels,
            )
            width = self.data_dim * int(decoder_cond_channels)
            # the per-pixel logit bias of the mlp decoder's output layer (Burda et al. 2016)
            self.pixel_bias = nn.Parameter(torch.zeros(self.data_dim))
        else:
            width = self.data_dim * outputs_per_pixel(likelihood, self.levels)
        self.decoder = mlp(self.latent_dim, hidden, width, activation)
        if likelihood == "gaussian":
            self.log_scale = nn.Parameter(torch.full((self.data_dim,), math.log(0.1)))
        if data_mean is not None and likelihood in ("bernoulli", "gaussian"):
            mean = torch.as_tensor(data_mean, dtype=torch.get_default_dtype()).cpu()
            if likelihood == "bernoulli":
                mean = mean.clamp(1e-3, 1 - 1e-3)
                mean = mean.log() - (-mean).log1p()
            if decoder == "pixelcnn":
                with torch.no_grad():
                    self.pixel_bias.copy_(mean)
            else:
                set_output_bias(self.decoder, mean)

    def likelihood_dist(self, z: torch.Tensor) -> TorchDistribution:
        """The distribution p(x | z) for z of shape (..., latent_dim); event shape (D,)."""
        if self.decoder_kind == "pixelcnn":
            cond = self.decoder(z)
            shape = (self.pixelcnn.cond_channels, *self.pixelcnn.image_shape)
            cond = cond.reshape(cond.shape[:-1] + shape)
            return AutoregressiveBernoulli(self.pixelcnn, cond, self.pixel_bias)
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
        for z of shape (..., latent_dim); returns shape (..., D). The ``"pixelcnn"`` decoder's
        mean has no closed form: ``mean=True`` gives the probabilities ``p(x_d = 1 | x_<d, z)``
        along one ancestral draw (D network passes, as the draw itself)."""
        d = self.likelihood_dist(z)
        if isinstance(d, AutoregressiveBernoulli):
            x, probs = d.sample_with_probs()
            return probs if mean else x
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
