"""Imputation of missing data by self-normalized importance sampling.

Mattei & Frellsen (2019), "MIWAE: Deep Generative Modelling and Imputation of Incomplete Data
Sets", section 3.2, eqs. (11)-(12): with z_1..z_K ~ q(z | x_obs) and importance weights
w_k = p(x_obs, z_k) / q(z_k | x_obs),

    E[x_mis | x_obs] ~= sum_k (w_k / sum_j w_j) E[x_mis | z_k],

(the missing pixels are independent of the observed ones given z), a consistent estimate of
the conditional mean as K grows. The weights and the means E[x | z_k] come from the same
vectorized Pyro traces as :func:`~pyrolvm.inference.importance_sample`: the model's observed
site (``"x"``) holds p(x | z_k), whose ``mean`` gives E[x | z_k].
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyro
import torch
from pyro.infer.util import is_validation_enabled
from tqdm.auto import tqdm

from ..errors import ConfigError, DataError
from .objectives import MultiSampleELBO


@dataclass
class ImputationResult:
    """Per-datapoint results of importance-sampled imputation with K samples.

    Attributes:
        imputed (torch.Tensor): shape (N, D), the observed values where the mask is ``True``
            and the self-normalized estimate of E[x_mis | x_obs] where it is ``False``.
        conditional_mean (torch.Tensor): shape (N, D), the estimate of E[x | x_obs] at every
            pixel (observed ones included: the model's reconstruction of them).
        log_likelihood (torch.Tensor): shape (N,), float64, ``log (1/K) sum_k w_k``, the
            importance-sampled log p(x_obs) of the same draws, in nats.
        ess (torch.Tensor): shape (N,), float64, the effective sample size of the weights.
        num_samples (int): K.
    """

    imputed: torch.Tensor
    conditional_mean: torch.Tensor
    log_likelihood: torch.Tensor
    ess: torch.Tensor
    num_samples: int


@torch.no_grad()
def impute(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    mask: torch.Tensor,
    *args: Any,
    num_samples: int = 1000,
    batch_size: int = 100,
    chunk_size: int | None = None,
    site: str = "x",
    progress: bool = False,
    **kwargs: Any,
) -> ImputationResult:
    """Impute the missing entries of ``x`` by self-normalized importance sampling over the
    guide (Mattei & Frellsen 2019, eq. 12).

    ``model`` and ``guide`` are called as ``model(x_batch, mask_batch, *args, **kwargs)``; the
    model must score only the observed entries at ``site`` (a masked likelihood, e.g.
    :class:`pyrolvm.models.VAE` with a mask) and the distribution at ``site`` must have a
    ``mean`` of shape (..., B, D). Particles come in chunks, combined exactly
    (log-sum-exp), so memory is bounded by ``batch_size * chunk_size`` model evaluations.

    Args:
        model (callable): the Pyro model with a masked likelihood.
        guide (callable): its guide q(z | x_obs), with the model's signature.
        x (torch.Tensor): shape (N, D), values at missing entries ignored.
        mask (torch.Tensor): bool, shape (N, D), ``True`` where observed.
        num_samples (int): K >= 1.
        batch_size (int): datapoints per model call.
        chunk_size (int or None): particles per model call (default: ``batch_size * chunk_size
            <= 10000``).
        site (str): the model's observed site whose distribution's mean is E[x | z].
        progress (bool): show a progress bar over batches.

    Returns:
        ImputationResult

    Raises:
        ConfigError: K, batch or chunk size < 1, or no site ``site`` in the model's trace.
        DataError: ``x`` and ``mask`` of different shapes, a mask that is not bool.
    """
    if int(num_samples) < 1:
        raise ConfigError(f"num_samples must be >= 1, got {num_samples}")
    if int(batch_size) < 1 or (chunk_size is not None and int(chunk_size) < 1):
        raise ConfigError(f"batch_size and chunk_size must be >= 1, got {batch_size}, {chunk_size}")
    if mask.dtype != torch.bool or mask.shape != x.shape:
        raise DataError(
            f"the mask must be a bool tensor of the shape of x {tuple(x.shape)}, got "
            f"{mask.dtype} of shape {tuple(mask.shape)}"
        )
    k_total, batch_size = int(num_samples), int(batch_size)
    chunk_size = int(chunk_size or max(1, min(k_total, 10000 // batch_size)))
    validate = is_validation_enabled()
    objectives: dict[int, MultiSampleELBO] = {}
    means, lls, esss = [], [], []
    for i in tqdm(
        range(0, len(x), batch_size), desc="imputation", disable=None if progress else True
    ):
        xb, mb = x[i : i + batch_size], mask[i : i + batch_size]
        checks = validate and i == 0  # Pyro's checks on the first chunk only
        acc, lse, lse2 = _impute_batch(
            model, guide, xb, mb, args, kwargs, objectives, k_total, chunk_size, site, checks
        )
        means.append(acc.to(x.dtype))
        lls.append(lse - math.log(k_total))
        esss.append((2 * lse - lse2).exp())
    conditional_mean = torch.cat(means)
    return ImputationResult(
        torch.where(mask, x, conditional_mean),
        conditional_mean,
        torch.cat(lls),
        torch.cat(esss),
        k_total,
    )


def _impute_batch(
    model, guide, xb, mb, args, kwargs, objectives, k_total, chunk_size, site, checks
):
    """One batch's conditional mean E[x | x_obs] (B, D) in float64, and the log-sum-exp of its
    K log-weights and of their doubles (B,), over chunks of particles combined exactly;
    ``objectives`` holds one objective per chunk size (the plate nesting guessed once)."""
    lse: torch.Tensor | None = None
    lse2: torch.Tensor | None = None
    acc: torch.Tensor | None = None
    for k0 in range(0, k_total, chunk_size):
        k = min(chunk_size, k_total - k0)
        if k not in objectives:
            known = [o.max_plate_nesting - (o.num_particles > 1) for o in objectives.values()]
            objectives[k] = MultiSampleELBO(k, max_plate_nesting=known[0] if known else math.inf)
        with pyro.validation_enabled(checks and k0 == 0):
            weights = objectives[k].importance_weights(
                model, guide, xb, mb, *args, check_rsample=False, **kwargs
            )
        if site not in weights.model_trace.nodes:
            raise ConfigError(f"the model has no site {site!r} to impute from")
        fn: Any = weights.model_trace.nodes[site].get("fn")
        mean = fn.mean
        mean = mean.expand((k,) + xb.shape) if k > 1 else mean.expand(xb.shape).unsqueeze(0)
        log_w = weights.log_w.double()
        c = torch.logsumexp(log_w, 0)
        # the weighted mean over the chunk's particles, (B, D): a product in the model's
        # dtype (no float64 (K, B, D) intermediate), accumulated in float64 across chunks
        weights_k = torch.softmax(log_w, 0).to(mean.dtype)
        part = torch.einsum("kb,kbd->bd", weights_k, mean).double()
        if lse is None or acc is None or lse2 is None:
            lse, acc, lse2 = c, part, torch.logsumexp(2 * log_w, 0)
        else:
            new = torch.logaddexp(lse, c)
            acc = acc * (lse - new).exp().unsqueeze(-1) + part * (c - new).exp().unsqueeze(-1)
            lse, lse2 = new, torch.logaddexp(lse2, torch.logsumexp(2 * log_w, 0))
    assert lse is not None and acc is not None and lse2 is not None
    return acc, lse, lse2


def imputation_error(
    imputed: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor
) -> tuple[float, float]:
    """Mean squared error over the missing entries (``mask`` ``False``) of ``imputed``
    against ``truth`` (both (N, D)), and its standard error over datapoints (per-datapoint
    mean squared errors; datapoints without a missing entry are left out). For binary truth
    and imputed probabilities this is the Brier score.

    Raises:
        DataError: no missing entry at all.
    """
    missing = (~mask).to(torch.float64)
    count = missing.sum(-1)
    keep = count > 0
    if not keep.any():
        raise DataError("no missing entries: nothing to score the imputation on")
    sq = ((imputed.double() - truth.double()) ** 2 * missing).sum(-1)
    per_point = sq[keep] / count[keep]
    n = per_point.numel()
    mse = (sq.sum() / count.sum()).item()
    se = per_point.std().item() / math.sqrt(n) if n > 1 else 0.0
    return mse, se
