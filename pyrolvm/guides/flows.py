"""Richer amortized guides: a full-covariance Gaussian and normalizing flows on top of the
amortized Gaussian (planar flows, inverse autoregressive flows), built from Pyro's
distributions and (conditional) transforms.

Every guide here samples one reparameterized site (``rsample``), so it pairs with every
reparameterized objective (Trace_ELBO, IWAE, DReG, STL, ...). DReG and STL evaluate
``log q(z | x)`` at the sampled z with the guide's parameters detached
(:class:`pyrolvm.inference.MultiSampleELBO`'s ``stop_guide_params``, a detached copy of the
site's distribution): this works for the full-covariance Gaussian (a closed-form density) and
for IAF (the detached copy inverts the autoregressive transform, one network pass per latent
dimension and step, so the guide's log density costs ``latent_dim`` times more there); a
planar flow has no inverse in Pyro, so DReG and STL refuse planar guides with a
:class:`~pyrolvm.errors.ConfigError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import pyro
import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
import torch.nn.functional as F
from pyro.distributions import ConditionalTransformModule, TorchDistribution
from torch import nn
from torch.distributions.utils import vec_to_tril_matrix

from ..checks import check_batch
from ..errors import ConfigError
from ..nets import check_latent_dim, mlp

#: The ``flow`` choices of :class:`AmortizedFlow`.
FLOWS: tuple[str, ...] = ("planar", "iaf")


class AmortizedFullCovariance(nn.Module):
    """Full-covariance Gaussian amortized guide ``q(z | x) = N(mu(x), L(x) L(x)^T)``.

    The encoder outputs the mean (latent_dim), the raw diagonal of the Cholesky factor
    (latent_dim, mapped by ``softplus(.) + min_scale`` to a positive diagonal) and its
    ``latent_dim * (latent_dim - 1) / 2`` strictly lower entries; the site is Pyro's
    ``MultivariateNormal(loc, scale_tril=L)`` (reparameterized). ``guide(x)`` takes x of shape
    (B, D) under ``pyro.plate("data", B)``; the encoder is registered with
    ``pyro.module(name, ...)``.

    Args:
        data_dim (int): D, size of one flattened datapoint.
        latent_dim (int): size of z (> 0).
        hidden (sequence of int): encoder hidden sizes.
        activation (str): ``tanh``, ``relu``, ``softplus`` or ``elu``.
        latent_site (str): name of the model's latent site.
        min_scale (float): lower bound of the Cholesky factor's diagonal.
        name (str): prefix of the encoder's parameters in Pyro's param store.

    Raises:
        ConfigError: unknown activation, or a latent_dim < 1.
    """

    def __init__(
        self,
        data_dim: int,
        latent_dim: int = 50,
        hidden: Sequence[int] = (200, 200),
        activation: str = "tanh",
        latent_site: str = "z",
        min_scale: float = 1e-4,
        name: str = "encoder",
    ) -> None:
        super().__init__()
        self.latent_dim = check_latent_dim(latent_dim)
        self.data_dim = int(data_dim)
        n = self.latent_dim
        self.encoder = mlp(data_dim, hidden, 2 * n + n * (n - 1) // 2, activation)
        self.latent_site, self.min_scale, self.name = latent_site, min_scale, name

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean, shape (..., latent_dim), and Cholesky factor ``scale_tril``, shape
        (..., latent_dim, latent_dim), lower triangular with positive diagonal, for x of shape
        (..., D)."""
        n = self.latent_dim
        loc, raw, off = self.encoder(x).split([n, n, n * (n - 1) // 2], dim=-1)
        tril = torch.diag_embed(F.softplus(raw) + self.min_scale)
        if n > 1:
            tril = tril + vec_to_tril_matrix(off, diag=-1)
        return loc, tril

    def posterior(self, x: torch.Tensor) -> TorchDistribution:
        """q(z | x) for x of shape (N, D): batch shape (N,), event shape (latent_dim,)."""
        loc, tril = self.encode(x)
        return dist.MultivariateNormal(loc, scale_tril=tril)

    def forward(self, x: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        pyro.module(self.name, self)
        check_batch(x, self.data_dim, network=self.encoder)
        with pyro.plate("data", x.shape[0]):
            return pyro.sample(self.latent_site, self.posterior(x))


class AmortizedFlow(nn.Module):
    """An amortized Gaussian ``N(mu(x), diag(sigma(x)^2))`` pushed through ``num_flows``
    conditional flow steps whose parameters depend on a context ``h(x)`` from the same
    encoder: the site is a ``TransformedDistribution`` (reparameterized), with the
    log-determinants computed by Pyro's transforms.

    - ``flow="planar"``: planar flows (Rezende & Mohamed 2015, "Variational Inference with
      Normalizing Flows", eq. (10)-(12)), with amortized parameters ``u, w, b = g(h(x))``
      (Pyro's ``ConditionalPlanar``, a ``DenseNN`` of the context).
    - ``flow="iaf"``: inverse autoregressive flows (Kingma et al. 2016, "Improved Variational
      Inference with Inverse Autoregressive Flow", section 4 and eq. (10)-(11)), each step
      Pyro's ``ConditionalAffineAutoregressive`` on a ``ConditionalAutoRegressiveNN`` that
      takes the context h(x), with the ``stable`` (sigmoid-gated) update of the paper's
      eq. (14); each step has its own random order of the latent dimensions.

    The encoder maps x of shape (B, D) to ``2 * latent_dim + context_dim`` outputs (mean,
    raw scale through ``softplus(.) + min_scale``, context). Registered with
    ``pyro.module(name, ...)`` (the encoder and the flows' networks). Under DReG/STL the
    IAF's log density with detached parameters inverts the autoregressive steps (slower by a
    factor ``latent_dim``); a planar flow has no inverse, and those objectives refuse it.

    Args:
        data_dim (int): D.
        latent_dim (int): size of z (> 0).
        flow (str): ``"planar"`` or ``"iaf"``.
        num_flows (int): number of flow steps (>= 1).
        hidden (sequence of int): encoder hidden sizes.
        activation (str): encoder nonlinearity.
        context_dim (int): size of h(x) (> 0).
        flow_hidden (sequence of int or None): hidden sizes of each step's network (default
            ``(2 * latent_dim,)`` rounded up to at least 16, for IAF a single layer of that size).
        latent_site (str): name of the model's latent site.
        min_scale (float): lower bound of the base Gaussian's standard deviation.
        name (str): prefix in Pyro's param store.

    Raises:
        ConfigError: unknown flow or activation, ``num_flows`` or ``context_dim`` < 1, or a
            latent_dim < 1.
    """

    def __init__(
        self,
        data_dim: int,
        latent_dim: int = 50,
        flow: str = "iaf",
        num_flows: int = 4,
        hidden: Sequence[int] = (200, 200),
        activation: str = "tanh",
        context_dim: int = 32,
        flow_hidden: Sequence[int] | None = None,
        latent_site: str = "z",
        min_scale: float = 1e-4,
        name: str = "encoder",
    ) -> None:
        super().__init__()
        if flow not in FLOWS:
            raise ConfigError(f"unknown flow {flow!r}: choose one of {', '.join(FLOWS)}")
        if int(num_flows) < 1:
            raise ConfigError(f"num_flows must be >= 1 flow steps, got {num_flows!r}")
        if int(context_dim) < 1:
            raise ConfigError(f"context_dim must be >= 1, got {context_dim!r}")
        self.latent_dim = check_latent_dim(latent_dim)
        self.data_dim, self.flow = int(data_dim), flow
        self.num_flows, self.context_dim = int(num_flows), int(context_dim)
        n = self.latent_dim
        self.encoder = mlp(data_dim, hidden, 2 * n + self.context_dim, activation)
        sizes = list(flow_hidden) if flow_hidden is not None else [max(16, 2 * n)]
        if flow == "planar":
            steps = [
                T.conditional_planar(n, self.context_dim, sizes) for _ in range(self.num_flows)
            ]
        else:
            steps = [
                T.conditional_affine_autoregressive(n, self.context_dim, sizes, stable=True)
                for _ in range(self.num_flows)
            ]
        self.flows = nn.ModuleList(steps)
        self.latent_site, self.min_scale, self.name = latent_site, min_scale, name

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A point estimate of z and the base Gaussian's scale, each (..., latent_dim), for x
        of shape (..., D): the flow's image of the base Gaussian's mean (not the posterior's
        mean), and sigma(x) before the flow."""
        q = self.posterior(x)
        loc = q.base_dist.mean  # type: ignore[attr-defined]
        for step in q.transforms:  # type: ignore[attr-defined]
            loc = step(loc)
        return loc, q.base_dist.stddev  # type: ignore[attr-defined]

    def posterior(self, x: torch.Tensor) -> TorchDistribution:
        """q(z | x) for x of shape (N, D): a ``TransformedDistribution`` with batch shape (N,)
        and event shape (latent_dim,)."""
        loc, raw, h = self.encoder(x).split([self.latent_dim] * 2 + [self.context_dim], dim=-1)
        base = dist.Normal(loc, F.softplus(raw) + self.min_scale).to_event(1)
        steps = [cast(ConditionalTransformModule, step).condition(h) for step in self.flows]
        return dist.TransformedDistribution(base, steps)

    def forward(self, x: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        pyro.module(self.name, self)
        check_batch(x, self.data_dim, network=self.encoder)
        with pyro.plate("data", x.shape[0]):
            return pyro.sample(self.latent_site, self.posterior(x))


__all__ = ["AmortizedFlow", "AmortizedFullCovariance", "FLOWS"]
