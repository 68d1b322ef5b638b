"""The product-of-experts guide of the multimodal VAE (Wu & Goodman 2018, section 2.1):
each modality's encoder is a Gaussian expert q(z | x_i), and the posterior given any subset S
of modalities is ``q(z | x_S) ∝ p(z) prod_{i in S} q(z | x_i)``, a Gaussian in closed form
(their eq. 4 with the prior expert), so one guide serves every subset. :class:`MVAEGuide`
has an image and a label expert, :class:`HalvesMVAEGuide` one expert per image half.

:class:`MoEGuide` combines the same experts as a mixture instead (Shi, Siddharth, Paige &
Torr 2019, MMVAE, section 3): ``q(z | x_1, x_2) = (q(z | x_1) + q(z | x_2)) / 2``, trained
with stratified sampling, one stratum per expert (:class:`StratifiedMixture`)."""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution, constraints
from torch import nn

from ..errors import ConfigError
from ..nets import check_latent_dim, mlp


def product_of_experts(
    locs: Sequence[torch.Tensor], scales: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The product of diagonal Gaussian experts N(loc_i, diag(scale_i^2)) and the prior expert
    N(0, I), normalized: precision ``1 + sum_i scale_i^-2``, mean
    ``(sum_i loc_i scale_i^-2) / precision`` (Wu & Goodman 2018, section 2.1; Cao & Fleet
    2014).

    Args:
        locs, scales: tensors of one shape (..., L) each, one per expert (at least one).

    Returns:
        (loc, scale) of the product, shape (..., L).

    Raises:
        ConfigError: no expert, or as many locations as scales.
    """
    if len(locs) != len(scales):
        raise ConfigError(f"{len(locs)} expert locations but {len(scales)} scales")
    if not locs:
        raise ConfigError("product_of_experts needs at least one expert besides the prior")
    precisions = torch.stack([s.pow(-2) for s in scales])
    precision = 1.0 + precisions.sum(0)
    loc = (torch.stack(list(locs)) * precisions).sum(0) / precision
    return loc, precision.rsqrt()


def gaussian_expert(
    out: torch.Tensor, latent_dim: int, min_scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loc, scale) of a diagonal Gaussian expert from a network's output of shape
    (..., 2 * latent_dim): the first half the location, ``softplus`` of the second half plus
    ``min_scale`` the scale."""
    loc, raw = out.split(latent_dim, dim=-1)
    return loc, F.softplus(raw) + min_scale


class MVAEGuide(nn.Module):
    """Product-of-experts guide ``q(z | image, label) ∝ p(z) q(z | image) q(z | label)`` of
    :class:`pyrolvm.models.MVAE`, with the model's signature: ``guide(image, label)``, either
    one ``None`` (its expert left out).

    Args:
        data_dim (int): D, pixels per image.
        num_classes (int): label classes.
        latent_dim (int): size of z (> 0).
        hidden (sequence of int): hidden sizes of the image expert (the label expert is an
            embedding followed by one hidden layer of ``hidden[-1]`` units).
        activation (str): hidden nonlinearity.
        min_scale (float): lower bound of each expert's standard deviation.
        name (str): prefix in Pyro's param store.

    Raises:
        ConfigError: a latent_dim < 1 or unknown activation; at call time, both modalities
            absent.
    """

    def __init__(
        self,
        data_dim: int,
        num_classes: int = 10,
        latent_dim: int = 20,
        hidden: Sequence[int] = (512, 512),
        activation: str = "relu",
        min_scale: float = 1e-3,
        name: str = "mvae_experts",
    ) -> None:
        super().__init__()
        self.latent_dim = check_latent_dim(latent_dim)
        self.min_scale, self.name = min_scale, name
        self.image_expert = mlp(int(data_dim), hidden, 2 * self.latent_dim, activation)
        width = tuple(hidden)[-1] if hidden else 2 * self.latent_dim
        self.label_embedding = nn.Embedding(int(num_classes), width)
        self.label_expert = mlp(width, (), 2 * self.latent_dim, activation)

    def _expert(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return gaussian_expert(out, self.latent_dim, self.min_scale)

    def experts(
        self, image: torch.Tensor | None = None, label: torch.Tensor | None = None
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The present modalities' experts: lists of locations and scales, each (B, L)."""
        locs, scales = [], []
        if image is not None:
            loc, scale = self._expert(self.image_expert(image))
            locs.append(loc)
            scales.append(scale)
        if label is not None:
            hidden = torch.relu(self.label_embedding(label))
            loc, scale = self._expert(self.label_expert(hidden))
            locs.append(loc)
            scales.append(scale)
        return locs, scales

    def encode(
        self, image: torch.Tensor | None = None, label: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Location and scale of q(z | present modalities), each (B, L)."""
        if image is None and label is None:
            raise ConfigError("the MVAE guide needs at least one modality: an image or a label")
        return product_of_experts(*self.experts(image, label))

    def forward(
        self, image: torch.Tensor | None = None, label: torch.Tensor | None = None
    ) -> torch.Tensor:
        pyro.module(self.name, self)
        loc, scale = self.encode(image, label)
        with pyro.plate("data", loc.shape[0]):
            return pyro.sample("z", dist.Normal(loc, scale).to_event(1))


class HalvesMVAEGuide(nn.Module):
    """Product-of-experts guide ``q(z | top, bottom) ∝ p(z) q(z | top) q(z | bottom)`` of
    :class:`pyrolvm.models.HalvesMVAE`, with the model's signature: ``guide(top, bottom)``,
    either one ``None`` (its expert left out).

    Args:
        top_dim (int): pixels of the top half.
        bottom_dim (int): pixels of the bottom half.
        latent_dim (int): size of z (> 0).
        hidden (sequence of int): hidden sizes of each half's expert.
        activation (str): hidden nonlinearity.
        min_scale (float): lower bound of each expert's standard deviation.
        name (str): prefix in Pyro's param store.

    Raises:
        ConfigError: a latent_dim < 1 or unknown activation; at call time, both halves absent.
    """

    def __init__(
        self,
        top_dim: int,
        bottom_dim: int,
        latent_dim: int = 20,
        hidden: Sequence[int] = (512, 512),
        activation: str = "relu",
        min_scale: float = 1e-3,
        name: str = "mvae_halves_experts",
    ) -> None:
        super().__init__()
        self.latent_dim = check_latent_dim(latent_dim)
        self.min_scale, self.name = min_scale, name
        self.top_expert = mlp(int(top_dim), hidden, 2 * self.latent_dim, activation)
        self.bottom_expert = mlp(int(bottom_dim), hidden, 2 * self.latent_dim, activation)

    def experts(
        self, top: torch.Tensor | None = None, bottom: torch.Tensor | None = None
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The present halves' experts: lists of locations and scales, each (B, L)."""
        locs, scales = [], []
        for half, expert in ((top, self.top_expert), (bottom, self.bottom_expert)):
            if half is not None:
                loc, scale = gaussian_expert(expert(half), self.latent_dim, self.min_scale)
                locs.append(loc)
                scales.append(scale)
        return locs, scales

    def encode(
        self, top: torch.Tensor | None = None, bottom: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Location and scale of q(z | present halves), each (B, L)."""
        if top is None and bottom is None:
            raise ConfigError("the MVAE guide needs at least one modality: the top or the bottom")
        return product_of_experts(*self.experts(top, bottom))

    def forward(
        self, top: torch.Tensor | None = None, bottom: torch.Tensor | None = None
    ) -> torch.Tensor:
        pyro.module(self.name, self)
        loc, scale = self.encode(top, bottom)
        with pyro.plate("data", loc.shape[0]):
            return pyro.sample("z", dist.Normal(loc, scale).to_event(1))


def uniform_mixture(locs: torch.Tensor, scales: torch.Tensor) -> TorchDistribution:
    """The uniform mixture of the diagonal Gaussians N(locs[..., m, :], diag(scales[..., m, :]^2)),
    m = 1..M: batch shape ``locs.shape[:-2]``, event shape (L,) (Pyro's
    ``MixtureSameFamily``)."""
    weights = dist.Categorical(logits=locs.new_zeros(locs.shape[:-1]))
    return dist.MixtureSameFamily(weights, dist.Normal(locs, scales).to_event(1))


class StratifiedMixture(TorchDistribution):
    """One stratum of a uniform Gaussian mixture: draws (reparameterized) from the mixture's
    component ``component`` alone, but its ``log_prob`` is the *mixture's* density.

    Averaging an objective over the M strata (one SVI objective per component) is the
    stratified estimator of MMVAE (Shi et al. 2019, section 3, eq. 3 with the ELBO, eq. 4
    with IWAE): ``(1 / M) sum_m E_{z ~ q_m}[log p(x, z) - log q_MoE(z | x)]``, the ELBO of the
    mixture q_MoE with lower variance than sampling the mixture's component at random (which
    is not reparameterizable). It is not a distribution to sample as the mixture: for that
    (evaluation by importance sampling) use ``uniform_mixture`` of this module.

    Args:
        locs, scales (torch.Tensor): shape (..., M, L), the components.
        component (int): the stratum m, 0 <= m < M.
    """

    # class attributes, as torch's own distributions declare them (its stubs say property)
    arg_constraints = {"locs": constraints.real, "scales": constraints.positive}  # pyright: ignore[reportAssignmentType]
    support = constraints.independent(constraints.real, 1)  # pyright: ignore[reportAssignmentType]
    has_rsample = True

    def __init__(
        self, locs: torch.Tensor, scales: torch.Tensor, component: int, validate_args=None
    ) -> None:
        self.locs, self.scales, self.component = locs, scales, int(component)
        super().__init__(locs.shape[:-2], locs.shape[-1:], validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        shape = torch.Size(batch_shape) + self.locs.shape[-2:]
        return StratifiedMixture(
            self.locs.expand(shape), self.scales.expand(shape), self.component, validate_args=False
        )

    def rsample(self, sample_shape=()):
        m = self.component
        component = dist.Normal(self.locs[..., m, :], self.scales[..., m, :])
        return component.rsample(torch.Size(sample_shape))

    def log_prob(self, value):
        return uniform_mixture(self.locs, self.scales).log_prob(value)


class MoEGuide(nn.Module):
    """Mixture-of-experts guide of MMVAE (Shi et al. 2019): the experts of a product-of-experts
    guide (``experts``, an :class:`MVAEGuide` or :class:`HalvesMVAEGuide`, whose networks it
    owns), combined as ``q(z | a, b) = (q(z | a) + q(z | b)) / 2`` without the prior expert;
    given one modality, q(z | a) is its expert alone.

    ``guide(a, b)`` samples ``"z"`` under ``pyro.plate("data", B)``: from the mixture
    (``MixtureSameFamily``; not reparameterized, so for importance sampling, not for training)
    when both are given, from the one expert otherwise. ``guide.stratum(m)`` is the guide of
    stratum m for training (:class:`StratifiedMixture`): train one objective per stratum.

    Args:
        experts (MVAEGuide or HalvesMVAEGuide): the unimodal experts.
        name (str): prefix in Pyro's param store.
    """

    def __init__(self, experts: MVAEGuide | HalvesMVAEGuide, name: str = "mmvae") -> None:
        super().__init__()
        self.experts, self.name = experts, name
        self.latent_dim = experts.latent_dim

    def encode(
        self, a: torch.Tensor | None = None, b: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Location and scale of the one present modality's expert, each (B, L).

        Raises:
            ConfigError: not exactly one modality given (the mixture is not one Gaussian).
        """
        if (a is None) == (b is None):
            raise ConfigError(
                "MoEGuide.encode takes one modality; the posterior given both is a mixture: "
                "use MoEGuide.posterior"
            )
        locs, scales = self.experts.experts(a, b)
        return locs[0], scales[0]

    def _components(self, a, b):
        if a is None and b is None:
            raise ConfigError("the MMVAE guide needs at least one modality")
        locs, scales = self.experts.experts(a, b)
        return torch.stack(locs, -2), torch.stack(scales, -2)  # (B, M, L)

    def posterior(self, a: torch.Tensor | None = None, b: torch.Tensor | None = None):
        """q(z | present modalities): batch shape (B,), event shape (L,)."""
        locs, scales = self._components(a, b)
        if locs.shape[-2] == 1:
            return dist.Normal(locs[..., 0, :], scales[..., 0, :]).to_event(1)
        return uniform_mixture(locs, scales)

    def forward(self, a: torch.Tensor | None = None, b: torch.Tensor | None = None) -> torch.Tensor:
        pyro.module(self.name, self)
        q = self.posterior(a, b)
        with pyro.plate("data", q.batch_shape[0]):
            return pyro.sample("z", q)

    def stratum(self, component: int):
        """The guide ``(a, b) -> z`` of stratum ``component`` (0: a's expert, 1: b's): z drawn
        from that expert, scored by the mixture's density (with one modality given, its expert
        alone whatever the stratum)."""

        def guide(a=None, b=None):
            pyro.module(self.name, self)
            locs, scales = self._components(a, b)
            if locs.shape[-2] == 1:
                q = dist.Normal(locs[..., 0, :], scales[..., 0, :]).to_event(1)
            else:
                q = StratifiedMixture(locs, scales, component)
            with pyro.plate("data", locs.shape[0]):
                return pyro.sample("z", q)

        return guide
