"""The Gaussian mixture model with the component assignment summed out by Pyro's enumeration.

Generative model (Bishop 2006, "Pattern Recognition and Machine Learning", section 9.2,
eqs. (9.7)-(9.12), with the conjugate-style priors of section 10.2, eqs. (10.39)-(10.40)):

    pi ~ Dirichlet(alpha 1_K)                              site "weights", shape (K,)
    mu_k ~ N(m, s^2 I_D)                 k = 1..K          site "locs",    shape (K, D)
    sigma_k ~ LogNormal(log v, t^2 I_D)  k = 1..K          site "scales",  shape (K, D)
    L_k ~ LKJCholesky(D, eta)            (full only)       site "corr",    shape (K, D, D)
    z_n ~ Categorical(pi)                n = 1..N          site "assignment" (enumerated)
    x_n | z_n ~ N(mu_{z_n}, Sigma_{z_n}) n = 1..N          site "x",       shape (N, D)

with ``Sigma_k = diag(sigma_k^2)`` (``covariance="diag"``) or
``Sigma_k = diag(sigma_k) L_k L_k^T diag(sigma_k)`` (``covariance="full"``, the
LKJ decomposition of Lewandowski, Kurowicka & Joe 2009 as in the Stan manual). The assignment
carries ``infer={"enumerate": "parallel"}``, so ``TraceEnum_ELBO`` sums it out exactly and
the marginal likelihood of a datapoint is eq. (9.7):

    log p(x_n | pi, mu, Sigma) = log sum_k pi_k N(x_n; mu_k, Sigma_k)      (nats).
"""

import math
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import infer_discrete

from ..data import check_data
from ..errors import ConfigError, DataError

COVARIANCES = ("full", "diag")
GLOBAL_SITES = ("weights", "locs", "scales", "corr")


def check_num_components(num_components: int, num_data: int | None = None) -> int:
    """Raise :class:`~pyrolvm.ConfigError` unless ``1 <= num_components <= num_data``; returns K."""
    if int(num_components) != num_components or num_components < 1:
        raise ConfigError(
            f"the number of components K must be a positive integer, got {num_components!r}"
        )
    if num_data is not None and num_components > num_data:
        raise ConfigError(
            f"K = {num_components} components but only {num_data} datapoints: a mixture needs "
            "at least one datapoint per component; lower --components or use more data"
        )
    return int(num_components)


class GaussianMixture:
    """Pyro model of a K-component Gaussian mixture with diagonal or full covariances.

    ``model(x)`` scores x of shape (N, D) with one ``pyro.plate("data", N)``; the global sites
    ``"weights"`` (K,), ``"locs"`` (K, D), ``"scales"`` (K, D) and, for full covariances,
    ``"corr"`` (K, D, D) (Cholesky factors of correlation matrices) sit in
    ``pyro.plate("components", K)`` (weights outside it). The assignment ``"assignment"`` is
    marked for parallel enumeration: train with
    ``TraceEnum_ELBO(max_plate_nesting=1)``, whose loss for point-mass guides on the global
    sites is exactly ``-(sum_n log p(x_n | theta) + log p(theta))``.

    Minibatches (the data can be larger than memory allows for full-batch EM), two ways:

    * ``model(x_batch, index)``: ``x_batch`` (B, D) are the rows ``index`` (B,) of the
      ``num_data`` training points; the plate is ``pyro.plate("data", num_data,
      subsample=index)``, so every datapoint term is scaled by ``num_data / B``. This is what
      :func:`pyrolvm.inference.train` gives when its data is ``(x, torch.arange(N))``.
    * ``model(x, subsample_size=B)``: ``x`` holds all N rows (e.g. a memory-mapped tensor);
      the plate draws B indices per call and the model reads only those rows.

    Args:
        num_components (int): K >= 1.
        data_dim (int): D >= 1.
        covariance (str): ``"full"`` or ``"diag"``.
        num_data (int or None): N, the training-set size; needed only for ``model(x, index)``.
        weight_concentration (float): alpha of the symmetric Dirichlet prior on the weights
            (1 = uniform on the simplex: the weights' MAP estimate is their maximum-likelihood
            estimate).
        loc_loc (float or torch.Tensor): m, prior mean of the component means, shape () or (D,).
        loc_scale (float or torch.Tensor): s > 0, prior standard deviation of the means.
        scale_loc (float or torch.Tensor): log v, prior median (log scale) of the component
            standard deviations, shape () or (D,).
        scale_scale (float): t > 0, prior standard deviation of log sigma.
        corr_concentration (float): eta of the LKJ prior (1 = uniform over correlation
            matrices).

    Raises:
        ConfigError: K < 1, D < 1, an unknown covariance type, non-positive prior scales.

    See :meth:`from_data` for priors set from the data's mean and spread.
    """

    def __init__(
        self,
        num_components: int,
        data_dim: int,
        covariance: str = "full",
        num_data: int | None = None,
        weight_concentration: float = 1.0,
        loc_loc: float | torch.Tensor = 0.0,
        loc_scale: float | torch.Tensor = 10.0,
        scale_loc: float | torch.Tensor = 0.0,
        scale_scale: float = 2.0,
        corr_concentration: float = 1.0,
    ) -> None:
        if covariance not in COVARIANCES:
            raise ConfigError(
                f"unknown covariance type {covariance!r}: choose one of {', '.join(COVARIANCES)}"
            )
        self.num_components = check_num_components(num_components)
        if int(data_dim) != data_dim or data_dim < 1:
            raise ConfigError(f"data_dim must be a positive integer, got {data_dim!r}")
        self.data_dim = int(data_dim)
        self.covariance = covariance
        self.num_data = None if num_data is None else int(num_data)
        for name, value in (
            ("weight_concentration", weight_concentration),
            ("loc_scale", loc_scale),
            ("scale_scale", scale_scale),
            ("corr_concentration", corr_concentration),
        ):
            if not (torch.as_tensor(value, device="cpu") > 0).all():
                raise ConfigError(f"{name} must be positive, got {value!r}")

        def vector(value):
            dtype = torch.get_default_dtype()
            if not isinstance(value, torch.Tensor):
                value = torch.tensor(value, dtype=dtype, device="cpu")
            return value.to(dtype).expand(self.data_dim).clone()

        self.weight_concentration = float(weight_concentration)
        self.loc_loc, self.loc_scale = vector(loc_loc), vector(loc_scale)
        self.scale_loc = vector(scale_loc)
        self.scale_scale = float(scale_scale)
        self.corr_concentration = float(corr_concentration)

    @classmethod
    def from_data(
        cls, x: torch.Tensor, num_components: int, covariance: str = "full", **kwargs: Any
    ) -> "GaussianMixture":
        """A mixture whose weakly informative priors are set from training data x (N, D):
        means ~ N(mean(x), (10 * std(x))^2) per dimension, component standard deviations with
        prior median std(x) per dimension and log-scale spread 2 (a factor e^2 ~ 7.4 either
        way); ``num_data = N``. Further keyword arguments go to the constructor.

        Raises:
            DataError: x is not a finite (N, D) float tensor.
            ConfigError: K < 1, K > N or an unknown covariance type.
        """
        check_data(x, "training data")
        check_num_components(num_components, len(x))
        std = x.std(0).clamp_min(1e-3 * x.std().clamp_min(1e-12))
        defaults: dict[str, Any] = dict(
            num_data=len(x), loc_loc=x.mean(0), loc_scale=10 * std, scale_loc=std.log()
        )
        defaults.update(kwargs)
        return cls(num_components, x.shape[-1], covariance, **defaults)

    @property
    def global_sites(self) -> tuple[str, ...]:
        """Names of the global latent sites, in the order they are sampled."""
        if self.covariance == "full" and self.data_dim > 1:
            return ("weights", "locs", "scales", "corr")
        return ("weights", "locs", "scales")

    @property
    def num_parameters(self) -> int:
        """Free parameters of the likelihood: (K - 1) + K D + K D (diag) or K D (D + 1) / 2
        (full); the count used by BIC and by scikit-learn's ``GaussianMixture._n_parameters``."""
        k, d = self.num_components, self.data_dim
        cov = k * d if self.covariance == "diag" else k * d * (d + 1) // 2
        return (k - 1) + k * d + cov

    def component_dist(
        self, locs: torch.Tensor, scales: torch.Tensor, corr: torch.Tensor | None = None
    ) -> dist.TorchDistribution:
        """The component densities N(mu_k, Sigma_k) as a Pyro distribution of batch shape
        (..., K) and event shape (D,), from locs (..., K, D), scales (..., K, D) and, for full
        covariances, corr (..., K, D, D)."""
        if corr is None:
            return dist.Normal(locs, scales).to_event(1)
        return dist.MultivariateNormal(locs, scale_tril=scales.unsqueeze(-1) * corr)

    def covariances(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Covariance matrices Sigma_k, shape (K, D, D), from a dict of global site values."""
        scales, corr = params["scales"], params.get("corr")
        if corr is None:
            return torch.diag_embed(scales**2)
        tril = scales.unsqueeze(-1) * corr
        return tril @ tril.transpose(-1, -2)

    def check_x(self, x: torch.Tensor, name: str = "data") -> None:
        """Raise :class:`~pyrolvm.DataError` unless x is a finite (N, D) float tensor of the model's
        dimension D."""
        check_data(x, name)
        if x.shape[-1] != self.data_dim:
            raise DataError(
                f"{name} has {x.shape[-1]} dimensions but the mixture was built for "
                f"{self.data_dim}; project it the same way as the training data"
            )

    def __call__(
        self,
        x: torch.Tensor,
        index: torch.Tensor | None = None,
        subsample_size: int | None = None,
    ) -> torch.Tensor:
        """Run the model on x (see the class docstring); returns the assignment sample
        (shape (B,), or (K, 1) when enumerated)."""
        k, d = self.num_components, self.data_dim
        # the hyperparameters meet the data on its device and in its dtype
        loc_loc, loc_scale, scale_loc = (
            v.to(x) for v in (self.loc_loc, self.loc_scale, self.scale_loc)
        )
        weights = pyro.sample(
            "weights", dist.Dirichlet(x.new_full((k,), self.weight_concentration))
        )
        with pyro.plate("components", k, device=str(x.device)):
            locs = pyro.sample("locs", dist.Normal(loc_loc, loc_scale).to_event(1))
            scales = pyro.sample("scales", dist.LogNormal(scale_loc, self.scale_scale).to_event(1))
            corr = None
            if "corr" in self.global_sites:
                corr = pyro.sample(
                    "corr", dist.LKJCholesky(d, x.new_tensor(self.corr_concentration))
                )
        if index is not None:
            if self.num_data is None:
                raise ConfigError(
                    "model(x, index) needs num_data, the number of training points: build the "
                    "mixture with num_data=N (GaussianMixture.from_data does)"
                )
            plate = pyro.plate("data", self.num_data, subsample=index)
        elif subsample_size is not None:
            plate = pyro.plate(
                "data", len(x), subsample_size=int(subsample_size), device=str(x.device)
            )
        else:
            plate = pyro.plate("data", len(x), device=str(x.device))
        with plate as idx:
            if index is None and subsample_size is not None:
                x = x[idx]
            z = pyro.sample(
                "assignment", dist.Categorical(weights), infer={"enumerate": "parallel"}
            )
            pyro.sample(
                "x",
                self.component_dist(locs[z], scales[z], None if corr is None else corr[z]),
                obs=x,
            )
        return z

    # ----- exact posterior quantities for given global parameters -----

    def _params(self, params):
        missing = [s for s in self.global_sites if s not in params]
        if missing:
            raise ConfigError(
                f"parameters {missing} missing: pass the dict of global site values "
                f"{list(self.global_sites)} (e.g. guide.median())"
            )
        return {s: params[s].detach() for s in self.global_sites}

    @torch.no_grad()
    def log_joint(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """log pi_k + log N(x_n; mu_k, Sigma_k) for every datapoint and component, read from the
        enumerated model's trace (shape (N, K), nats), for x (N, D) and a dict of global site
        values ``params`` (e.g. ``guide.median()``).

        Raises:
            DataError: x is not a finite (N, D) float tensor of the model's dimension.
            ConfigError: a global site is missing from ``params``.
        """
        self.check_x(x)
        conditioned = poutine.condition(self, data=self._params(params))
        trace = poutine.trace(poutine.enum(conditioned, first_available_dim=-2)).get_trace(x)
        trace.compute_log_prob(site_filter=lambda name, site: name in ("assignment", "x"))
        # both log-probs have shape (K, N): the enumerated component along dim -2
        nodes: Any = trace.nodes
        joint = nodes["assignment"]["log_prob"] + nodes["x"]["log_prob"]
        return joint.transpose(0, 1)

    @torch.no_grad()
    def log_likelihood(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Exact per-datapoint log-likelihood ``log sum_k pi_k N(x_n; mu_k, Sigma_k)`` (eq. (9.7)
        of Bishop 2006), shape (N,), nats, with the assignment summed out by enumeration.

        Raises:
            DataError, ConfigError: as :meth:`log_joint`.
        """
        return torch.logsumexp(self.log_joint(x, params), dim=-1)

    @torch.no_grad()
    def responsibilities(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Posterior responsibilities ``p(z_n = k | x_n)`` (Bishop 2006, eq. (9.13)), shape
        (N, K), rows summing to 1."""
        return torch.softmax(self.log_joint(x, params), dim=-1)

    @torch.no_grad()
    def assign(
        self, x: torch.Tensor, params: dict[str, torch.Tensor], temperature: int = 0
    ) -> torch.Tensor:
        """Hard assignments through ``pyro.infer.infer_discrete``: the MAP component of every
        datapoint (``temperature=0``, the argmax of the responsibilities) or a draw from
        p(z_n | x_n) (``temperature=1``); shape (N,), int64.

        Raises:
            DataError, ConfigError: as :meth:`log_joint`; ConfigError for a temperature other
                than 0 or 1.
        """
        if temperature not in (0, 1):
            raise ConfigError(f"temperature must be 0 (MAP) or 1 (sample), got {temperature!r}")
        self.check_x(x)
        conditioned = poutine.condition(self, data=self._params(params))
        return infer_discrete(conditioned, first_available_dim=-2, temperature=temperature)(x)

    @torch.no_grad()
    def bic(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> float:
        """Bayesian information criterion ``-2 sum_n log p(x_n) + P log N`` (Schwarz 1978) for
        x (N, D), P = :attr:`num_parameters`; lower is better (as scikit-learn's ``bic``)."""
        ll = self.log_likelihood(x, params).double().sum().item()
        return -2.0 * ll + self.num_parameters * math.log(len(x))

    @torch.no_grad()
    def sample(
        self, num_samples: int, params: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``num_samples`` datapoints from the mixture with the given global parameters;
        returns (x (num_samples, D), assignment (num_samples,) int64)."""
        p = self._params(params)
        z = dist.Categorical(p["weights"]).sample((int(num_samples),))
        corr = p.get("corr")
        comp = self.component_dist(p["locs"][z], p["scales"][z], None if corr is None else corr[z])
        return comp.sample(), z

    def params_from_moments(
        self, weights: Any, locs: Any, covariances: Any
    ) -> dict[str, torch.Tensor]:
        """Global site values from mixture weights (K,), means (K, D) and covariances: (K, D, D)
        matrices, or (K, D) variances for ``"diag"`` (scikit-learn's ``covariances_`` layout
        for ``covariance_type="full"`` / ``"diag"``); array-likes are accepted. A full matrix
        given to a ``"diag"`` mixture keeps its diagonal.

        Returns:
            dict: ``weights``, ``locs``, ``scales`` and (full) ``corr``, in the default dtype.
        """
        dtype = torch.get_default_dtype()
        weights = torch.as_tensor(weights, dtype=torch.float64)
        locs = torch.as_tensor(locs, dtype=torch.float64)
        covs = torch.as_tensor(covariances, dtype=torch.float64)
        if covs.dim() == 2:
            covs = torch.diag_embed(covs)
        scales = covs.diagonal(dim1=-2, dim2=-1).clamp_min(1e-300).sqrt()
        params = {"weights": weights.to(dtype), "locs": locs.to(dtype), "scales": scales.to(dtype)}
        if "corr" in self.global_sites:
            corr = covs / (scales.unsqueeze(-1) * scales.unsqueeze(-2))
            params["corr"] = torch.linalg.cholesky(corr).to(dtype)
        return params
