"""Guides over the global parameters of :class:`pyrolvm.models.mixture.GaussianMixture`
(weights, means, scales, correlations). The per-datapoint assignment has no guide site: it is
summed out by ``TraceEnum_ELBO``, so these guides pair with the mixture under that loss.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, cast

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions.transforms import CorrCholeskyTransform
from pyro.infer.autoguide import AutoDelta
from pyro.infer.autoguide.initialization import init_to_median, init_to_value
from torch import nn

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..models.mixture import GaussianMixture


def _check_init(model: GaussianMixture, init_values: dict[str, torch.Tensor] | None) -> None:
    if init_values is None:
        return
    missing = [s for s in model.global_sites if s not in init_values]
    if missing:
        raise ConfigError(
            f"init_values lacks {missing}: pass pyrolvm.fitting.initial_params(model, x) or a "
            f"dict with all of {list(model.global_sites)}"
        )


class MixtureMAP(AutoDelta):
    """MAP guide: point masses ``q(theta) = delta(theta - theta_hat)`` on the mixture's global
    sites (Pyro's ``AutoDelta`` on the model with the assignment blocked out). Under
    ``TraceEnum_ELBO`` its loss is ``-(sum_n log p(x_n | theta_hat) + log p(theta_hat))``
    (the datapoint terms scaled by N / B on minibatches), so SVI maximizes the posterior
    density: Bishop (2006), section 9.3.2, with Adam instead of EM.

    Args:
        model (GaussianMixture): the mixture.
        init_values (dict or None): starting values of every global site, e.g.
            ``pyrolvm.fitting.initial_params(model, x, "kmeans++")``; None starts at the prior
            medians (not recommended: components collapse, pyro-ppl/pyro#635).

    ``guide.median()`` returns the dict of point estimates (constrained values):
    ``weights`` (K,), ``locs`` (K, D), ``scales`` (K, D), ``corr`` (K, D, D) for full covariances.

    Raises:
        ConfigError: ``init_values`` lacks a global site.
    """

    def __init__(
        self, model: GaussianMixture, init_values: dict[str, torch.Tensor] | None = None
    ) -> None:
        _check_init(model, init_values)
        init = (
            init_to_median
            if init_values is None
            else init_to_value(values={k: v.detach().clone() for k, v in init_values.items()})
        )
        super().__init__(poutine.block(model, expose=list(model.global_sites)), init_loc_fn=init)
        # the global sites do not depend on the data: set the guide up now (one call on a
        # dummy datapoint, hidden from any enclosing handler) so that median() works at once
        with poutine.block():
            # on the hyperparameters' device and dtype (GaussianMixture.from_data: the data's)
            self(model.loc_loc.new_zeros(1, model.data_dim))


class MixtureMeanField(nn.Module):
    """Mean-field variational guide in the conjugate families of Bishop (2006), section 10.2
    (eq. (10.55)): ``q(pi) = Dirichlet(beta)``, ``q(mu_k) = N(m_k, diag(s_k^2))``,
    ``q(sigma_k) = LogNormal(u_k, diag(w_k^2))`` and, for full covariances, ``q(L_k)`` a
    Normal on the D(D-1)/2 unconstrained coordinates of the correlation Cholesky factor pushed
    through Pyro's ``CorrCholeskyTransform``. Every site is reparameterized (the Dirichlet
    through implicit gradients), so ``TraceEnum_ELBO`` gives pathwise gradients for the globals
    while summing out the assignment.

    ``guide(x, ...)`` takes the model's arguments; parameters are registered with
    ``pyro.module(name, self)``.

    Args:
        model (GaussianMixture): the mixture.
        init_values (dict): starting means of q, e.g.
            ``pyrolvm.fitting.initial_params(model, x, "kmeans++")``.
        init_scale (float): starting standard deviation of the Normal factors (unconstrained
            coordinates).
        init_concentration (float or None): starting total concentration of q(pi) (default the
            model's ``num_data``, else 100).
        name (str): prefix in Pyro's param store.

    Raises:
        ConfigError: ``init_values`` lacks a global site, or ``init_scale <= 0``.
    """

    def __init__(
        self,
        model: GaussianMixture,
        init_values: dict[str, torch.Tensor],
        init_scale: float = 0.01,
        init_concentration: float | None = None,
        name: str = "mixture_guide",
    ) -> None:
        super().__init__()
        _check_init(model, init_values)
        if init_values is None:
            raise ConfigError(
                "MixtureMeanField needs init_values, e.g. pyrolvm.fitting.initial_params(model, x)"
            )
        if not init_scale > 0:
            raise ConfigError(f"init_scale must be positive, got {init_scale}")
        self.model_sites = tuple(model.global_sites)
        self.num_components = model.num_components
        self.name = name
        total = init_concentration or model.num_data or 100.0
        log_s = math.log(float(init_scale))
        v = {k: t.detach().to(torch.get_default_dtype()) for k, t in init_values.items()}
        self.log_concentration = nn.Parameter((v["weights"] * total).log())
        self.locs_loc = nn.Parameter(v["locs"].clone())
        self.locs_log_scale = nn.Parameter(torch.full_like(v["locs"], log_s))
        self.scales_loc = nn.Parameter(v["scales"].log())
        self.scales_log_scale = nn.Parameter(torch.full_like(v["scales"], log_s))
        self.corr_transform = CorrCholeskyTransform(cache_size=1)
        if "corr" in self.model_sites:
            unconstrained = cast(torch.Tensor, self.corr_transform.inv(v["corr"]))
            self.corr_loc = nn.Parameter(unconstrained)
            self.corr_log_scale = nn.Parameter(torch.full_like(unconstrained, log_s))

    def _corr_dist(self) -> dist.TransformedDistribution:
        base = dist.Normal(self.corr_loc, self.corr_log_scale.exp()).to_event(1)
        return dist.TransformedDistribution(base, [self.corr_transform])

    def forward(
        self,
        x: torch.Tensor | None = None,
        index: torch.Tensor | None = None,
        subsample_size: int | None = None,
    ) -> None:
        pyro.module(self.name, self)
        pyro.sample("weights", dist.Dirichlet(self.log_concentration.exp()))
        with pyro.plate("components", self.num_components):
            pyro.sample("locs", dist.Normal(self.locs_loc, self.locs_log_scale.exp()).to_event(1))
            pyro.sample(
                "scales", dist.LogNormal(self.scales_loc, self.scales_log_scale.exp()).to_event(1)
            )
            if "corr" in self.model_sites:
                pyro.sample("corr", self._corr_dist())

    @torch.no_grad()
    def median(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Point estimates of the global sites: the mean of q(pi), the means m_k, the LogNormal
        medians exp(u_k) and the transformed Normal medians of the correlation factors; a dict
        like ``MixtureMAP.median()``'s."""
        conc = self.log_concentration.exp()
        out = {
            "weights": conc / conc.sum(),
            "locs": self.locs_loc.clone(),
            "scales": self.scales_loc.exp(),
        }
        if "corr" in self.model_sites:
            out["corr"] = cast(torch.Tensor, self.corr_transform(self.corr_loc))
        return out
