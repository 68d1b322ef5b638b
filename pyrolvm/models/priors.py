"""Priors p(z) a latent-variable model is built from: the standard normal, the VampPrior and a
learned flow prior. Each is an ``nn.Module`` whose ``distribution()`` is p(z), a Pyro
distribution with batch shape () and event shape (latent_dim,), on the device and dtype of the
module's buffers and parameters."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from pyro.distributions import TorchDistribution
from torch import nn

from ..errors import ConfigError
from ..nets import check_latent_dim

#: The ``prior`` choices of :class:`pyrolvm.models.VAE`.
PRIORS: tuple[str, ...] = ("normal", "vamp", "flow")


class Prior(nn.Module):
    """The base of the priors: ``distribution()`` is p(z), event shape (latent_dim,)."""

    def distribution(self) -> TorchDistribution:
        """p(z), batch shape (), event shape (latent_dim,)."""
        raise NotImplementedError


class StandardNormalPrior(Prior):
    """p(z) = N(0, I_latent_dim) (Kingma & Welling 2014)."""

    loc: torch.Tensor

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = check_latent_dim(latent_dim)
        # not persistent: the state dict of the default VAE stays that of earlier versions
        self.register_buffer("loc", torch.zeros(self.latent_dim), persistent=False)

    def distribution(self) -> TorchDistribution:
        """N(0, I), event shape (latent_dim,)."""
        return dist.Normal(self.loc, torch.ones_like(self.loc)).to_event(1)


class VampPrior(Prior):
    """The VampPrior (Tomczak & Welling 2018, "VAE with a VampPrior", eq. (9)):
    ``p(z) = (1/K) sum_k q(z | u_k)``, the mixture of the guide's posteriors at K learned
    pseudo-inputs ``u_k`` (shape (K, D)), a ``MixtureSameFamily`` with uniform weights.

    The guide's posterior is given as a callable ``posterior(u) -> distribution`` (batch
    shape (K,), event shape (latent_dim,); e.g. ``AmortizedNormal.posterior``), so the model
    does not import a guide: to the constructor, or with :meth:`set_posterior` once the guide
    exists (a run builds the model first). The callable's module is **not** registered here:
    its parameters are the guide's (registered by the guide's ``pyro.module``) and receive the
    prior's gradient through the shared tensors; the pseudo-inputs are this module's parameter.

    Args:
        latent_dim (int): size of z.
        data_dim (int): D.
        num_pseudo_inputs (int): K >= 1.
        posterior (callable or None): the guide's ``posterior`` (or later, by
            :meth:`set_posterior`).
        init (torch.Tensor or None): initial pseudo-inputs, shape (K, D) (e.g. K training
            images); default ``0.5 + 0.01 * N(0, 1)`` draws.

    Raises:
        ConfigError: K < 1 or ``init`` of the wrong shape; on use, no ``posterior``.
    """

    posterior: Callable[[torch.Tensor], TorchDistribution] | None

    def __init__(
        self,
        latent_dim: int,
        data_dim: int,
        num_pseudo_inputs: int,
        posterior: Callable[[torch.Tensor], TorchDistribution] | None,
        init: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if int(num_pseudo_inputs) < 1:
            raise ConfigError(f"the VampPrior needs >= 1 pseudo-inputs, got {num_pseudo_inputs}")
        self.latent_dim = check_latent_dim(latent_dim)
        k, d = int(num_pseudo_inputs), int(data_dim)
        if init is None:
            init = 0.5 + 0.01 * torch.randn(k, d)
        init = torch.as_tensor(init, dtype=torch.get_default_dtype())
        if tuple(init.shape) != (k, d):
            raise ConfigError(f"VampPrior init must have shape ({k}, {d}), got {tuple(init.shape)}")
        self.pseudo_inputs = nn.Parameter(init.clone())
        self.set_posterior(posterior)

    def set_posterior(self, posterior: Callable[[torch.Tensor], TorchDistribution] | None) -> None:
        """Mix the posteriors ``posterior(u)`` of a guide (e.g. ``guide.posterior``)."""
        self.__dict__["posterior"] = posterior  # not a submodule: the guide owns it

    def distribution(self) -> TorchDistribution:
        """The mixture (1/K) sum_k q(z | u_k), event shape (latent_dim,).

        Raises:
            ConfigError: no guide's ``posterior`` was given.
        """
        if self.posterior is None:
            raise ConfigError(
                "the VampPrior is a mixture of the guide's posteriors: give it "
                "posterior=guide.posterior, or call model.prior.set_posterior(guide.posterior) "
                "(a diagonal or full-covariance amortized guide)"
            )
        components = self.posterior(self.pseudo_inputs)
        weights = dist.Categorical(logits=self.pseudo_inputs.new_zeros(components.batch_shape))
        return dist.MixtureSameFamily(weights, components)


class FlowPrior(Prior):
    """A learned flow prior: N(0, I) pushed through ``num_flows`` affine coupling steps
    (real NVP, Dinh, Sohl-Dickstein & Bengio 2017, "Density estimation using Real NVP",
    eq. (7)-(8); Pyro's ``AffineCoupling``), the order of the latent dimensions reversed
    between steps, so that both the density p(z) and a draw cost one network pass per step.

    Args:
        latent_dim (int): size of z (>= 2: a coupling step splits z in two).
        num_flows (int): steps (>= 1).
        hidden (sequence of int or None): hidden sizes of each step's network (default
            ``(max(16, 4 * latent_dim),)``).

    Raises:
        ConfigError: latent_dim < 2 or num_flows < 1.
    """

    loc: torch.Tensor
    reverse: torch.Tensor

    def __init__(
        self, latent_dim: int, num_flows: int = 2, hidden: Sequence[int] | None = None
    ) -> None:
        super().__init__()
        self.latent_dim = check_latent_dim(latent_dim)
        if self.latent_dim < 2:
            raise ConfigError("a flow prior needs latent_dim >= 2: use --prior normal")
        if int(num_flows) < 1:
            raise ConfigError(f"a flow prior needs >= 1 flow steps, got {num_flows}")
        sizes = list(hidden) if hidden is not None else [max(16, 4 * self.latent_dim)]
        self.flows = nn.ModuleList(
            [T.affine_coupling(self.latent_dim, sizes) for _ in range(int(num_flows))]
        )
        self.register_buffer("loc", torch.zeros(self.latent_dim), persistent=False)
        self.register_buffer("reverse", torch.arange(self.latent_dim - 1, -1, -1), persistent=False)

    def distribution(self) -> TorchDistribution:
        """The flow's density, a ``TransformedDistribution`` with event shape (latent_dim,)."""
        base = dist.Normal(self.loc, torch.ones_like(self.loc)).to_event(1)
        steps: list = []
        for i, step in enumerate(self.flows):
            steps += [step] if i == 0 else [T.Permute(self.reverse), step]
        return dist.TransformedDistribution(base, steps)


def make_prior(
    prior: str,
    latent_dim: int,
    data_dim: int,
    num_pseudo_inputs: int = 500,
    posterior: Callable[[torch.Tensor], TorchDistribution] | None = None,
    pseudo_init: torch.Tensor | None = None,
    prior_flows: int = 2,
) -> Prior:
    """The prior module named ``prior`` (one of :data:`PRIORS`).

    Raises:
        ConfigError: an unknown name, or the errors of the prior's constructor.
    """
    if prior == "normal":
        return StandardNormalPrior(latent_dim)
    if prior == "vamp":
        return VampPrior(latent_dim, data_dim, num_pseudo_inputs, posterior, pseudo_init)
    if prior == "flow":
        return FlowPrior(latent_dim, prior_flows)
    raise ConfigError(f"unknown prior {prior!r}: choose one of {', '.join(PRIORS)}")


__all__ = ["FlowPrior", "PRIORS", "Prior", "StandardNormalPrior", "VampPrior", "make_prior"]
