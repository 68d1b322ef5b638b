"""The multimodal VAE of Wu & Goodman (2018), "Multimodal Generative Models for Scalable
Weakly-Supervised Learning", section 2: one latent z shared by an image and its label,
``z ~ N(0, I)``, ``image | z ~ Bernoulli(logits=f(z))``, ``label | z ~ Categorical(logits=g(z))``,
each modality observed or absent (:class:`MVAE`); or by the top and the bottom half of an
image, each ``Bernoulli(logits=f_i(z))`` (:class:`HalvesMVAE`, their section 4's image
transformations in the simplest form). Their guides are the products of experts
:class:`pyrolvm.guides.MVAEGuide` and :class:`pyrolvm.guides.HalvesMVAEGuide`.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import nn

from ..checks import check_batch
from ..errors import ConfigError
from ..nets import check_latent_dim, mlp


class MVAE(nn.Module):
    """Pyro model of a two-modality VAE over images and labels.

    ``model(image, label)`` with image of shape (B, D) (binary) and label of shape (B,) (int64
    classes), either one ``None`` (absent from the batch: its site is left out, so the ELBO
    bounds the log-likelihood of the modalities given), under one ``pyro.plate("data", B)``;
    latent site ``"z"`` (event shape (latent_dim,)), observed sites ``"image"`` (event shape
    (D,)) and ``"label"``.

    Args:
        data_dim (int): D, pixels per image.
        num_classes (int): label classes.
        latent_dim (int): size of z (> 0).
        hidden (sequence of int): hidden sizes of the image decoder (the label decoder has one
            hidden layer of ``hidden[-1]`` units, or none).
        activation (str): hidden nonlinearity.
        label_weight (float): lambda, the weight of the label's log-likelihood in training
            (``poutine.scale`` on the label site; Wu & Goodman 2018, section 4, weigh the
            label of MNIST by 50 against its 784 pixels). Set it to 1 (the attribute
            ``label_weight``) to evaluate likelihoods.
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
        label_weight: float = 1.0,
        name: str = "mvae",
    ) -> None:
        super().__init__()
        self.data_dim, self.num_classes = int(data_dim), int(num_classes)
        self.latent_dim = check_latent_dim(latent_dim)
        self.name = name
        self.label_weight = float(label_weight)
        self.image_decoder = mlp(self.latent_dim, hidden, self.data_dim, activation)
        self.label_decoder = mlp(self.latent_dim, tuple(hidden)[-1:], self.num_classes, activation)

    def forward(
        self, image: torch.Tensor | None = None, label: torch.Tensor | None = None
    ) -> torch.Tensor:
        pyro.module(self.name, self)
        if image is None and label is None:
            raise ConfigError("the MVAE needs at least one modality: an image or a label")
        if image is not None:
            check_batch(image, self.data_dim, "image", binary=True, network=self.image_decoder)
        ref = next(self.image_decoder.parameters())
        batch = image.shape[0] if image is not None else label.shape[0]  # type: ignore[union-attr]
        with pyro.plate("data", batch):
            loc = ref.new_zeros(self.latent_dim)  # (no scalar copied from the host)
            z = pyro.sample("z", dist.Normal(loc, torch.ones_like(loc)).to_event(1))
            if image is not None:
                pyro.sample(
                    "image", dist.Bernoulli(logits=self.image_decoder(z)).to_event(1), obs=image
                )
            if label is not None:
                with poutine.scale(scale=self.label_weight):
                    pyro.sample("label", dist.Categorical(logits=self.label_decoder(z)), obs=label)
        return z

    @torch.no_grad()
    def decode_image(self, z: torch.Tensor) -> torch.Tensor:
        """E[image | z], shape (..., D)."""
        return torch.sigmoid(self.image_decoder(z))

    @torch.no_grad()
    def label_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Logits of p(label | z), shape (..., num_classes)."""
        return self.label_decoder(z)


class HalvesMVAE(nn.Module):
    """Pyro model of a two-modality VAE over the top and the bottom half of an image.

    ``model(top, bottom)`` with top of shape (B, D_top) and bottom of shape (B, D_bottom)
    (binary), either one ``None`` (absent: its site is left out, so the ELBO bounds the
    log-likelihood of the half given), under one ``pyro.plate("data", B)``; latent site
    ``"z"`` (event shape (latent_dim,)), observed sites ``"top"`` and ``"bottom"``, each
    ``Bernoulli(logits=decoder_i(z)).to_event(1)``.

    Args:
        top_dim (int): D_top, pixels of the top half.
        bottom_dim (int): D_bottom, pixels of the bottom half.
        latent_dim (int): size of z (> 0).
        hidden (sequence of int): hidden sizes of each half's decoder.
        activation (str): hidden nonlinearity.
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
        name: str = "mvae_halves",
    ) -> None:
        super().__init__()
        self.top_dim, self.bottom_dim = int(top_dim), int(bottom_dim)
        self.latent_dim = check_latent_dim(latent_dim)
        self.name = name
        self.top_decoder = mlp(self.latent_dim, hidden, self.top_dim, activation)
        self.bottom_decoder = mlp(self.latent_dim, hidden, self.bottom_dim, activation)

    def forward(
        self, top: torch.Tensor | None = None, bottom: torch.Tensor | None = None
    ) -> torch.Tensor:
        pyro.module(self.name, self)
        if top is None and bottom is None:
            raise ConfigError("the MVAE needs at least one modality: the top or the bottom half")
        halves = (("top", top, self.top_decoder), ("bottom", bottom, self.bottom_decoder))
        for (site, half, decoder), dim in zip(halves, (self.top_dim, self.bottom_dim), strict=True):
            if half is not None:
                check_batch(half, dim, site, binary=True, network=decoder)
        ref = next(self.top_decoder.parameters())
        batch = top.shape[0] if top is not None else bottom.shape[0]  # type: ignore[union-attr]
        with pyro.plate("data", batch):
            loc = ref.new_zeros(self.latent_dim)  # (no scalar copied from the host)
            z = pyro.sample("z", dist.Normal(loc, torch.ones_like(loc)).to_event(1))
            for site, half, decoder in halves:
                if half is not None:
                    pyro.sample(site, dist.Bernoulli(logits=decoder(z)).to_event(1), obs=half)
        return z

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(E[top | z], E[bottom | z]), shapes (..., D_top) and (..., D_bottom)."""
        return torch.sigmoid(self.top_decoder(z)), torch.sigmoid(self.bottom_decoder(z))
