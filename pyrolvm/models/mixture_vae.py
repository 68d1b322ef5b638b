"""A VAE whose prior over z is a learned Gaussian mixture, for unsupervised clustering: the
generative model of VaDE (Jiang, Zheng, Tan, Tang & Zhou 2017, "Variational Deep Embedding",
section 3.1, eqs. (1)-(3)):

    c ~ Cat(pi),   z | c ~ N(mu_c, diag(sigma_c^2)),   x | z ~ Bernoulli(f_theta(z)).

The component c appears only in the model and is marked for parallel enumeration, so
``TraceEnum_ELBO`` with a guide q(z | x) (e.g. :class:`pyrolvm.guides.AmortizedNormal`) sums it
out exactly: the prior term of the ELBO is log sum_c pi_c N(z; mu_c, sigma_c^2). VaDE's
q(c | x) is then the exact p(c | z) at the encoder's mean (their eq. (16)).
"""

from collections.abc import Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ..errors import ConfigError
from ..nets import check_latent_dim, mlp


class MixturePriorVAE(nn.Module):
    """Pyro model ``model(x)`` of a VAE with a K-component diagonal Gaussian mixture prior.

    One ``pyro.plate("data", B)``; sites ``"component"`` (enumerated, Categorical over K),
    ``"z"`` (event (L,)) and ``"x"`` (Bernoulli, event (D,)). The decoder and the prior's
    weights, means and log-scales are registered with ``pyro.module(name, self)`` and learned.

    Args:
        data_dim (int): D.
        latent_dim (int): L.
        num_components (int): K >= 1.
        hidden (sequence of int): decoder hidden sizes.
        activation (str): as :func:`pyrolvm.nets.mlp`.
        name (str): prefix in Pyro's param store.

    Raises:
        ConfigError: K < 1, L < 1, unknown activation.
    """

    def __init__(
        self,
        data_dim: int,
        latent_dim: int = 10,
        num_components: int = 10,
        hidden: Sequence[int] = (500, 500),
        activation: str = "relu",
        name: str = "mixture_vae",
    ) -> None:
        super().__init__()
        if int(num_components) != num_components or num_components < 1:
            raise ConfigError(
                f"the number of components K must be a positive integer, got {num_components!r}"
            )
        self.latent_dim = check_latent_dim(latent_dim)
        self.num_components = int(num_components)
        self.decoder = mlp(self.latent_dim, hidden, int(data_dim), activation)
        self.prior_logits = nn.Parameter(torch.zeros(self.num_components))
        self.prior_locs = nn.Parameter(torch.randn(self.num_components, self.latent_dim))
        self.prior_log_scales = nn.Parameter(torch.zeros(self.num_components, self.latent_dim))
        self.name = name

    def component_dist(self) -> dist.TorchDistribution:
        """The mixture's components N(mu_c, diag(sigma_c^2)), batch shape (K,), event (L,)."""
        return dist.Normal(self.prior_locs, self.prior_log_scales.exp()).to_event(1)

    def forward(self, x: torch.Tensor) -> None:
        pyro.module(self.name, self)
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample(
                "component",
                dist.Categorical(logits=self.prior_logits),
                infer={"enumerate": "parallel"},
            )
            z = pyro.sample(
                "z", dist.Normal(self.prior_locs[c], self.prior_log_scales[c].exp()).to_event(1)
            )
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

    @torch.no_grad()
    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """Exact log p(z) = log sum_c pi_c N(z; mu_c, sigma_c^2) in nats, shape (B,), for z of
        shape (B, L)."""
        return torch.logsumexp(self._log_joint(z), dim=-1)

    def _log_joint(self, z):
        return torch.log_softmax(self.prior_logits, -1) + self.component_dist().log_prob(
            z.unsqueeze(-2)
        )

    @torch.no_grad()
    def cluster_posterior(self, z: torch.Tensor) -> torch.Tensor:
        """p(c | z), shape (B, K), for z (B, L)."""
        return torch.softmax(self._log_joint(z), dim=-1)

    @torch.no_grad()
    def set_prior(self, weights: Any, locs: Any, scales: Any) -> None:
        """Overwrite the mixture prior (weights (K,), locs (K, L), scales (K, L)), e.g. with a
        Gaussian mixture fitted to the encoder's means (VaDE's initialization, section 4)."""
        self.prior_logits.copy_(torch.as_tensor(weights).log())
        self.prior_locs.copy_(torch.as_tensor(locs))
        self.prior_log_scales.copy_(torch.as_tensor(scales).log())
