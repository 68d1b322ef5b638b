"""Likelihoods p(x | z) for images, from the decoder's output: Bernoulli (binary pixels),
Gaussian (real values), continuous Bernoulli (grey levels in [0, 1]) and a per-pixel
categorical over the grey levels of 8-bit (or other discrete-level) images; and what each
scores, so that log-likelihoods of different kinds of data are never compared."""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from pyro.distributions import TorchDistribution

#: The ``likelihood`` choices of :class:`pyrolvm.models.VAE`.
LIKELIHOODS: tuple[str, ...] = ("bernoulli", "gaussian", "continuous-bernoulli", "categorical")


def outputs_per_pixel(likelihood: str, levels: int = 256) -> int:
    """Decoder outputs per pixel: ``levels`` logits for ``"categorical"``, else 1."""
    return int(levels) if likelihood == "categorical" else 1


def to_levels(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Intensities in [0, 1] as grey-level indices ``round(x * (levels - 1))``, same dtype."""
    return (x * (levels - 1)).round()


def likelihood_dist(
    likelihood: str,
    out: torch.Tensor,
    log_scale: torch.Tensor | None = None,
    levels: int = 256,
) -> TorchDistribution:
    """p(x | z) from the decoder output ``out`` of shape (..., D * outputs_per_pixel), with
    event shape (D,):

    - ``"bernoulli"``: ``Bernoulli(logits=out)``, x in {0, 1};
    - ``"gaussian"``: ``Normal(out, exp(log_scale))``, real x;
    - ``"continuous-bernoulli"``: ``ContinuousBernoulli(logits=out)`` (Loaiza-Ganem &
      Cunningham 2019, "The continuous Bernoulli: fixing a pervasive error in variational
      autoencoders", eq. (7)), a normalized density on [0, 1] (nats of a density);
    - ``"categorical"``: ``Categorical(logits)`` over ``levels`` grey levels per pixel
      (van den Oord et al. 2016, "Pixel Recurrent Neural Networks", section 5.3: the 256-way
      softmax), whose values are the level indices ``to_levels(x, levels)``.
    """
    if likelihood == "bernoulli":
        return dist.Bernoulli(logits=out).to_event(1)
    if likelihood == "gaussian":
        assert log_scale is not None
        return dist.Normal(out, log_scale.exp()).to_event(1)
    if likelihood == "continuous-bernoulli":
        return dist.ContinuousBernoulli(logits=out).to_event(1)
    logits = out.reshape(out.shape[:-1] + (-1, int(levels)))
    return dist.Categorical(logits=logits).to_event(1)


def likelihood_mean(likelihood: str, d: TorchDistribution, levels: int = 256) -> torch.Tensor:
    """The mean image of p(x | z) in the data's units ([0, 1] intensities for the
    categorical: the mean level divided by ``levels - 1``), shape (..., D)."""
    if likelihood != "categorical":
        return d.mean
    probs = d.base_dist.probs  # type: ignore[attr-defined]
    grid = torch.arange(int(levels), dtype=probs.dtype, device=probs.device) / (levels - 1)
    return probs @ grid


def likelihood_sample(likelihood: str, d: TorchDistribution, levels: int = 256) -> torch.Tensor:
    """A draw of p(x | z) in the data's units, shape (..., D)."""
    x = d.sample()
    return x / (levels - 1) if likelihood == "categorical" else x


def scored_on(likelihood: str, binarize: str = "none", levels: int = 256) -> str:
    """What the test log-likelihood of a model with this likelihood scores, for metrics.json:
    ``"binarized"`` (Bernoulli on binarized pixels), ``"binary"`` (Bernoulli on data given
    binary), ``"8-bit"`` / ``"N-level"`` (categorical: probabilities of the discrete grey
    levels, comparable with other discrete models of the same levels), ``"grey, [0, 1]
    density"`` (continuous Bernoulli) or ``"real, density"`` (Gaussian): densities are not
    probabilities and are never compared with the discrete figures."""
    if likelihood == "bernoulli":
        return "binarized" if binarize != "none" else "binary"
    if likelihood == "categorical":
        return "8-bit" if int(levels) == 256 else f"{int(levels)}-level"
    if likelihood == "continuous-bernoulli":
        return "grey, [0, 1] density"
    return "real, density"


def bits_per_dim(nll: float | torch.Tensor, data_dim: int) -> float | torch.Tensor:
    """A negative log-likelihood in nats per datapoint as bits per dimension,
    ``nll / (D ln 2)``."""
    return nll / (data_dim * math.log(2))


__all__ = [
    "LIKELIHOODS",
    "bits_per_dim",
    "likelihood_dist",
    "likelihood_mean",
    "likelihood_sample",
    "outputs_per_pixel",
    "scored_on",
    "to_levels",
]
