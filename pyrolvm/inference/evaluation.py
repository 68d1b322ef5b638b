"""Importance-sampled log-likelihood (and the ELBO and ESS from the same samples).

The estimator of Burda et al. (2016), section 5 / Rezende et al. (2014), appendix E:

    log p(x) ~= log (1/K) sum_k p(x, z_k) / q(z_k | x),   z_k ~ q(z | x),

computed for every datapoint separately, in batches of datapoints and chunks of particles
so that memory is bounded by ``batch_size * chunk_size`` model evaluations whatever K is.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pyro
import torch
from pyro.infer.util import is_validation_enabled
from tqdm.auto import tqdm

from ..errors import ConfigError, DataError
from . import compiled, distributed
from .batches import Data, as_tuple, num_rows, rows
from .importance import prior_proposal
from .objectives import MultiSampleELBO

PROPOSALS = ("guide", "prior")


@dataclass
class ImportanceResult:
    """Per-datapoint results of importance sampling with K samples.

    Attributes:
        log_likelihood (torch.Tensor): shape (N,), float64, the estimate
            ``log (1/K) sum_k w_k`` of log p(x_n), in nats (a stochastic lower bound in
            expectation, by Jensen; consistent as K grows).
        elbo (torch.Tensor): shape (N,), float64, ``(1/K) sum_k log w_k``, an unbiased estimate
            of the ELBO of x_n, in nats.
        ess (torch.Tensor): shape (N,), float64, effective sample size
            ``(sum_k w_k)^2 / sum_k w_k^2`` (Kong 1992), between 1 and K.
        num_samples (int): K.
    """

    log_likelihood: torch.Tensor
    elbo: torch.Tensor
    ess: torch.Tensor
    num_samples: int


def mean_and_stderr(values: torch.Tensor | Sequence[float]) -> tuple[float, float]:
    """Mean of a 1-d tensor and its standard error ``std / sqrt(N)`` (0 for N = 1), as floats."""
    if isinstance(values, torch.Tensor):  # where it lies (as_tensor would use the default device)
        values = values.detach().to(torch.float64).flatten()
    else:
        values = torch.tensor(list(values), dtype=torch.float64, device="cpu")
    n = values.numel()
    stderr = values.std().item() / math.sqrt(n) if n > 1 else 0.0
    return values.mean().item(), stderr


@torch.no_grad()
def importance_sample(
    model: Callable,
    guide: Callable,
    data: Data,
    *args: Any,
    num_samples: int = 1000,
    batch_size: int = 100,
    chunk_size: int | None = None,
    proposal: str = "guide",
    batch_plate: str | None = None,
    progress: bool = False,
    shard: bool = True,
    **kwargs: Any,
) -> ImportanceResult:
    """Importance-sample p(x_n) for every datapoint with K samples from a proposal.

    ``model`` and ``guide`` are called as ``model(*batch, *args, **kwargs)`` where ``batch``
    holds rows ``i:j`` of ``data`` (a tensor, or a tuple of tensors sliced together, e.g.
    images and labels). They must follow Pyro's rules: every sample site inside one batch plate.

    **Seeds.** The call draws one seed from ``torch``'s global RNG; each batch of datapoints
    then draws its samples from a stream seeded by that seed and the batch's first row (the
    global RNG is left as that one draw left it). A datapoint's estimate therefore depends
    on the seed, its batch and K, not on the other batches nor on how many processes share
    the work: under ``torchrun`` (``shard``) the batches are dealt out to the processes in
    turn and the results gathered on every process, equal per datapoint to one process's.
    Every process must then make the same call.

    Args:
        model (callable): the Pyro model.
        guide (callable): its guide, with the model's signature.
        data (torch.Tensor or tuple of torch.Tensor): N datapoints along dim 0.
        num_samples (int): K >= 1 importance samples per datapoint.
        batch_size (int): datapoints per model call.
        chunk_size (int or None): particles per model call; default keeps
            ``batch_size * chunk_size <= 10000``.
        proposal (str): ``"guide"`` (importance sampling with q(z | x)) or ``"prior"``
            (naive Monte Carlo with p(z), for comparison).
        batch_plate (str or None): name of the batch plate (default: the one around the data).
        progress (bool): show a progress bar over batches (rank 0 only).
        shard (bool): under a ``torch.distributed`` process group, share the batches out among
            the processes (each evaluates every W-th batch) and gather the results.

    Returns:
        ImportanceResult: per-datapoint log-likelihood, ELBO and ESS, each of shape (N,).

    Raises:
        ConfigError: K < 1, batch or chunk size < 1, no data, an unknown proposal, or a model
            whose sites are not all inside the batch plate.
        DataError: data that is not a tensor (or tuple of tensors with N rows each) or holds
            NaN or infinite values; data the model refuses (shape, dtype, support).
    """
    if int(num_samples) < 1:
        raise ConfigError(f"num_samples must be >= 1, got {num_samples}")
    if proposal not in PROPOSALS:
        raise ConfigError(f"unknown proposal {proposal!r}: choose one of {', '.join(PROPOSALS)}")
    q = guide if proposal == "guide" else prior_proposal(model)
    validate = is_validation_enabled()
    k_total = int(num_samples)
    if int(batch_size) < 1 or (chunk_size is not None and int(chunk_size) < 1):
        raise ConfigError(f"batch_size and chunk_size must be >= 1, got {batch_size}, {chunk_size}")
    batch_size = int(batch_size)
    n = num_rows(data)
    if n == 0:
        raise ConfigError("no datapoints to evaluate")
    for t in as_tuple(data):
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise DataError("the data to evaluate holds NaN or infinite values")
    chunk_size = int(chunk_size or max(1, min(k_total, 10000 // batch_size)))
    seed = distributed.shared_seeds(1)[0]
    starts = list(range(0, n, batch_size))
    if shard and distributed.active():  # every W-th batch, then gathered
        starts = starts[distributed.rank() :: distributed.world_size()]
    device = as_tuple(data)[0].device
    # one objective per chunk size (a full chunk and the remainder) computes the (K, B)
    # log-weights of a chunk; the plate nesting is guessed once, by one run of guide and model
    # on the first batch (one particle), whose draws are discarded (a stream of their own)
    chunks: dict[int, MultiSampleELBO] = {}

    def objective(k):
        if k not in chunks:
            known = [o.max_plate_nesting - (o.num_particles > 1) for o in chunks.values()]
            nesting = known[0] if known else float("inf")
            chunks[k] = MultiSampleELBO(k, max_plate_nesting=nesting, batch_plate=batch_plate)
        return chunks[k]

    chunk_log_weights = compiled.chunk_log_weights(model, q)  # compiled per chunk shape
    results = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(distributed.mix_seed(seed, n))  # no batch starts at row n
        with pyro.validation_enabled(validate):
            first = rows(data, slice(0, batch_size)) + tuple(args)
            objective(chunk_size).guess_plate_nesting(model, q, *first, **kwargs)
        quiet = None if progress and distributed.is_main() else True  # tqdm: None = tty only
        for i in tqdm(starts, desc="log-likelihood", disable=quiet, leave=False):
            torch.manual_seed(distributed.mix_seed(seed, i))
            batch = rows(data, slice(i, i + batch_size)) + tuple(args)
            lse_w: torch.Tensor | None = None
            lse_w2: torch.Tensor | None = None
            sum_log_w = 0.0
            for k0 in range(0, k_total, chunk_size):
                k = min(chunk_size, k_total - k0)
                # Pyro's shape and support checks run on the first chunk only: the rest
                # repeat it.
                with pyro.validation_enabled(validate and i == 0 and k0 == 0):
                    log_w = chunk_log_weights(objective(k), *batch, **kwargs)
                log_w = log_w.double()
                c_w, c_w2 = torch.logsumexp(log_w, 0), torch.logsumexp(2 * log_w, 0)
                lse_w = c_w if lse_w is None else torch.logaddexp(lse_w, c_w)
                lse_w2 = c_w2 if lse_w2 is None else torch.logaddexp(lse_w2, c_w2)
                sum_log_w = sum_log_w + log_w.sum(0)
            assert lse_w is not None and lse_w2 is not None  # K >= 1: at least one chunk
            results.append(
                (i, lse_w - math.log(k_total), sum_log_w / k_total, (2 * lse_w - lse_w2).exp())
            )
    if shard and distributed.active():
        parts = distributed.gather_objects(
            [(i, *(t.cpu() for t in r)) for i, *r in results], "the sharded evaluation"
        )
        results = sorted((r for part in parts for r in part), key=lambda r: r[0])
        results = [(i, *(t.to(device) for t in r)) for i, *r in results]
    out_ll, out_elbo, out_ess = ([r[j] for r in results] for j in (1, 2, 3))
    return ImportanceResult(torch.cat(out_ll), torch.cat(out_elbo), torch.cat(out_ess), k_total)


def log_likelihood(
    model: Callable, guide: Callable, data: Data, *args: Any, **kwargs: Any
) -> torch.Tensor:
    """Per-datapoint importance-sampled log p(x_n) in nats, shape (N,); see
    :func:`importance_sample` for the arguments."""
    return importance_sample(model, guide, data, *args, **kwargs).log_likelihood
