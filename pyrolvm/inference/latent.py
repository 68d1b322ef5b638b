r"""Diagnostics of a latent space: the KL per latent dimension and the rate, the distortion,
active units, and the mutual information :math:`I_q(x; z)`.

Two levels:

- :func:`latent_diagnostics` (and :class:`LatentDiagnostics`): for **any model/guide pair**,
  the latent sites read from their traces (any names, several sites), with the closed-form
  KL where the prior and guide allow and a Monte Carlo estimate with its standard error
  otherwise. This is what the runs write to metrics.json.
- :func:`latent_summary` and the tensor functions below it: from a diagonal-Gaussian
  encoder's outputs :math:`q(z|x_n) = \mathcal N(\mu_n, \mathrm{diag}\,\sigma_n^2)` against
  the prior :math:`p(z) = \mathcal N(0, I)` **only** (for another prior or guide its rate is
  not the KL: use :func:`latent_diagnostics`). Pure tensor functions (no model or guide).

The definitions:

- Rate and distortion (Alemi et al. 2018, "Fixing a Broken ELBO"):
  :math:`R = \mathbb E_x \mathrm{KL}(q(z|x)\,\|\,p(z))`, :math:`D = -\mathbb E_x
  \mathbb E_q \log p(x|z)`, so that ELBO = -(R + D).
- Active units (Burda, Grosse & Salakhutdinov 2016, section 5.2): unit u is active when
  :math:`A_u = \mathrm{Cov}_x(\mathbb E_{q(z|x)}[z_u]) > 0.01`.
- Mutual information (Hoffman & Johnson 2016, "ELBO surgery", the
  decomposition of the average KL):
  :math:`\mathbb E_x \mathrm{KL}(q(z|x)\|p(z)) = I_q(x;z) + \mathrm{KL}(q(z)\|p(z))` with the
  aggregate posterior :math:`q(z) = \frac1N\sum_n q(z|x_n)`; :math:`I_q` is estimated as
  :math:`\frac1N \sum_i [\log q(z_i|x_i) - \log \frac1N \sum_j q(z_i|x_j)]`, :math:`z_i \sim
  q(z|x_i)` (consistent as N grows; biased for finite N, by at most :math:`\log N` above).
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import pyro
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.poutine.util import prune_subsample_sites
from torch.distributions import Independent, kl_divergence

from ..errors import ConfigError
from .batches import Data, as_tuple, num_rows, rows
from .importance import PARTICLE_PLATE, find_batch_plate, sum_to_batch
from .objectives import MultiSampleELBO


def _check(loc, scale=None):
    if scale is None:  # the activity statistic: a variance over N >= 2 rows
        if loc.dim() != 2 or loc.shape[0] < 2:
            raise ConfigError(
                f"latent diagnostics need loc of shape (N, L) with N >= 2, got {tuple(loc.shape)}"
            )
        return
    if loc.dim() != 2 or loc.shape != scale.shape or loc.shape[0] < 2:
        raise ConfigError(
            "latent diagnostics need loc and scale of one shape (N, L) with "
            f"N >= 2, got {tuple(loc.shape)} and {tuple(scale.shape)}"
        )


#: The most numbers of the (rows, N, L) intermediate of :func:`mutual_information` at once
#: (2**22: 32 MB in float64).
BLOCK_ELEMENTS = 2**22


def kl_per_dimension(loc, scale):
    """``E_x KL(N(mu_u(x), sigma_u(x)^2) || N(0, 1))`` per latent dimension u, shape (L,), in
    nats: the closed form ``0.5 (mu^2 + sigma^2 - 1) - log sigma`` averaged over the rows."""
    _check(loc, scale)
    return (0.5 * (loc.pow(2) + scale.pow(2) - 1.0) - scale.log()).mean(0)


def unit_activity(loc):
    """``Cov_x(E_q[z_u | x])``, the variance over datapoints of each posterior mean, shape (L,)
    (Burda et al. 2016's activity statistic; unbiased sample variance).

    Raises:
        ConfigError: ``loc`` is not of shape (N, L) with N >= 2."""
    _check(loc)
    return loc.var(0)


def active_units(loc, threshold=0.01):
    """The number of units u with :func:`unit_activity` above ``threshold`` (an int)."""
    return int((unit_activity(loc) > threshold).sum())


def mutual_information(loc, scale, generator=None):
    """The estimate of ``I_q(x; z)`` in nats described in the module docstring: one draw z_i
    per row, and the aggregate posterior's density from all N rows (cost O(N^2 L)).

    Args:
        loc, scale (torch.Tensor): shape (N, L), the encoder's outputs on N datapoints.
        generator (torch.Generator or None): for the draws (default: torch's global RNG).

    Returns:
        float
    """
    _check(loc, scale)
    loc, scale = loc.double(), scale.double()
    # drawn on the CPU (the generator's device), so the figure is the same on every device
    cpu = generator.device if generator is not None else "cpu"
    eps = torch.randn(loc.shape, generator=generator, dtype=loc.dtype, device=cpu).to(loc.device)
    z = loc + scale * eps  # (N, L)
    log_norm = -0.5 * math.log(2 * math.pi) - scale.log()  # (N, L)
    own = (log_norm - 0.5 * eps.pow(2)).sum(-1)  # log q(z_i | x_i)
    # log q(z_i | x_j) for all i, j: (N, N), by blocks of rows i, so that the float64 (rows, N, L)
    # intermediate holds at most BLOCK_ELEMENTS numbers (N = 1000, L = 50 at once: 400 MB)
    n, dim = loc.shape
    rows = max(1, BLOCK_ELEMENTS // (n * dim))
    aggregate = torch.cat(
        [
            torch.logsumexp(
                (
                    log_norm[None]
                    - 0.5 * ((z[i : i + rows, None] - loc[None]) / scale[None]).pow(2)
                ).sum(-1),
                dim=1,
            )
            for i in range(0, n, rows)
        ]
    ) - math.log(n)
    return (own - aggregate).mean().item()


def latent_summary(loc, scale, threshold=0.01, mi_points=1000, generator=None):
    """The latent diagnostics of a diagonal-Gaussian encoder against the prior N(0, I) (for
    any other prior or guide, :func:`latent_diagnostics` reads the pair itself).

    Args:
        loc, scale (torch.Tensor): shape (N, L), the encoder's outputs on (test) datapoints.
        threshold (float): the activity threshold of an active unit.
        mi_points (int): the first ``mi_points`` rows enter the mutual-information estimate
            (its cost is quadratic in them).
        generator (torch.Generator or None): for the mutual information's draws.

    Returns:
        dict: ``kl_per_dim`` (list of L floats, nats), ``rate`` (their sum, nats),
        ``activity`` (list of L floats), ``active_units`` (int), ``mutual_information``
        (nats, at most ``log(mi_points)``), ``mi_points``.
    """
    _check(loc, scale)
    kl = kl_per_dimension(loc, scale)
    n = min(int(mi_points), loc.shape[0])
    return {
        "kl_per_dim": kl.tolist(),
        "rate": kl.sum().item(),
        "activity": unit_activity(loc).tolist(),
        "active_units": active_units(loc, threshold),
        "mutual_information": mutual_information(loc[:n], scale[:n], generator),
        "mi_points": n,
    }


# -- any model/guide pair: the latent sites read from the traces ------------------------------


@dataclass
class SiteDiagnostics:
    """The diagnostics of one latent site z_s, averaged over the datapoints.

    Attributes:
        name (str): the site's name (the same in model and guide).
        kl (float): ``E_x E_q[log q(z_s | .) - log p(z_s | .)]``, the site's share of the rate,
            nats per datapoint.
        kl_stderr (float): its Monte Carlo standard error (0 for the closed form).
        closed_form (bool): ``kl`` is the closed-form ``KL(q(z_s|x) || p(z_s))`` (torch's
            ``kl_divergence``; neither distribution depends on another latent draw), not a
            Monte Carlo estimate.
        kl_per_dim (torch.Tensor or None): shape (E,), float64, the KL of each element of the
            site's value (flattened), nats; ``None`` where q or p does not factorize over the
            elements (e.g. a full-covariance Gaussian), so that only the site's total exists.
        activity (torch.Tensor): shape (E,), float64, ``Cov_x(E_q[z_u | x])`` for each element
            u of the value (Burda et al. 2016, section 5.2).
    """

    name: str
    kl: float
    kl_stderr: float
    closed_form: bool
    kl_per_dim: torch.Tensor | None
    activity: torch.Tensor


@dataclass
class LatentDiagnostics:
    """Rate, distortion, KL per dimension, active units and mutual information of a
    model/guide pair on N datapoints (:func:`latent_diagnostics`). Figures in nats per
    datapoint, averaged over the N datapoints.

    Attributes:
        sites (dict): site name -> :class:`SiteDiagnostics`, in the guide's order.
        rate (float): ``R = E_x E_q[log q(z|x) - log p(z)]``, the sum of the sites' ``kl``.
        rate_stderr (float): its Monte Carlo standard error (0 when every site is in closed
            form).
        distortion (float): ``D = -E_x E_q log p(x | z)`` (every observed site of the model),
            a Monte Carlo estimate.
        distortion_stderr (float): its Monte Carlo standard error.
        active_units (int): elements of the latent sites whose activity exceeds ``threshold``.
        threshold (float): the activity threshold.
        mutual_information (float): the estimate of ``I_q(x; z)`` over all latent sites jointly
            (see :func:`latent_diagnostics`), at most ``log(mi_points)``; NaN where it was not
            computed (``mi_points`` 0, or a guide with no density away from its draws).
        mi_points (int): the datapoints that enter it (0: not computed).
        num_points (int): N.
        num_samples (int): K, the guide's draws per datapoint.
    """

    sites: dict[str, SiteDiagnostics]
    rate: float
    rate_stderr: float
    distortion: float
    distortion_stderr: float
    active_units: int
    threshold: float
    mutual_information: float
    mi_points: int
    num_points: int
    num_samples: int

    @property
    def elbo(self) -> float:
        """``-(rate + distortion)``, the ELBO per datapoint (nats)."""
        return -(self.rate + self.distortion)

    def summary(self) -> dict:
        """The figures as a JSON-ready dict, with the keys of :func:`latent_summary`:
        ``rate``, ``rate_stderr``, ``rate_method`` (``"closed form"``, ``"monte carlo"`` or
        ``"mixed"``), ``distortion``, ``distortion_stderr``, ``kl_per_dim`` (the sites'
        per-element KLs concatenated in site order; sites without one are left out),
        ``activity`` (every element of every site), ``active_units``,
        ``mutual_information``, ``mi_points``, ``latent_samples`` (K) and ``latent_sites``
        (per site: ``kl``, ``kl_stderr``, ``closed_form``, ``dims``)."""
        closed = [s.closed_form for s in self.sites.values()]
        method = "closed form" if all(closed) else "monte carlo" if not any(closed) else "mixed"
        per_dim = [s.kl_per_dim for s in self.sites.values() if s.kl_per_dim is not None]
        return {
            "rate": self.rate,
            "rate_stderr": self.rate_stderr,
            "rate_method": method,
            "distortion": self.distortion,
            "distortion_stderr": self.distortion_stderr,
            "kl_per_dim": torch.cat(per_dim).tolist() if per_dim else [],
            "activity": torch.cat([s.activity for s in self.sites.values()]).tolist(),
            "active_units": self.active_units,
            "mutual_information": self.mutual_information,
            "mi_points": self.mi_points,
            "latent_samples": self.num_samples,
            "latent_sites": {
                s.name: {
                    "kl": s.kl,
                    "kl_stderr": s.kl_stderr,
                    "closed_form": s.closed_form,
                    "dims": len(s.activity),
                }
                for s in self.sites.values()
            },
        }


def _sample_sites(trace: Any, observed: bool = False) -> dict[str, Any]:
    return {
        name: site
        for name, site in trace.nodes.items()
        if site["type"] == "sample"
        and site["is_observed"] == observed
        and type(site["fn"]).__name__ != "_Subsample"
    }


def check_latent_sites(model, guide, *args, **kwargs):
    """The latent sites a model and guide share, from one run of each (``model`` replayed on
    the guide's draws, validation off, nothing recorded by an enclosing handler).

    Returns:
        (guide trace, model trace): of that run.

    Raises:
        ConfigError: the guide samples a site the model does not have (or the reverse): the
            message names both sets of sites.
    """
    with poutine.block(), pyro.validation_enabled(False), torch.no_grad():
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
            *args, **kwargs
        )
    in_guide = set(_sample_sites(guide_trace))
    in_model = set(_sample_sites(model_trace))
    if in_guide != in_model:
        raise ConfigError(
            f"the guide's latent sites {sorted(in_guide)} are not the model's "
            f"{sorted(in_model)}: name the guide's sample sites as the model's (e.g. both "
            '"latent"), one guide site for each latent site of the model'
        )
    if not in_model:
        raise ConfigError("the model has no latent sites: nothing to diagnose")
    return guide_trace, model_trace


def _only_batch_plate(site, plate):
    """Refuse a latent site that lies in a vectorized plate other than the batch plate."""
    others = [
        f.name
        for f in site["cond_indep_stack"]
        if f.vectorized and f.name != PARTICLE_PLATE and (plate is None or f.name != plate.name)
    ]
    if plate is None or others or not any(f.name == plate.name for f in site["cond_indep_stack"]):
        where = f"also in {others}" if others else "outside it"
        raise ConfigError(
            f"latent site {site['name']!r} must lie in the batch plate "
            f"{plate.name if plate else '(none found)'!r} and no other plate ({where}): the "
            "latent diagnostics are per datapoint"
        )


def _on(value, like):
    """``value`` (a tensor, or a number where no site contributed) as a tensor on the device
    of ``like`` (``torch.as_tensor`` would take torch's default device)."""
    if isinstance(value, torch.Tensor):
        return value
    return torch.tensor(float(value), dtype=torch.float64, device=like.device)


def _per_point(t, k, b):
    """A (K, ..., B, ..., *event) tensor whose other batch dimensions have size 1, as
    (K, B, E) in float64."""
    return t.double().reshape(k, b, -1)


def _constant_over_particles(*tensors):
    return all(torch.equal(t, t[:1].expand_as(t)) for t in tensors)


def _univariate(fn):
    """The univariate distribution under ``Independent`` wrappers, or ``None``."""
    while isinstance(fn, Independent):
        fn = fn.base_dist
    return fn if fn.event_shape == () else None


def _site_kl(q_site, p_site, k, b, plate, rank, closed_form=True):
    """One batch's per-particle KL terms of a site: (total (K, B), per element (K, B, E) or
    None, closed form?); ``closed_form=False``: the Monte Carlo estimate always."""
    q_fn, p_fn, value = q_site["fn"], p_site["fn"], q_site["value"]
    q_uni, p_uni = _univariate(q_fn), _univariate(p_fn)
    masked = q_site["mask"] is not None or p_site["mask"] is not None
    if closed_form and not masked:
        try:
            kl = kl_divergence(q_fn, p_fn)
            point = value[:1].expand_as(value)
            closed = _constant_over_particles(kl, q_fn.log_prob(point), p_fn.log_prob(point))
        except (NotImplementedError, KeyError):  # no KL registered; no density off its draws
            closed = False
        if closed:
            total = sum_to_batch(kl, q_site, rank, plate)
            per_dim = None
            if q_uni is not None and p_uni is not None:
                try:
                    per_dim = _per_point(kl_divergence(q_uni, p_uni).expand(value.shape), k, b)
                except NotImplementedError:
                    per_dim = None
            return total.double(), per_dim, True
    log_q = scale_and_mask(q_site["unscaled_log_prob"], 1.0, q_site["mask"])
    log_p = scale_and_mask(p_site["unscaled_log_prob"], 1.0, p_site["mask"])
    total = sum_to_batch(log_q, q_site, rank, plate) - sum_to_batch(log_p, p_site, rank, plate)
    per_dim = None
    if q_uni is not None and p_uni is not None and not masked:
        per_dim = _per_point(q_uni.log_prob(value) - p_uni.log_prob(value), k, b)
    return total.double(), per_dim, False


def _posterior_mean(site, k, b):
    """Per datapoint E_q[z | x] (B, E) and the Monte Carlo variance of that estimate (B, E):
    the distribution's own mean where it has one that no other draw moves, else the mean of
    the K draws (whose variance over the draws / K is then subtracted from the activity)."""
    value = _per_point(site["value"], k, b)
    try:
        mean = site["fn"].mean.expand(site["value"].shape)
        if _constant_over_particles(mean) and torch.isfinite(mean).all():
            m = _per_point(mean, k, b)[0]
            return m, torch.zeros_like(m)
    except (NotImplementedError, RuntimeError):
        pass
    return value.mean(0), value.var(0) / k


def _cross_log_q(guide, x_rows, args, kwargs, draws, plate, chunk):
    """``log q(z_i | x_j)`` for the M draws z_i (one per row, every latent site) and the M
    rows x_j, shape (M, M): the guide run on all rows with its sites conditioned on the draws
    of row i, vectorized over a chunk of i in a plate outside the guide's plates."""
    m = len(x_rows[0])
    nesting = -plate.dim
    rows_out = []
    for i0 in range(0, m, chunk):
        c = min(chunk, m - i0)
        values = {}
        for name, (v, event_dim) in draws.items():
            pos = v.dim() - event_dim + plate.dim  # the batch plate's position in the value
            part = v.narrow(pos, i0, c).movedim(pos, 0).unsqueeze(pos + 1)
            shape = list(part.shape)
            shape[pos + 1] = m
            values[name] = part.expand(shape)
        conditioned = poutine.condition(guide, data=values)
        with pyro.plate("mi_draws", c, dim=-(nesting + 1), device=x_rows[0].device):
            trace = poutine.trace(conditioned).get_trace(*x_rows, *args, **kwargs)
        trace = prune_subsample_sites(trace)
        trace.compute_log_prob()
        total = 0.0
        nodes = cast(dict[str, Any], trace.nodes)
        for name in draws:  # conditioned: the trace marks them observed
            site = nodes[name]
            log_q = scale_and_mask(site["unscaled_log_prob"], 1.0, site["mask"])
            total = total + sum_to_batch(log_q, site, nesting + 1, plate)
        rows_out.append(_on(total, x_rows[0]).double().reshape(c, m))
    return torch.cat(rows_out)


def _mutual_information(guide, data, args, kwargs, plate_name, mi_points):
    """The estimate of ``I_q(x; z)`` of :func:`latent_diagnostics` on the first ``mi_points``
    rows (one joint draw of every latent site per row)."""
    x_rows = rows(data, slice(0, mi_points))
    m = len(x_rows[0])
    guide_trace = poutine.trace(guide).get_trace(*x_rows, *args, **kwargs)
    sites = _sample_sites(guide_trace)
    plate = next(f for s in sites.values() for f in s["cond_indep_stack"] if f.name == plate_name)
    draws = {name: (s["value"], s["fn"].event_dim) for name, s in sites.items()}
    numel = sum(v[0].numel() for v, _ in draws.values())  # a point's latent elements
    chunk = max(1, 200_000 // max(1, m * max(1, numel)))
    cross = _cross_log_q(guide, x_rows, args, kwargs, draws, plate, chunk)
    own = cross.diagonal()
    aggregate = torch.logsumexp(cross, dim=1) - math.log(m)
    return (own - aggregate).mean().item(), m


@torch.no_grad()
def latent_diagnostics(
    model: Callable,
    guide: Callable,
    data: Data,
    *args: Any,
    num_samples: int = 100,
    batch_size: int | None = None,
    mi_points: int = 1000,
    threshold: float = 0.01,
    batch_plate: str | None = None,
    seed: int | None = None,
    closed_form: bool = True,
    **kwargs: Any,
) -> LatentDiagnostics:
    r"""Rate, distortion, KL per dimension, active units and mutual information of any
    model/guide pair on the N datapoints ``data``, the latent sites read from the traces
    (any names, any number of sites, each inside the batch plate).

    For each latent site z_s (sampled by the guide, scored by the model):

    - **KL** ``E_x E_q[log q(z_s | .) - log p(z_s | .)]``: in **closed form** (torch's
      ``kl_divergence``, e.g. a diagonal Gaussian against a Gaussian prior) where one is
      registered for the two distributions and neither depends on another latent draw
      (checked: the same across the K draws); otherwise the **Monte Carlo** mean over K
      draws from the guide, with its standard error. Per element of z_s where both
      distributions factorize over the elements (univariate under ``to_event``).
    - **activity** ``Cov_x(E_q[z_u | x])`` of each element u (Burda, Grosse &
      Salakhutdinov 2016, section 5.2), with the guide's own mean where it has one, else the
      mean of the K draws with its Monte Carlo variance (the within-point variance / K)
      subtracted, an unbiased estimate.

    The **rate** is the sum of the sites' KLs; the **distortion** ``-E_x E_q log p(x|z)``
    sums the model's observed sites over the same K draws (Alemi et al. 2018, "Fixing a
    Broken ELBO": ELBO = -(R + D)). The **mutual information** (Hoffman & Johnson 2016, "ELBO
    surgery") is :math:`\frac1M \sum_i [\log q(z_i|x_i) - \log \frac1M \sum_j q(z_i|x_j)]`,
    :math:`z_i \sim q(z|x_i)` jointly over the sites, on the first M = ``mi_points`` rows:
    the guide is run on all M rows with its sites conditioned on each draw (cost O(M^2));
    consistent as M grows, biased for finite M (at most log M). It needs the guide's density
    at points it did not draw: a guide whose transform has no inverse (Pyro's planar and
    radial flows) gets NaN (``mi_points`` 0).

    Standard errors are Monte Carlo errors on these datapoints (the spread of the K draws),
    not the spread over datapoints. Log-densities are unscaled (per datapoint under a
    subsampled plate).

    **Seeds.** The draws come from a stream seeded by ``seed`` (default: one draw of
    ``torch``'s global RNG); the global RNG is otherwise untouched.

    Args:
        model (callable): the Pyro model, called as ``model(*batch, *args, **kwargs)``.
        guide (callable): its guide, with the model's signature.
        data (torch.Tensor or tuple of torch.Tensor): N datapoints along dim 0.
        num_samples (int): K >= 2 draws of the guide per datapoint.
        batch_size (int or None): datapoints per call (default ``10000 // K``, at least 1).
        mi_points (int): M, rows of the mutual-information estimate (0: not computed, NaN).
        threshold (float): the activity above which a unit is active.
        batch_plate (str or None): the batch plate's name (default: the one around the data).
        seed (int or None): the seed of the draws.
        closed_form (bool): use the closed-form KL where it applies (``False``: the Monte
            Carlo estimate for every site, e.g. to check a closed form).

    Returns:
        LatentDiagnostics

    Raises:
        ConfigError: K < 2, bad sizes, guide and model sampling different latent sites, a
            latent site outside the batch plate or inside a further plate.
        DataError: data that is not a tensor (or tuple of tensors with N rows).
    """
    k, n, batch_size = _checked_sizes(data, num_samples, batch_size, mi_points)
    device = as_tuple(data)[0].device
    if seed is None:
        seed = int(torch.randint(0, 2**62, (), device="cpu").item())
    objective = MultiSampleELBO(k, batch_plate=batch_plate)
    sums = _Sums(k, batch_plate, closed_form)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        check_latent_sites(model, guide, *rows(data, slice(0, 2)), *args, **kwargs)
        for i in range(0, n, batch_size):
            batch = rows(data, slice(i, i + batch_size)) + tuple(args)
            w = objective.importance_weights(model, guide, *batch, check_rsample=False, **kwargs)
            sums.add(w, int(objective.max_plate_nesting))
        mi, m = float("nan"), min(int(mi_points), n)
        if m >= 2:
            try:
                mi, m = _mutual_information(guide, data, args, kwargs, sums.plate_name, m)
            except (KeyError, NotImplementedError):  # no density away from its own draws
                mi, m = float("nan"), 0
    sites, active = sums.sites(threshold, n)
    m = m if m >= 2 else 0
    return LatentDiagnostics(sites, *sums.totals(n), active, float(threshold), mi, m, n, k)


def _checked_sizes(data, num_samples, batch_size, mi_points) -> tuple[int, int, int]:
    """K, N and the batch size of :func:`latent_diagnostics`, checked.

    Raises:
        ConfigError: K < 2, N < 2, a batch size < 1 or ``mi_points`` < 0.
    """
    k = int(num_samples)
    if k < 2:
        raise ConfigError(f"num_samples must be >= 2 (a Monte Carlo variance), got {num_samples}")
    n = num_rows(data)
    batch_size = int(batch_size) if batch_size is not None else max(1, 10000 // k)
    if n < 2 or batch_size < 1 or int(mi_points) < 0:
        raise ConfigError(
            f"latent diagnostics need N >= 2 datapoints, batch_size >= 1 and mi_points >= 0, "
            f"got {n}, {batch_size}, {mi_points}"
        )
    return k, n, batch_size


class _Sums:
    """The per-datapoint estimates of :func:`latent_diagnostics`, batch by batch: the total KL
    (the rate) and the distortion with their Monte Carlo variances; per latent site its KL
    with its variance, its KL per dimension, and the posterior mean with its Monte Carlo
    variance."""

    def __init__(self, k: int, batch_plate: str | None, closed_form: bool) -> None:
        self.k, self.batch_plate, self.closed_form = k, batch_plate, closed_form
        self.kl_tot: list[torch.Tensor] = []
        self.kl_var: list[torch.Tensor] = []
        self.dist_tot: list[torch.Tensor] = []
        self.dist_var: list[torch.Tensor] = []
        self.per_site: dict[str, dict[str, list]] = {}
        self.closed: dict[str, bool] = {}
        self.plate_name: str | None = None

    def add(self, w: Any, rank: int) -> None:
        """Add one batch, from its importance weights ``w`` (K draws of B datapoints, ``rank``
        plates)."""
        k = self.k
        plate = find_batch_plate(w.model_trace, self.batch_plate)
        b = w.log_w.shape[-1]
        model_sites = _sample_sites(w.model_trace)
        total_kl = 0.0
        for name, q_site in _sample_sites(w.guide_trace).items():
            _only_batch_plate(q_site, plate)
            self.plate_name = plate.name
            total, per_dim, is_closed = _site_kl(
                q_site, model_sites[name], k, b, plate, rank, self.closed_form
            )
            total_kl = total_kl + total
            mean, mc_var = _posterior_mean(q_site, k, b)
            acc = self.per_site.setdefault(
                name, {"kl": [], "kl_var": [], "per_dim": [], "mean": [], "mc_var": []}
            )
            acc["kl"].append(total.mean(0))
            acc["kl_var"].append(total.var(0) / k)
            acc["per_dim"].append(per_dim.mean(0) if per_dim is not None else None)
            acc["mean"].append(mean)
            acc["mc_var"].append(mc_var)
            self.closed[name] = self.closed.get(name, True) and is_closed
        total_kl = _on(total_kl, w.log_w)
        self.kl_tot.append(total_kl.mean(0))
        self.kl_var.append(total_kl.var(0) / k)
        log_lik = 0.0
        for site in _sample_sites(w.model_trace, observed=True).values():
            log_p = scale_and_mask(site["unscaled_log_prob"], 1.0, site["mask"])
            log_lik = log_lik + sum_to_batch(log_p, site, rank, plate).double()
        log_lik = _on(log_lik, w.log_w).double().expand(k, b)
        self.dist_tot.append(-log_lik.mean(0))
        self.dist_var.append(log_lik.var(0) / k)

    def totals(self, n: int) -> tuple[float, float, float, float]:
        """The rate and the distortion (means over the N datapoints), each with its standard
        error."""
        return (
            torch.cat(self.kl_tot).mean().item(),
            torch.cat(self.kl_var).sum().sqrt().item() / n,
            torch.cat(self.dist_tot).mean().item(),
            torch.cat(self.dist_var).sum().sqrt().item() / n,
        )

    def sites(self, threshold: float, n: int) -> tuple[dict[str, "SiteDiagnostics"], int]:
        """Each site's diagnostics, and the number of active units (activity > threshold)."""
        sites, active = {}, 0
        for name, acc in self.per_site.items():
            kl_n = torch.cat(acc["kl"])
            per_dim = None
            if all(p is not None for p in acc["per_dim"]):
                per_dim = torch.cat(acc["per_dim"]).mean(0).cpu()
            means, mc_var = torch.cat(acc["mean"]), torch.cat(acc["mc_var"])
            activity = (means.var(0) - mc_var.mean(0)).clamp_min(0.0).cpu()
            active += int((activity > threshold).sum())
            sites[name] = SiteDiagnostics(
                name,
                kl_n.mean().item(),
                torch.cat(acc["kl_var"]).sum().sqrt().item() / n,
                self.closed[name],
                per_dim,
                activity,
            )
        return sites, active
