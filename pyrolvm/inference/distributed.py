"""Data-parallel SVI and sharded evaluation on ``torch.distributed``, for launches by
``torchrun`` (gloo on CPU processes, NCCL on GPUs).

Everything that knows about several processes lives here; the training loop and the
evaluator call it through a few hooks and behave exactly as before in a single process.

**Training** (:func:`~pyrolvm.inference.train`): every process holds the whole model; each
step's global minibatch of B rows (the single process's, drawn from a data-order stream that
every process shares) is split into W contiguous shards, one per process; each process runs
the objective's own ``loss_and_grads`` on its shard, then :class:`GradientSync` sums the
gradients and the losses over the processes with ``torch.distributed.all_reduce`` (one
flattened bucket per dtype) before the optimizer's update, so that every process takes the
same step. The losses of our objectives are *sums* over the batch plate, so the sum of the
shard gradients is the gradient of the whole minibatch: W processes with B / W rows each
follow the trajectory of one process with B rows (up to the noise each draws). Under a
subsampled plate (``pyro.plate(size=N, subsample=...)``: a loss scaled by N / B) each shard
is weighted by its share of the rows instead, which again gives the whole minibatch's
gradient.

This is what ``DistributedDataParallel`` does inside (a bucketed all-reduce of the gradients
after the backward pass), without its forward wrapper: our objectives compute their
gradients in their own ``loss_and_grads`` (Pyro's ELBOs, score-function surrogates, DReG),
several objectives may share parameters within one step (M2), and Pyro creates parameters
lazily in the param store; an all-reduce between the backward pass and the update covers all
of them without a wrapper module per objective. The price is that communication does not
overlap the backward pass.

**Evaluation** (:func:`~pyrolvm.inference.importance_sample`): the batches of datapoints are
dealt out to the processes in turn and the per-datapoint results gathered; every batch draws
from its own seed, so the per-datapoint numbers do not depend on the number of processes.
"""

import contextlib
import datetime
import importlib
import os
import signal
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from pyro.poutine.messenger import Messenger

from ..devices import resolve_device
from ..errors import ConfigError, PeerLost

#: Seconds a process waits in a collective for the others before it gives up
#: (``$PYROLVM_DIST_TIMEOUT`` overrides it), between CPU processes (gloo: a process that died
#: is noticed at once, through its closed connections).
DEFAULT_TIMEOUT = 1800.0

#: The same between GPU processes (NCCL), short: there a collective whose peer died can hang
#: on the GPU until NCCL's watchdog gives it up after this time.
DEFAULT_NCCL_TIMEOUT = 300.0

#: What ``init`` sets ``$TORCH_NCCL_ASYNC_ERROR_HANDLING`` to under NCCL (unless it is set to
#: 0, 2 or 3 already; ``torchrun`` sets 1): on a collective's error or timeout NCCL's watchdog
#: aborts the communicators without killing the process, so that the process reports its
#: lost peers (:class:`~pyrolvm.PeerLost`) instead of dying with a C++ abort.
NCCL_ERROR_HANDLING = "2"

#: Under NCCL, a gloo group over the same processes that carries GradientSync's control
#: flags (stop requests, which parameters have gradients) on the host: reading them then
#: needs no copy from the GPU. ``None``: the default group (gloo) carries them.
_control: Any = None


def launched() -> bool:
    """Whether this process was started by ``torchrun`` (``RANK`` and ``WORLD_SIZE`` set)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def active() -> bool:
    """Whether a ``torch.distributed`` process group is initialized with more than one
    process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """The number of processes W (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank in ``0..W-1`` (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """Whether this process is rank 0: the one that writes files and shows progress."""
    return rank() == 0


def timeout_seconds(backend: str = "gloo") -> float:
    """The collective timeout: ``$PYROLVM_DIST_TIMEOUT`` seconds, else :data:`DEFAULT_TIMEOUT`
    (gloo) or :data:`DEFAULT_NCCL_TIMEOUT` (``backend="nccl"``)."""
    text = os.environ.get("PYROLVM_DIST_TIMEOUT", "")
    default = DEFAULT_NCCL_TIMEOUT if backend == "nccl" else DEFAULT_TIMEOUT
    try:
        value = float(text) if text else default
    except ValueError:
        raise ConfigError(f"$PYROLVM_DIST_TIMEOUT must be seconds, got {text!r}") from None
    if not value > 0:
        raise ConfigError(f"$PYROLVM_DIST_TIMEOUT must be positive, got {text!r}")
    return value


def init(device: str = "auto") -> bool:
    """Join the process group of a ``torchrun`` launch (a no-op otherwise, or when already
    joined): NCCL when the run uses CUDA (each process on its own GPU, ``cuda:LOCAL_RANK``:
    :func:`pyrolvm.devices.resolve_device`), else gloo; collectives time out after
    :func:`timeout_seconds`. Under NCCL ``$TORCH_NCCL_ASYNC_ERROR_HANDLING`` is set to
    :data:`NCCL_ERROR_HANDLING` first, and a gloo group for the host-side flags is made.

    Args:
        device (str): the run's ``--device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``).

    Returns:
        bool: whether a process group is initialized now.

    Raises:
        ConfigError: on every process alike: fewer GPUs on the node than processes (with
            ``auto`` or ``cuda``), ``cuda:N`` with several processes per node, or a device
            this machine lacks.
    """
    global _control
    if not launched() or not dist.is_available():
        return False
    if dist.is_initialized():
        return True
    cuda = resolve_device(device).type == "cuda"
    backend = "nccl" if cuda else "gloo"
    timeout = datetime.timedelta(seconds=timeout_seconds(backend))
    if cuda:  # one process per GPU (untested here: no GPU)
        torch.cuda.set_device(resolve_device(device))
        if os.environ.get("TORCH_NCCL_ASYNC_ERROR_HANDLING") not in ("0", "2", "3"):
            os.environ["TORCH_NCCL_ASYNC_ERROR_HANDLING"] = NCCL_ERROR_HANDLING
    # Before the group exists: torch.distributed.nn's functions take ``group=group.WORLD`` as
    # a default argument, bound when the module is first imported, and PyTorch imports it
    # lazily (torch._dynamo, at the first optimizer's creation). Bound to the live group, those
    # defaults keep it alive after destroy_process_group: its gloo worker threads are never
    # joined, and one that drops a finished collective's tensors once the interpreter is
    # finalizing aborts the process ("terminate called without an active exception";
    # pytorch/pytorch#38228). Imported now, they hold None and the group dies in shutdown().
    importlib.import_module("torch.distributed.nn")
    dist.init_process_group(backend, timeout=timeout)
    _control = dist.new_group(backend="gloo", timeout=timeout) if cuda else None
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stopped_by_launcher)
    return True


def _stopping() -> None:
    """This process is stopping because the launch is: ignore SIGTERM from now on, and abort
    an NCCL process group. When one process dies, torchrun sends SIGTERM to the others (and
    SIGKILL after a grace period); a survivor that is already reporting the lost peer must not
    be cut short before its one error line, nor hang in a communicator whose peer is gone
    (the abort ends its pending collectives, so that leaving the group returns)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _abort_nccl()


def _abort_nccl() -> None:
    """Abort the NCCL communicators of this process (``torch.distributed``'s abort of the
    process group; a no-op under gloo or without a group)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_backend() != "nccl":
        return
    abort = getattr(dist.distributed_c10d, "_abort_process_group", None)
    global _control
    with contextlib.suppress(Exception):  # aborting is best effort: the process is stopping
        if abort is not None:
            abort()  # every group of the process, the control group included
    _control = None


def _stopped_by_launcher(signum: int, frame: Any) -> None:
    """SIGTERM outside training (where it asks for a checkpoint and a stop instead): the
    launcher stops the survivors of a process that died, or the launch was stopped."""
    who = f"process {rank()} of {world_size()}"  # (before the abort leaves the group)
    _stopping()
    raise PeerLost(
        f"{who} was stopped by its launcher (SIGTERM): another "
        "process of the launch stopped, or the launch was stopped: the run folder keeps the "
        "checkpoint of the last completed epoch"
    )


def shutdown() -> None:
    """Leave the process group (if any)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _comm_device() -> torch.device:
    """Where collective buffers live: the current CUDA device under NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


@contextlib.contextmanager
def collective(what: str) -> Iterator[None]:
    """Turn the error of a collective whose peer died or timed out into
    :class:`~pyrolvm.PeerLost`."""
    try:
        yield
    except RuntimeError as exc:  # DistBackendError and gloo's errors are RuntimeErrors
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        who = f"process {rank()} of {world_size()}"  # (before the abort leaves the group)
        _stopping()
        raise PeerLost(
            f"{who} lost its peers during {what} ({first}); "
            "another process of the launch stopped (killed, out of memory, or an error it "
            "reported): the run folder keeps the checkpoint of the last completed epoch"
        ) from None


def agree(what: str) -> None:
    """Wait until every process gets here (a barrier on the host: the gloo group; a no-op
    without a process group).

    Raises:
        PeerLost: a process of the launch is gone.
    """
    if not active():
        return
    with collective(what):
        dist.barrier(group=_control)


def split(rows: int, parts: int | None = None) -> list[tuple[int, int]]:
    """The contiguous shards ``[(start, stop), ...]`` of ``rows`` rows over ``parts``
    processes (default W), as ``torch.tensor_split`` makes them: the first ``rows % parts``
    shards hold one row more."""
    parts = world_size() if parts is None else int(parts)
    q, r = divmod(int(rows), parts)
    bounds, start = [], 0
    for i in range(parts):
        stop = start + q + (i < r)
        bounds.append((start, stop))
        start = stop
    return bounds


def shard(batch: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """This process's shard of a global minibatch (a tuple of tensors with the same rows).

    Raises:
        ConfigError: fewer rows than processes (a process would get none).
    """
    rows = len(batch[0])
    if rows < world_size():
        raise ConfigError(
            f"a minibatch of {rows} rows cannot be shared out among {world_size()} processes: "
            "choose a batch size (and data size) with at least one row per process"
        )
    start, stop = split(rows)[rank()]
    return tuple(t[start:stop] for t in batch)


class SubsampleProbe(Messenger):
    """Notes whether any sample site lies in a subsampled plate (``pyro.plate(size=N,
    subsample=...)`` or ``subsample_size``), whose log-densities Pyro scales by N / B."""

    def __init__(self) -> None:
        super().__init__()
        self.found = False

    def _postprocess_message(self, msg: Any) -> None:
        if msg["type"] == "sample" and not self.found:
            self.found = any(
                f.full_size is not None and f.full_size != f.size for f in msg["cond_indep_stack"]
            )


class GradientSync:
    """The all-reduce of one SVI step: called by :func:`~pyrolvm.inference.svi_step` between
    the objective's backward pass and the optimizer's update.

    Args:
        rows (int): the rows of this process's shard.
        total_rows (int): the rows of the global minibatch.
        stop (bool): this process was asked to stop (SIGINT/SIGTERM); after the call
            ``stop`` tells whether *any* process was, so that all stop at the same step.
    """

    def __init__(self, rows: int, total_rows: int, stop: bool = False) -> None:
        self.rows, self.total_rows, self.stop = int(rows), int(total_rows), bool(stop)

    def __call__(
        self, named_params: Sequence[tuple[str, torch.Tensor]], value: Any, subsampled: bool
    ) -> torch.Tensor:
        """Sum ``weight * grad`` of every parameter (``named_params``, sorted by name, the same
        list on every process) and ``weight * loss`` over the processes, in place into each
        ``.grad``; ``weight`` is 1, or this shard's share of the rows under a subsampled
        plate. A parameter whose gradient is ``None`` on every process keeps ``None``.

        Returns:
            torch.Tensor: the global minibatch's loss, a detached 0-d float64 tensor (nats).
        """
        weight = self.rows / self.total_rows if subsampled else 1.0
        where = _comm_device()
        loss = torch.as_tensor(value, dtype=torch.float64).detach().to(where).reshape(1)
        # the control flags live on the host: under NCCL they travel through the gloo control
        # group, so that reading them back needs no copy from the GPU (no host synchronisation
        # in the step); under gloo they share one buffer with the loss
        has = [p.grad is not None for _, p in named_params]
        flags = torch.tensor(
            [float(self.stop), *map(float, has)], dtype=torch.float64, device="cpu"
        )
        groups: dict[tuple, list[torch.Tensor]] = {}
        for _, p in named_params:
            groups.setdefault((p.dtype, p.device), []).append(p)
        flats = []
        for params in groups.values():
            flat = torch.cat(
                [(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params]
            ).to(where)
            flats.append(flat * weight if weight != 1.0 else flat)
        on_host = where.type == "cpu"
        scalars = torch.cat([loss * weight, flags]) if on_host else loss * weight
        if not on_host and _control is None:  # an NCCL group not made by init(): by NCCL
            flags = flags.to(where)
        with collective("a training step"):
            works = [dist.all_reduce(t, async_op=True) for t in (scalars, *flats)]
            if not on_host:
                works.append(dist.all_reduce(flags, group=_control, async_op=True))
            for work in works:
                assert work is not None
                work.wait()  # NCCL: the stream waits, not the host; gloo: the host
        if on_host:
            flags = scalars[1:]
        self.stop = bool(flags[0] > 0)
        any_grad = (flags[1:] > 0).tolist()
        present = {id(p): g for (_, p), g in zip(named_params, any_grad, strict=True)}
        for params, flat in zip(groups.values(), flats, strict=True):
            offset = 0
            for p in params:
                n = p.numel()
                if present[id(p)]:
                    p.grad = flat[offset : offset + n].view_as(p).to(p.device)
                offset += n
        return scalars[0]  # (under NCCL on the GPU: read when the losses are shown)


def broadcast_object(obj: Any, what: str = "setting up") -> Any:
    """Rank 0's ``obj``, on every process (``obj`` itself without a process group)."""
    if not active():
        return obj
    box = [obj]
    with collective(what):
        dist.broadcast_object_list(box, src=0, device=_comm_device())
    return box[0]


def gather_objects(obj: Any, what: str = "a checkpoint") -> list[Any]:
    """Every process's ``obj``, in rank order, on every process (``[obj]`` alone)."""
    if not active():
        return [obj]
    out: list[Any] = [None] * world_size()
    with collective(what):
        dist.all_gather_object(out, obj)
    return out


def shared_seeds(count: int = 1) -> list[int]:
    """``count`` seeds in ``[0, 2**62)`` drawn from rank 0's global torch RNG (one draw of
    ``count`` integers, as a single process makes it) and sent to every process."""
    seeds = torch.randint(0, 2**62, (int(count),), device="cpu").tolist()
    return broadcast_object(seeds, "drawing the shared seeds")


def mix_seed(*keys: int) -> int:
    """A seed in ``[0, 2**63)`` mixed from integer keys by numpy's ``SeedSequence`` (so that
    nearby keys give unrelated streams)."""
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


__all__ = [
    "DEFAULT_TIMEOUT",
    "DEFAULT_NCCL_TIMEOUT",
    "GradientSync",
    "NCCL_ERROR_HANDLING",
    "SubsampleProbe",
    "active",
    "agree",
    "broadcast_object",
    "collective",
    "gather_objects",
    "init",
    "is_main",
    "launched",
    "mix_seed",
    "rank",
    "shard",
    "shared_seeds",
    "shutdown",
    "split",
    "timeout_seconds",
    "world_size",
]
