"""Importance-sampled log-likelihood (and the ELBO and ESS from the same samples).

The estimator of Burda et al. (2016), section 5 / Rezende et al. (2014), appendix E:

    log p(x) ~= log (1/K) sum_k p(x, z_k) / q(z_k | x),   z_k ~ q(z | x),

computed for every datapoint separately, in batches of datapoints and chunks of particles
so that memory is bounded whatever K is: by default each chunk is as large as a memory budget
allows (:func:`chunk_size_for`).
"""

import gc
import math
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pyro
import torch
from pyro.infer.util import is_validation_enabled
from torch.overrides import TorchFunctionMode
from tqdm.auto import tqdm

from ..errors import ConfigError, DataError
from . import compiled, distributed
from .batches import Data, as_tuple, num_rows, rows
from .importance import find_batch_plate, prior_proposal
from .objectives import MultiSampleELBO
from .pairs import check_pair

PROPOSALS = ("guide", "prior")

#: The memory (bytes) the tensors of one chunk of particles may hold on the CPU: 128 MiB (the
#: process's resident memory grows further by what the C allocator keeps). Larger chunks are
#: slower there, not faster: for the MNIST VAE at 100 datapoints per call this allows 90
#: particles per call; 128 or 256 took 1.4 and 1.9 times as long, each tensor of the chunk
#: then beyond the 32 MiB that glibc's allocator recycles instead of mapping afresh.
CPU_MEMORY_BUDGET = 128 * 2**20

#: On CUDA, the fraction of the device's free memory (with what torch's allocator holds unused)
#: that one chunk may take.
CUDA_MEMORY_FRACTION = 0.5

#: The factor applied to a chunk's measured tensor bytes: the measure sees the tensors each torch
#: function returns, not the temporaries inside one (up to 1.25 times more in our models).
MEMORY_SAFETY = 1.5


def memory_budget(device: torch.device) -> int:
    """The bytes one chunk of the evaluator may take on ``device``: on CUDA
    :data:`CUDA_MEMORY_FRACTION` of its free memory (``torch.cuda.mem_get_info``, plus the
    memory torch's caching allocator holds unused), on the CPU :data:`CPU_MEMORY_BUDGET`."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        unused = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(CUDA_MEMORY_FRACTION * (free + unused))
    return CPU_MEMORY_BUDGET


def chunk_size_for(
    num_samples: int, bytes_per_particle: float, budget: int, power_of_two: bool = False
) -> int:
    """Particles per model call: the largest ``k <= num_samples`` with
    ``k * bytes_per_particle <= budget`` (1 when not even one particle fits; ``num_samples``
    when all fit); with ``power_of_two`` the largest power of two below it, so that small
    changes of the budget (a GPU's free memory, on CUDA) rarely change the chunks, and with
    them the draws."""
    k_total = int(num_samples)
    fits = max(int(budget // max(float(bytes_per_particle), 1.0)), 1)
    if fits >= k_total:
        return k_total
    return 1 << fits.bit_length() - 1 if power_of_two else fits


class _PeakTensorBytes(TorchFunctionMode):
    """The peak, over a block, of the bytes held by the tensors that torch functions return
    inside it (each storage counted once, until it is freed)."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self.sizes: dict[int, int] = {}

    def _free(self, key: int) -> None:
        self.live -= self.sizes.pop(key)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = None
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and not t.is_meta:
                storage = t.untyped_storage()
                if inputs is None:  # the memory of the inputs: a view, an in-place or no-op
                    inputs = {  # result (contiguous, detach, requires_grad_) is not new
                        a.untyped_storage().data_ptr()
                        for a in (*args, *kwargs.values())
                        if isinstance(a, torch.Tensor) and not a.is_meta
                    }
                if id(storage) not in self.sizes and storage.data_ptr() not in inputs:
                    self.sizes[id(storage)] = size = storage.nbytes()
                    weakref.finalize(storage, self._free, id(storage))
                    self.live += size
                    self.peak = max(self.peak, self.live)
        return out


def bytes_per_particle(call: Callable[[], Any]) -> float:
    """The memory one particle of a chunk takes, from ``call()`` (the model and guide on one
    batch with 2 particles): half the peak bytes of the new tensors it makes (the tensors
    that torch functions return, not views or inputs), times :data:`MEMORY_SAFETY`. What the
    particles share (the encoder's output) is counted half per particle, more than its share
    in a larger chunk, so ``k`` times this figure bounds a chunk of ``k``. Python's garbage
    collector is paused meanwhile, so that the figure does not depend on when it runs."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        with _PeakTensorBytes() as probe:
            call()
    finally:
        if enabled:
            gc.enable()
    return MEMORY_SAFETY * probe.peak / 2


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
    The pair is checked first, on the first batch (:func:`~pyrolvm.inference.check_pair`):
    matching sites, a batch plate with one entry per row (a plate that subsamples at random
    is refused: give it the rows' indices, ``subsample=idx``), and a guide whose density
    splits per datapoint. A guide with parameters per datapoint (Pyro's ``AutoNormal`` over
    ``model(x)``) needs all N rows in one batch (``batch_size >= N``).

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
        chunk_size (int or None): particles per model call; default: as many as a memory
            budget allows (half the free memory on CUDA, 128 MiB on the CPU:
            ``pyrolvm.inference.evaluation.memory_budget`` and ``chunk_size_for``), with the
            memory of a particle measured once on the first batch (``bytes_per_particle``);
            under ``torchrun`` the smallest of the processes'.
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
            whose sites are not all inside the batch plate; a model and guide (or proposal)
            that do not match; a batch plate that subsamples at random or has not one entry
            per row of the data (e.g. no plate over the rows); a guide drawing all datapoints'
            latents jointly (Pyro's AutoContinuous guides).
        DataError: data that is not a tensor (or tuple of tensors with N rows each) or holds
            NaN or infinite values; data the model refuses (shape, dtype, support).
    """
    k_total, batch_size, n = _checked_arguments(data, num_samples, proposal, batch_size, chunk_size)
    q = guide if proposal == "guide" else prior_proposal(model)
    validate = is_validation_enabled()
    seed = distributed.shared_seeds(1)[0]
    sharded = shard and distributed.active()
    starts = list(range(0, n, batch_size))
    if sharded:  # every W-th batch, then gathered
        starts = starts[distributed.rank() :: distributed.world_size()]
    device = as_tuple(data)[0].device
    objective = _ChunkObjectives(batch_plate)
    chunk_log_weights = compiled.chunk_log_weights(model, q)  # compiled per chunk shape
    results = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(distributed.mix_seed(seed, n))  # no batch starts at row n
        with pyro.validation_enabled(validate):
            first = rows(data, slice(0, batch_size)) + tuple(args)
            chunk_size = _check_first_batch(
                model, q, first, kwargs, objective, batch_plate, chunk_size, k_total, sharded
            )
        quiet = None if progress and distributed.is_main() else True  # tqdm: None = tty only
        for i in tqdm(starts, desc="log-likelihood", disable=quiet, leave=False):
            torch.manual_seed(distributed.mix_seed(seed, i))
            batch = rows(data, slice(i, i + batch_size)) + tuple(args)
            # Pyro's shape and support checks run on the first chunk only: the rest repeat it
            checks = validate and i == 0
            estimates = _estimates(
                chunk_log_weights, objective, batch, kwargs, k_total, chunk_size, checks
            )
            results.append((i, *estimates))
    if sharded:
        results = _gathered(results, device)
    out_ll, out_elbo, out_ess = ([r[j] for r in results] for j in (1, 2, 3))
    return ImportanceResult(torch.cat(out_ll), torch.cat(out_elbo), torch.cat(out_ess), k_total)


def _checked_arguments(data, num_samples, proposal, batch_size, chunk_size) -> tuple[int, int, int]:
    """K, the batch size and N, checked (see :func:`importance_sample`'s errors)."""
    if int(num_samples) < 1:
        raise ConfigError(f"num_samples must be >= 1, got {num_samples}")
    if proposal not in PROPOSALS:
        raise ConfigError(f"unknown proposal {proposal!r}: choose one of {', '.join(PROPOSALS)}")
    if int(batch_size) < 1 or (chunk_size is not None and int(chunk_size) < 1):
        raise ConfigError(f"batch_size and chunk_size must be >= 1, got {batch_size}, {chunk_size}")
    n = num_rows(data)
    if n == 0:
        raise ConfigError("no datapoints to evaluate")
    for t in as_tuple(data):
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise DataError("the data to evaluate holds NaN or infinite values")
    return int(num_samples), int(batch_size), n


class _ChunkObjectives:
    """One objective per chunk size (a full chunk and the remainder), each computing the
    (K, B) log-weights of a chunk, ``objectives(k)``; the plate nesting is guessed once, by
    the first (see :func:`_check_first_batch`), and shared."""

    def __init__(self, batch_plate: str | None) -> None:
        self.batch_plate = batch_plate
        self.chunks: dict[int, MultiSampleELBO] = {}

    def __call__(self, k: int) -> MultiSampleELBO:
        if k not in self.chunks:
            known = [o.max_plate_nesting - (o.num_particles > 1) for o in self.chunks.values()]
            nesting = known[0] if known else float("inf")
            self.chunks[k] = MultiSampleELBO(
                k, max_plate_nesting=nesting, batch_plate=self.batch_plate
            )
        return self.chunks[k]


def _check_first_batch(model, q, first, kwargs, objective, batch_plate, chunk_size, k, sharded):
    """Check the pair on the first batch ``first`` (:func:`check_pair`, one weight per row),
    guess the plate nesting by one run of guide and model (one particle), and return the
    chunk size: ``chunk_size``, or from the memory budget and the memory of a particle (the
    smallest of the processes' when ``sharded``). The draws are discarded."""
    model_trace, _ = check_pair(
        model, q, *first, per_datapoint=True, batch_plate=batch_plate, **kwargs
    )
    _one_weight_per_row(find_batch_plate(model_trace, batch_plate), len(first[0]))
    objective(chunk_size or 2).guess_plate_nesting(model, q, *first, **kwargs)
    if chunk_size is None:  # from the memory budget (the probe's draws are discarded)
        weights = objective(2).importance_weights
        size = bytes_per_particle(
            lambda: weights(model, q, *first, check_rsample=False, **kwargs).log_w
        )
        device = first[0].device
        chunk_size = chunk_size_for(k, size, memory_budget(device), device.type == "cuda")
        if sharded:  # the same chunks, and draws, everywhere
            chunk_size = min(distributed.gather_objects(chunk_size, "choosing chunks"))
    return int(chunk_size)


def _estimates(chunk_log_weights, objective, batch, kwargs, k_total, chunk_size, checks):
    """One batch's log-likelihood ``log (1/K) sum_k w_k``, ELBO ``(1/K) sum_k log w_k`` and
    ESS ``(sum w)^2 / sum w^2``, each of shape (B,), accumulated over chunks of particles in
    float64 (Pyro's validation on the first chunk if ``checks``)."""
    lse_w: torch.Tensor | None = None
    lse_w2: torch.Tensor | None = None
    sum_log_w = 0.0
    for k0 in range(0, k_total, chunk_size):
        k = min(chunk_size, k_total - k0)
        with pyro.validation_enabled(checks and k0 == 0):
            log_w = chunk_log_weights(objective(k), *batch, **kwargs)
        if log_w.shape[-1] != len(batch[0]):
            _one_weight_per_row(None, len(batch[0]), log_w.shape[-1])
        log_w = log_w.double()
        c_w, c_w2 = torch.logsumexp(log_w, 0), torch.logsumexp(2 * log_w, 0)
        lse_w = c_w if lse_w is None else torch.logaddexp(lse_w, c_w)
        lse_w2 = c_w2 if lse_w2 is None else torch.logaddexp(lse_w2, c_w2)
        sum_log_w = sum_log_w + log_w.sum(0)
    assert lse_w is not None and lse_w2 is not None  # K >= 1: at least one chunk
    return lse_w - math.log(k_total), sum_log_w / k_total, (2 * lse_w - lse_w2).exp()


def _gathered(results, device):
    """Every process's ``(start, estimates...)`` gathered, in the order of the rows."""
    parts = distributed.gather_objects(
        [(i, *(t.cpu() for t in r)) for i, *r in results], "the sharded evaluation"
    )
    results = sorted((r for part in parts for r in part), key=lambda r: r[0])
    return [(i, *(t.to(device) for t in r)) for i, *r in results]


def _one_weight_per_row(plate: Any, num_rows: int, weights: int | None = None) -> None:
    """Raise :class:`ConfigError` unless the batch ``plate`` (a frame or ``None``) has one
    entry per row of the batch (``weights``: the number of weights found instead)."""
    if weights is None and plate is not None and plate.size == num_rows:
        return
    found = (
        f"{weights} importance weights"
        if weights is not None
        else "one joint importance weight (its observed sites lie in no plate)"
        if plate is None
        else f"{plate.size} importance weights (its batch plate {plate.name!r})"
    )
    raise ConfigError(
        f"the evaluator needs one importance weight per row of the data, but the model gives "
        f"{found} for a batch of {num_rows} rows. Put every latent and observed site in one "
        "plate over the rows, pyro.plate('data', x.shape[0]), with the per-row dimensions as "
        "the event (.to_event(1) over the features, not over the rows), or name that plate "
        "with batch_plate="
    )


def log_likelihood(
    model: Callable, guide: Callable, data: Data, *args: Any, **kwargs: Any
) -> torch.Tensor:
    """Per-datapoint importance-sampled log p(x_n) in nats, shape (N,); see
    :func:`importance_sample` for the arguments."""
    return importance_sample(model, guide, data, *args, **kwargs).log_likelihood
