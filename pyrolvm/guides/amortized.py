"""Amortized guides q(z | x): an encoder network maps each datapoint to its posterior
approximation (Kingma & Welling 2014, section 2.4 and appendix C.2)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution
from pyro.poutine.runtime import InferDict
from torch import nn

from ..checks import check_batch
from ..errors import ConfigError
from ..nets import check_latent_dim, mlp
from .baselines import Baseline


def non_reparameterized(d: TorchDistribution) -> dist.ExpandedDistribution:
    """``d`` with ``rsample`` switched off (Pyro's ``has_rsample_(False)``), wrapped in an
    ``ExpandedDistribution`` so that the switch survives the ``expand`` that ``pyro.plate``
    applies (``Independent`` re-creates its base distribution on ``expand`` and loses it)."""
    return dist.ExpandedDistribution(d.has_rsample_(False), d.batch_shape)


class AmortizedNormal(nn.Module):
    """Diagonal-Gaussian amortized guide ``q(z | x) = N(mu(x), diag(sigma(x)^2))``.

    ``guide(x)`` takes x of shape (B, D) under ``pyro.plate("data", B)`` and samples the site
    named ``latent_site`` with event shape (latent_dim,), reparameterized unless
    ``reparameterized=False``. The scale is ``softplus(.) + min_scale``. The encoder is
    registered with ``pyro.module(name, ...)``.

    With ``reparameterized=False`` the site is a Normal without ``rsample`` (Pyro's
    ``has_rsample_(False)``), so ``TraceGraph_ELBO`` uses the score-function estimator for it
    (REINFORCE on the same model as the pathwise estimator), with the ``baseline`` chosen here.

    Args:
        data_dim (int): D, size of one flattened datapoint.
        latent_dim (int): size of z (> 0).
        hidden (sequence of int): encoder hidden sizes.
        activation (str): ``tanh``, ``relu``, ``softplus`` or ``elu``.
        latent_site (str): name of the model's latent sample site (``"z"`` for
            :class:`pyrolvm.models.VAE`).
        min_scale (float): lower bound of the posterior standard deviation.
        name (str): prefix of the encoder's parameters in Pyro's param store.
        reparameterized (bool): sample with ``rsample`` (pathwise gradients) or not
            (score-function gradients).
        baseline (str): score-function baseline, ``"none"``, ``"decaying_avg"`` or ``"neural"``
            (see :mod:`pyrolvm.guides.baselines`); used by ``TraceGraph_ELBO`` only at a
            non-reparameterized site.
        baseline_beta (float): decay of the ``"decaying_avg"`` baseline.
        mask_input (bool): a guide for partly observed data, ``guide(x, mask)`` with a bool
            mask of shape (B, D) (``True``: observed): the encoder reads the zero-imputed image
            concatenated with the mask, ``[x * mask, mask]`` of shape (B, 2 D) (Nazábal et al.
            2020, "HI-VAE", section 3.2; Mattei & Frellsen 2019, "MIWAE", section 4).
            ``mask=None`` means every pixel observed.

    Raises:
        ConfigError: unknown activation or baseline, a baseline for reparameterized draws (it
            has nothing to reduce), or a latent_dim < 1; at call time, a mask given to a guide
            built without ``mask_input``.
    """

    baseline: Baseline  # in __dict__, not a submodule (see __init__)

    def __init__(
        self,
        data_dim: int,
        latent_dim: int = 50,
        hidden: Sequence[int] = (200, 200),
        activation: str = "tanh",
        latent_site: str = "z",
        min_scale: float = 1e-4,
        name: str = "encoder",
        reparameterized: bool = True,
        baseline: str = "none",
        baseline_beta: float = 0.9,
        mask_input: bool = False,
    ) -> None:
        super().__init__()
        if baseline != "none" and reparameterized:
            raise ConfigError(
                "a score-function baseline is for latents sampled without reparameterization: "
                "add --no-reparam (reparameterized=False) or drop --baseline"
            )
        self.mask_input = bool(mask_input)
        self.reparameterized = bool(reparameterized)
        # kept outside this module's children: its parameters are registered under their own
        # name (Pyro's nn_baseline), not with the encoder's
        self.__dict__["baseline"] = Baseline(
            baseline, data_dim, baseline_beta, name=f"{name}_baseline"
        )
        self.latent_dim = check_latent_dim(latent_dim)
        self.data_dim = int(data_dim)
        in_dim = 2 * self.data_dim if self.mask_input else self.data_dim
        self.encoder = mlp(in_dim, hidden, 2 * self.latent_dim, activation)
        self.latent_site = latent_site
        self.min_scale = min_scale
        self.name = name

    def encode(
        self, x: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior location and scale, each of shape (..., latent_dim), for x of shape
        (..., D); with ``mask_input`` the encoder reads ``zero_impute(x, mask)`` (an all-observed
        mask when ``mask`` is None)."""
        if self.mask_input:
            if mask is None:
                mask = torch.ones_like(x, dtype=torch.bool)
            x = zero_impute(x, mask)
        loc, raw = self.encoder(x).split(self.latent_dim, dim=-1)
        return loc, F.softplus(raw) + self.min_scale

    def posterior(self, x: torch.Tensor) -> TorchDistribution:
        """q(z | x) for x of shape (N, D): ``Normal(loc, scale).to_event(1)``, batch shape
        (N,), event shape (latent_dim,) (what a VampPrior mixes, at its pseudo-inputs)."""
        loc, scale = self.encode(x)
        return dist.Normal(loc, scale).to_event(1)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        batch_size: int | None = None,
    ) -> torch.Tensor:
        pyro.module(self.name, self)
        check_batch(x, self.data_dim, network=self.encoder)
        if self.mask_input:
            loc, scale = self.encode(x, mask)
        else:
            if mask is not None:
                raise ConfigError(
                    "this guide was built without mask_input: build it with "
                    "AmortizedNormal(..., mask_input=True) to encode partly observed data"
                )
            loc, scale = self.encode(x)
        q: TorchDistribution = dist.Normal(loc, scale)
        if not self.reparameterized:
            q = non_reparameterized(q)
        q = q.to_event(1)
        infer = self.baseline.infer(self.latent_site, x)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample(self.latent_site, q, infer=cast(InferDict, infer))
        self.baseline.match(self.latent_site, infer, z.shape[:-1])
        return z


def zero_impute(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The input of a missing-data encoder: the zero-imputed image concatenated with the mask,
    ``[x * mask, mask]`` of shape (..., 2 D) for ``x`` (floating) and ``mask`` (bool, ``True``
    where observed) of shape (..., D) (Nazábal et al. 2020, section 3.2)."""
    m = mask.to(x.dtype)
    return torch.cat([x * m, m], dim=-1)
