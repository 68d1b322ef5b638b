"""The training loop: stochastic variational inference over minibatches held in memory.

:func:`train` orchestrates three pieces: the training state (``_TrainingState``: the position,
the random streams, the curves and the losses not read yet, to and from a checkpoint), the
step (``_Step``: each objective's :class:`~pyrolvm.inference.compiled.CompiledStep` on this
process's shard, the first step's checks, the stop requests) and the epoch (``_run_epoch``
and ``_end_epoch``: the minibatches in the epoch's order, the progress bar, the callbacks and
the checkpoint)."""

import contextlib
import functools
import math
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import pyro
import pyro.optim
import torch
from pyro.infer import ELBO
from pyro.infer.util import is_validation_enabled
from pyro.optim import PyroOptim
from tqdm.auto import tqdm

from ..errors import ConfigError, DataError, Interrupted, TrainingDiverged
from . import compiled, distributed
from .batches import Data, as_tuple
from .bounds import bound_name
from .objectives import make_elbo
from .optim import Adam
from .pairs import check_training_pair, pair_check_errors
from .state import load_param_state, param_state, rng_state, set_rng_state


def make_optim(
    lr: float = 1e-3,
    betas: Sequence[float] = (0.9, 0.999),
    eps: float = 1e-8,
    *,
    weight_decay: float = 0.0,
    clip_norm: float | None = None,
    lrd: float = 1.0,
    lr_lambda: Callable[[int], float] | None = None,
) -> Adam:
    """Adam (Kingma & Ba 2015) with the given learning rate, betas and eps: one
    ``torch.optim.Adam`` over every parameter (:class:`~pyrolvm.inference.optim.Adam`), with
    ``ClippedAdam``'s ``clip_norm`` and ``lrd`` and an epoch schedule ``lr_lambda`` if given.

    Raises:
        ConfigError: a non-positive learning rate (or another invalid option, see
            :class:`~pyrolvm.inference.optim.Adam`).
    """
    return Adam(lr, betas, eps, weight_decay, clip_norm, lrd, lr_lambda)


def svi_step(
    model: Callable,
    guide: Callable,
    loss: ELBO,
    optim: PyroOptim,
    *args: Any,
    sync: distributed.GradientSync | None = None,
) -> Any:
    """One step of ``pyro.infer.SVI``: the objective's ``loss_and_grads`` under a trace of the
    ``param`` sites it touches, then ``optim`` on those parameters and their gradients cleared.

    Returns the loss like ``SVI.step`` (nats), except that an objective with
    ``loss_tensor_and_grads`` (every :class:`~pyrolvm.inference.MultiSampleELBO`) gives it as
    a 0-d tensor on the data's device: the step then needs no host synchronisation (on a
    GPU the next step is queued while this one runs) and the caller reads the value when it
    prints it.

    With ``sync`` (a :class:`~pyrolvm.inference.distributed.GradientSync`, data-parallel
    training under ``torchrun``) ``args`` is this process's shard of the minibatch; the
    gradients and the loss are summed over the processes between the backward pass and the
    update, and the loss returned is the whole minibatch's.

    This is the eager step; :class:`~pyrolvm.inference.compiled.CompiledStep` is the same
    step compiled (what :func:`train` runs)."""
    value, named, subsampled = compiled.loss_and_grads(
        model, guide, loss, args, probe=sync is not None
    )
    return compiled.update(optim, named, value, sync, subsampled)


# -- the training state -----------------------------------------------------------------------


def _as_floats(values: Sequence[Any]) -> list[float]:
    """``[float(v) for v in values]`` with one transfer per device instead of one per value:
    the 0-d tensors (the steps' losses, on the data's device) are stacked and read together;
    Python numbers (Pyro's own ELBOs return floats) pass through. Exact: float32 and float64
    values become the same Python floats as ``float(v)`` gives."""
    out: list[Any] = list(values)
    by_device: dict[torch.device, list[int]] = {}
    for i, v in enumerate(out):
        if isinstance(v, torch.Tensor):
            by_device.setdefault(v.device, []).append(i)
        else:
            out[i] = float(v)
    for where in by_device.values():
        stacked = torch.stack([out[i].detach().reshape(()).to(torch.float64) for i in where])
        for i, x in zip(where, stacked.tolist(), strict=True):
            out[i] = x
    return out


#: The position's entries in a checkpoint, in its order.
_POSITION = ("first_epoch", "epoch", "step", "perm", "total", "total_all", "seen")


def _fresh_streams() -> tuple[torch.Generator, int]:
    """The data-order stream (a CPU generator seeded by one draw of rank 0's global RNG, the
    same on every process) and the noise seed, from which rank r > 0 seeds its global RNG
    (its noise stream)."""
    order_seed, noise_seed = distributed.shared_seeds(2)
    order_rng = torch.Generator(device="cpu")
    order_rng.manual_seed(order_seed)
    me = distributed.rank()
    if me > 0:
        torch.manual_seed(distributed.mix_seed(noise_seed, me))
    return order_rng, noise_seed


class _TrainingState:
    """Where a run stands, and what its checkpoints carry besides the parameters and the
    optimizer: the position (``first_epoch``, the epochs before the call's first; ``epoch``;
    ``step``, the steps of it taken; ``perm``, its data order; the running sums ``total`` of
    the main objective's losses, ``total_all`` of every objective's, and ``seen`` of the rows),
    the random streams (``order_rng``, the data order every process shares; each process's
    global RNG, its noise, ``noise_seed`` seeding a new process's), the curves ``history``,
    and the steps' losses not read yet, ``pending``: ``(epoch, step, main, main + extra,
    rows)``, read by :meth:`read_losses` in one transfer.

    :meth:`start` begins a run, :meth:`resume` continues one from a :meth:`checkpoint` dict,
    whose layout is that of every earlier version (old checkpoints resume)."""

    def __init__(self, history, steps_per_epoch, device, streams, extra, position=None):
        self.first_epoch: int | None = None
        self.epoch: int | None = None
        self.step = 0
        self.perm: torch.Tensor | None = None
        self.total, self.total_all, self.seen = 0.0, 0.0, 0
        for key, value in (position or {}).items():  # a resumed run's
            setattr(self, key, value)
        self.resumed_epoch = self.epoch  # the epoch a resumed run continues (None: fresh)
        self.history: dict[str, list] = history
        self.steps_per_epoch, self.device = steps_per_epoch, device
        self.order_rng, self.noise_seed = streams
        self.world = distributed.world_size()
        self.pending: list[tuple[int, int, Any, Any, int]] = []
        self.step_callback: Callable[[list[int], list[float]], None] | None = None
        for key in ("train_elbo", "seconds") + (("train_loss",) if extra else ()):
            history.setdefault(key, [])
        # which bound "train_elbo" holds, per epoch (None for epochs of an older checkpoint)
        history.setdefault("bound_name", [None] * len(history["train_elbo"]))
        if self.first_epoch is None:
            self.first_epoch = len(history["train_elbo"])

    @classmethod
    def start(cls, history, steps_per_epoch, device, extra) -> "_TrainingState":
        """A fresh run, continuing the curves ``history`` (a new dict for ``None``)."""
        history = history if history is not None else {}
        return cls(history, steps_per_epoch, device, _fresh_streams(), extra)

    @classmethod
    def resume(cls, saved, optim, steps_per_epoch, device, extra) -> "_TrainingState":
        """The state of the :meth:`checkpoint` ``saved``, its parameters copied into the param
        store, its moments into ``optim`` and its RNG states into the generators (this
        process's, or a fresh stream for a process the interrupted run did not have).

        Raises:
            ConfigError: a checkpoint of another data or batch size, model or optimizer.
        """
        if saved.get("steps_per_epoch") != steps_per_epoch:
            raise ConfigError(
                "the checkpoint comes from a run with another data size or batch "
                "size: it cannot be resumed with these settings"
            )
        load_param_state(saved["params"])
        optim.set_state(saved["optim"])
        history = {k: list(v) for k, v in saved["history"].items()}
        position = {key: saved[key] for key in _POSITION}
        set_rng_state(saved["rng"], device)
        streams, me = saved.get("streams"), distributed.rank()
        if streams is None:  # a checkpoint older than these streams
            return cls(history, steps_per_epoch, device, _fresh_streams(), extra, position)
        order_rng = torch.Generator(device="cpu")
        order_rng.set_state(streams["order"])
        noise_seed, saved_ranks = int(streams["noise_seed"]), streams["ranks"]
        if 0 < me < len(saved_ranks) + 1:
            set_rng_state(saved_ranks[me - 1], device)
        elif me > 0:  # a process the interrupted launch did not have: a fresh stream
            torch.manual_seed(distributed.mix_seed(noise_seed, me, len(saved_ranks) + 1))
        return cls(history, steps_per_epoch, device, (order_rng, noise_seed), extra, position)

    def checkpoint(self, optim) -> dict[str, Any]:
        """The state as ``train`` gives it to ``checkpoint``, with the param store's values,
        ``optim``'s state and every process's RNG states (every process takes part), after
        reading the pending losses (a signal may come before they are read)."""
        self.read_losses()
        rngs = distributed.gather_objects(rng_state(self.device))  # every process's noise
        return {
            **{key: getattr(self, key) for key in _POSITION},
            "steps_per_epoch": self.steps_per_epoch,
            "history": {k: list(v) for k, v in self.history.items()},
            "params": param_state(),
            "optim": optim.get_state(),
            "rng": rngs[0],
            "streams": {
                "order": self.order_rng.get_state(),
                "noise_seed": self.noise_seed,
                "ranks": rngs[1:],
                "world_size": self.world,
            },
        }

    def save(self, checkpoint, optim) -> None:
        """Call ``checkpoint`` (if any) with :meth:`checkpoint` on rank 0 alone."""
        if checkpoint is not None:
            taken = self.checkpoint(optim)  # (every process gathers)
            if distributed.rank() == 0:
                checkpoint(taken)

    def begin_epoch(self, epoch: int, n: int, shuffle: bool) -> torch.Tensor | None:
        """The data order of ``epoch`` (on the CPU, the same on every device): a fresh draw
        from the data-order stream (``0 .. n - 1`` without ``shuffle``), or the interrupted
        epoch's, which a resumed run continues; ``None`` for an epoch that ended before the
        checkpoint was taken (callbacks and checkpoint included)."""
        resumed = self.resumed_epoch
        if resumed is not None and epoch <= resumed:
            return self.perm if epoch == resumed and self.step < self.steps_per_epoch else None
        perm = (
            torch.randperm(n, generator=self.order_rng, device="cpu")
            if shuffle
            else torch.arange(n, device="cpu")
        )
        self.epoch, self.step, self.perm = epoch, 0, perm
        self.total, self.total_all, self.seen = 0.0, 0.0, 0
        return perm

    def on_order_stream(self, fn: Callable, *args: Any) -> Any:
        """``fn(*args)`` with its draws from torch's global RNG taken from the order stream."""
        saved = torch.get_rng_state()
        torch.set_rng_state(self.order_rng.get_state())
        try:
            return fn(*args)
        finally:
            self.order_rng.set_state(torch.get_rng_state())
            torch.set_rng_state(saved)

    def read_losses(self) -> None:
        """Add the pending losses to the running sums, read in one transfer.

        Raises:
            TrainingDiverged: one of them is NaN or infinite.
        """
        read = _as_floats([v for entry in self.pending for v in entry[2:4]])  # one transfer
        for (epoch, step, _, _, rows), main, value in zip(
            self.pending, read[0::2], read[1::2], strict=True
        ):
            if not math.isfinite(value):
                self.pending.clear()
                if self.world > 1:  # (every process reads the same sum) unless a peer died:
                    distributed.agree("a training step")  # under NCCL an aborted sum is garbage
                raise TrainingDiverged(
                    f"the loss became {value} at epoch {epoch}, step {step + 1}: lower "
                    "the learning rate (--lr), check the data for extreme values, or "
                    "use more particles; the checkpoint of the last completed epoch is "
                    "kept",
                    epoch=epoch,
                    step=(epoch - 1) * self.steps_per_epoch + step + 1,
                )
            self.total += main
            self.total_all += value
            self.seen += rows
        if self.step_callback is not None and self.pending and distributed.rank() == 0:
            steps = [(e - 1) * self.steps_per_epoch + s + 1 for e, s, *_ in self.pending]
            bounds = [-m / entry[4] for entry, m in zip(self.pending, read[0::2], strict=True)]
            self.step_callback(steps, bounds)
        self.pending.clear()

    def end_epoch(self, loss, extra: bool, seconds: float) -> None:
        """Append the epoch's curves: ``train_elbo`` (minus the mean per-datapoint loss),
        ``train_loss`` (with extra objectives: the mean per step of every loss), ``seconds``
        and ``bound_name``."""
        self.history["train_elbo"].append(-self.total / self.seen)
        if extra:
            self.history["train_loss"].append(self.total_all / self.steps_per_epoch)
        self.history["seconds"].append(seconds)
        self.history["bound_name"].append(bound_name(loss))


# -- the step ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _stop_requests(enabled):
    """While active, SIGINT and SIGTERM set ``flag["stop"]`` instead of stopping the process
    (a second SIGINT stops at once); outside the main thread nothing is installed."""
    flag: dict[str, str | None] = {"stop": None}
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag["stop"] is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag["stop"] = signal.Signals(signum).name

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            if signal.getsignal(s) is handler:  # (a process that lost its peers ignores SIGTERM)
                signal.signal(s, h)


def _compiled_steps(objectives, mode, validate, check_every_step):
    """One :class:`~pyrolvm.inference.compiled.CompiledStep` per ``(model, guide, loss)`` (the
    eager step with ``check_every_step``, which validates every step)."""
    mode = "off" if check_every_step else mode
    return [compiled.CompiledStep(m, g, lo, mode, validate) for m, g, lo in objectives]


class _Step:
    """One training step: the main objective on the minibatch, then each extra objective on
    the step's extra batch (``extra_batch`` given; skipped where it gave ``None``) or on the
    minibatch, each by its :class:`~pyrolvm.inference.compiled.CompiledStep` with the same
    optimizer. Under ``torchrun`` each process takes its shard of each batch (before the
    ``transform``, which draws from its noise stream) and the steps sum the gradients, the
    losses and the stop requests over the processes. The first step checks the pair
    (:func:`~pyrolvm.inference.pairs.check_training_pair`, and Pyro's checks as
    ``ConfigError``) and runs with Pyro's validation (as every step does with
    ``check_every_step``)."""

    def __init__(self, objectives, optim, transform, own_extra, compile, check_every_step, rows):
        self.objectives, self.optim, self.transform = objectives, optim, transform
        self.own_extra = own_extra  # the extra objectives take extra_batch's batches
        self.check_every_step, self.validate = check_every_step, is_validation_enabled()
        self.steps = _compiled_steps(objectives, compile, self.validate, check_every_step)
        self.main = self.steps[0]  # its compile time and mode show on the progress bar
        self.rows = rows  # (N, batch_size, shuffle), for the first step's checks
        self.world = distributed.world_size()
        self.first = True
        #: the batch plate's size N where the loss per datapoint is loss / N (see train)
        self.per_row_total: int | None = None

    def __call__(self, batch, more, stop) -> tuple[Any, Any, str | None]:
        """Step on the global minibatch ``batch`` and extra batch ``more`` (``None``: none)
        and return the main objective's loss (per the minibatch's rows), the sum of every
        objective's, and why the run halts here (a stop request, to this or another process,
        read after the step; else ``None``)."""
        rows, more_rows = len(batch[0]), len(more[0]) if more is not None else 0
        batch, more = self._inputs(batch, more)
        if not self.own_extra:
            more, more_rows = batch, rows
        if self.first:
            self._check_pair(batch)
        with pyro.validation_enabled(self.validate and (self.check_every_step or self.first)):
            asked = stop["stop"] is not None
            main, sync = self._run(0, batch, rows, asked)
            value = main
            if more is not None:
                for i in range(1, len(self.steps)):
                    value = value + self._run(i, more, more_rows, False)[0]
        self.first = False
        halted = stop["stop"]  # every process stops at the step where any was asked
        if sync is not None:
            halted = (halted or "a stop request to another process") if sync.stop else None
        if self.per_row_total is not None:  # the loss carries the plate's scale N / B
            main = main * (rows / self.per_row_total)
        return main, value, halted

    def _inputs(self, batch, more):
        """This process's shards of the batches, each first tensor through the transform."""
        if self.world > 1:
            batch = distributed.shard(batch)
            more = distributed.shard(more) if more is not None else None
        if self.transform is not None:  # the noise stream (after the order's draws)
            batch = (self.transform(batch[0]),) + batch[1:]
            if more is not None:
                more = (self.transform(more[0]),) + more[1:]
        return batch, more

    def _check_pair(self, batch) -> None:
        """The first step's checks (and the per-datapoint accounting, see ``train``)."""
        model, guide, loss = self.objectives[0]
        n, batch_size, shuffle = self.rows
        self.per_row_total = check_training_pair(
            model, guide, *batch, loss=loss, num_rows=n, batch_size=batch_size, shuffle=shuffle
        )

    def _run(self, i, args, rows, asked):
        """Objective ``i``'s step on ``args`` (of a global batch of ``rows`` rows); in the
        first step, Pyro's checks raise ``ConfigError`` (:func:`pair_check_errors`)."""
        sync = distributed.GradientSync(len(args[0]), rows, asked) if self.world > 1 else None
        if not self.first:
            return self.steps[i](self.optim, *args, sync=sync), sync
        model, guide, _ = self.objectives[i]
        with pair_check_errors(model, guide, *args):
            return self.steps[i](self.optim, *args, sync=sync), sync


# -- the epoch --------------------------------------------------------------------------------


def _set_epoch(objectives, epoch: int) -> None:
    """Schedules (:class:`BetaELBO`'s anneal): ``set_epoch(epoch)`` of each objective."""
    for _, _, objective in objectives:
        set_epoch = getattr(objective, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(epoch)


def _run_epoch(epoch, order, state, step, tensors, batch_size, extra_batch, bar, stop, save):
    """The remaining steps of ``epoch``, in the data order ``order``: each takes the next
    ``batch_size`` rows of ``tensors`` and the step's extra batch (drawn on the order stream);
    the running ELBO on ``bar`` every 10 steps. Returns why the run halts after the epoch's
    last step (see :class:`_Step`), or ``None``.

    Raises:
        Interrupted: a stop request before the last step; ``save()`` was called first.
        TrainingDiverged: a NaN or infinite loss (read with the running ELBO).
    """
    order = order.to(state.device)  # the data is indexed where it lies
    last, halted = state.steps_per_epoch - 1, None
    for s in range(state.step, state.steps_per_epoch):
        idx = order[s * batch_size : (s + 1) * batch_size]
        batch = tuple(d[idx] for d in tensors)
        more = state.on_order_stream(extra_batch, epoch, s) if extra_batch is not None else None
        main, value, halted = step(batch, more, stop)
        state.pending.append((epoch, s, main, value, len(idx)))
        state.step = s + 1
        bar.update(1)
        if s % 10 == 0 or s == last or halted or step.main.fresh:
            state.read_losses()
            bar.set_postfix_str(
                f"epoch {epoch} elbo {-state.total / state.seen:.2f}" + step.main.note(),
                refresh=False,
            )
        if halted and s < last:
            save()
            raise Interrupted(
                f"{halted} at epoch {epoch}, step {s + 1} of {state.steps_per_epoch}",
                epoch=epoch,
                step=s + 1,
            )
    return halted


def _end_epoch(epoch, state, loss, optim, callbacks, extra, seconds, save) -> None:
    """The epoch's curves, the learning-rate schedule's step, the callbacks (their metrics
    appended to the history), then ``save()``."""
    state.end_epoch(loss, extra, seconds)
    if isinstance(optim, (pyro.optim.PyroLRScheduler, Adam)):
        optim.step()  # the epoch's learning-rate schedule
    for cb in callbacks:
        for key, value in (cb(epoch, state.history) or {}).items():
            state.history.setdefault(key, []).append(value)
    state.perm = None
    save()


# -- train ------------------------------------------------------------------------------------


def _checked_tensors(data, batch_size, epochs, world) -> tuple[torch.Tensor, ...]:
    """``data`` as a tuple of tensors, checked with ``train``'s settings.

    Raises:
        ConfigError, DataError: see :func:`train`.
    """
    tensors = as_tuple(data)
    n = len(tensors[0])
    if n == 0:
        raise ConfigError("no training data")
    if int(batch_size) < 1 or int(epochs) < 0:
        raise ConfigError(f"batch_size must be >= 1 and epochs >= 0, got {batch_size}, {epochs}")
    for i, t in enumerate(tensors):
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise DataError(f"the training data (tensor {i}) holds NaN or infinite values")
    batch_size = int(batch_size)
    if world > 1 and min(batch_size, n % batch_size or batch_size, n) < world:
        raise ConfigError(
            f"{world} processes need at least one row each of every minibatch, but the batch "
            f"size is {batch_size} and the last minibatch of the {n} datapoints holds "
            f"{n % batch_size or batch_size}: choose a batch size whose minibatches have at "
            f"least {world} rows, or fewer processes"
        )
    return tensors


def _as_callbacks(callback) -> list[Callable]:
    """``train``'s ``callback`` as a list."""
    if callback is None:
        return []
    return list(callback) if isinstance(callback, (list, tuple)) else [cast(Callable, callback)]


def _resume_batches(tensors, batch_size, transform, extra_batch, resume_from, steps_per_epoch):
    """A first minibatch and an extra batch (the first that the resumed epoch's steps draw,
    else the minibatch) for :func:`_warm_up` before a resume, which needs every parameter in
    the param store. Their draws do not matter: the checkpoint's RNG states come after."""
    first = tensors[0][:batch_size]
    first = transform(first) if transform is not None else first
    batch = (first,) + tuple(t[:batch_size] for t in tensors[1:])
    more = batch
    if extra_batch is not None:
        at = resume_from.get("epoch") or 1
        found = (extra_batch(at, s) for s in range(steps_per_epoch))
        more = next((b for b in found if b is not None), batch)
        if transform is not None and more is not batch:
            more = (transform(more[0]),) + more[1:]
    return batch, more


def _warm_up(objectives, batches):
    """Evaluate each objective once without gradients, so that every parameter exists in the
    param store and every ELBO has guessed its plate nesting, as after a first step."""
    with torch.no_grad():
        for (model, guide, loss), batch in zip(objectives, batches, strict=True):
            loss.loss(model, guide, *batch)


def _progress_bar(state, epochs, progress, step) -> tqdm:
    """The bar over the call's steps (those before a resumed position counted done), shown by
    rank 0 on a terminal; a new shape's compile shows on it while it runs."""
    done = 0
    if state.resumed_epoch is not None:
        done = (state.resumed_epoch - state.first_epoch - 1) * state.steps_per_epoch + state.step
    bar = tqdm(
        total=epochs * state.steps_per_epoch,
        initial=done,
        # tqdm: None = quiet when not a terminal; rank 0 alone shows it
        disable=None if progress and distributed.rank() == 0 else True,
        unit="step",
        dynamic_ncols=True,
    )
    for compiled_step in step.steps:
        compiled_step.announce = bar.set_postfix_str
    return bar


def train(
    model: Callable,
    guide: Callable,
    data: Data,
    loss: ELBO | None = None,
    optim: PyroOptim | None = None,
    *,
    epochs: int = 1,
    batch_size: int = 100,
    shuffle: bool = True,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    callback: Callable | Sequence[Callable] | None = None,
    progress: bool = True,
    history: dict[str, list] | None = None,
    check_every_step: bool = False,
    extra_objectives: Sequence[tuple[Callable, Callable, ELBO]] = (),
    extra_batch: Callable[[int, int], tuple[torch.Tensor, ...] | None] | None = None,
    checkpoint: Callable[[dict[str, Any]], None] | None = None,
    resume_from: dict[str, Any] | None = None,
    handle_signals: bool = True,
    compile: str = "auto",
    step_callback: Callable[[list[int], list[float]], None] | None = None,
) -> dict[str, list]:
    """Fit ``model``/``guide`` with ``pyro.infer.SVI`` on minibatches of ``data``.

    Each epoch visits the N datapoints once in a fresh random order (drawn from a data-order
    stream seeded by one draw of ``torch``'s global RNG at the start, itself seeded by
    ``pyro.set_rng_seed``), or in their order with ``shuffle=False``, in minibatches of
    ``batch_size``; ``transform`` is applied to each minibatch's first tensor (e.g.
    ``torch.bernoulli`` for dynamic binarization). Model and guide are called as
    ``model(*batch)``. A learning-rate scheduler (``pyro.optim.PyroLRScheduler``, e.g.
    ``pyro.optim.LambdaLR``) given as ``optim`` is stepped once at the end of every epoch.

    Models that need several objectives per step (M2: the unlabelled and labelled bounds and
    a classification loss) give the further ones as ``extra_objectives``: each
    ``(model, guide, loss)`` takes one SVI step with the same optimizer after the main one,
    called with ``extra_batch(epoch, step)`` (drawn once per step, e.g. a labelled minibatch;
    ``None`` skips the extra objectives in that step, so they can run on a schedule of their
    own, as Pyro's ss-vae example interleaves its labelled minibatches) or, without it, with
    the main batch.

    **Checkpoints and resume.** ``checkpoint(state)`` is called at the end of every epoch
    (after the callbacks) and when the run is interrupted; ``state`` is a dict of tensors and
    plain values (loadable with ``torch.load(weights_only=True)``): the position (``epoch``,
    ``step`` within it, the epoch's data order ``perm`` and running sums), ``history``, the
    param store's values, the optimizer's state and every RNG state. A new call with the same
    arguments and ``resume_from=state`` continues from there and ends with parameters and
    curves bitwise equal to the uninterrupted call's (on CPU; the ``seconds`` curve excepted).

    **The pair, checked on the first step** (:func:`~pyrolvm.inference.check_pair`): the model's
    latent sites and the guide's sample sites match by name and shape (what Pyro's
    validation only warns about is a :class:`~pyrolvm.ConfigError`, naming both sets of
    sites); no parameter of the pair's networks is stale in Pyro's param store (a pair built
    earlier in the process without ``pyro.clear_param_store()``); a guide with parameters
    per datapoint (Pyro's autoguides over ``model(x)``, e.g. ``AutoDiagonalNormal``) gets all
    N rows in their order (``batch_size >= N``, ``shuffle=False``).

    **Schedules.** An objective with a ``set_epoch(epoch)`` method (:class:`BetaELBO` with
    ``anneal``) has it called with the 1-based epoch before the epoch's first step, and before
    the remaining steps of a resumed epoch: a schedule is a function of the epoch, which the
    checkpoint holds, so it needs no state of its own and a resumed run stays bitwise equal.

    **Processes.** Under ``torchrun`` (a ``torch.distributed`` process group of W > 1
    processes, :mod:`pyrolvm.inference.distributed`) every process runs this same call: each
    step's minibatch (the one a single process would take: the data order and the extra
    batches come from the shared data-order stream) is split into W contiguous shards, each
    process takes one, and the gradients and losses are summed over the processes before the
    update, so that all hold the same parameters and curves. Rank 0 keeps the global RNG
    stream a single process would have (its noise: guide draws, ``transform``); rank r > 0
    draws from a stream of its own, so the noise of a datapoint depends on the number of
    processes (the data order, the updates and the curves' meaning do not). Only rank 0 calls
    ``checkpoint`` and shows the progress bar; the state holds every process's RNG, so a
    resume with the same number of processes is bitwise equal to the uninterrupted run, and
    one with another number continues exactly in data order, parameters and optimizer, with
    fresh streams for the new processes. The callbacks run on every process.

    **Compiled steps.** With ``compile`` other than ``"off"`` each objective's step is traced
    once per key (the batch's shapes, the param store, the objective's settings) to a graph of
    tensor operations and replayed (``"graph"``, bitwise equal to the eager step) or compiled
    by inductor (``"inductor"``; CUDA graphs on a GPU); the first step of every key runs
    eagerly with Pyro's validation on. A pair whose step cannot be traced runs eagerly, with
    one logged line saying why (see :mod:`pyrolvm.inference.compiled`). The model and guide
    are then called only when a key is new: Python side effects of theirs do not recur.

    **Interruption.** SIGINT (Ctrl-C) or SIGTERM during training finishes the current step,
    calls ``checkpoint`` with the mid-epoch state (or, in an epoch's last step, finishes the
    epoch and its checkpoint) and raises :class:`~pyrolvm.Interrupted`; a second SIGINT stops
    at once.

    Args:
        model (callable): the Pyro model, following Pyro's rules (one batch plate).
        guide (callable): its guide, with the model's signature.
        data (torch.Tensor or tuple of torch.Tensor): N datapoints along dim 0.
        loss (pyro.infer.ELBO or None): the objective; default ``Trace_ELBO()``.
        optim (pyro.optim.PyroOptim or None): default :func:`make_optim` ().
        epochs (int): passes over the data.
        batch_size (int): datapoints per step.
        shuffle (bool): visit the rows in a fresh random order each epoch; ``False`` keeps
            their order (a guide with parameters per datapoint needs it).
        transform (callable or None): maps a minibatch tensor to the tensor the model sees.
        callback (callable, list of callables, or None): ``callback(epoch, history)`` after
            each epoch (1-based); may return a dict of further per-epoch metrics, appended to
            ``history`` before the next callback runs.
        step_callback (callable or None): ``step_callback(steps, bounds)`` each time the
            steps' losses are read (every 10 steps, at an epoch's end and before a
            checkpoint; no host synchronisation of its own): the global steps read (1-based,
            counted over the epochs of ``history``) and the main objective's bound per
            datapoint at each (nats, as ``"train_elbo"``). Rank 0 alone calls it.
        progress (bool): show a progress bar with the running ELBO (on a terminal only).
        history (dict or None): curves to continue (e.g. from a checkpoint); epochs are
            numbered after them.
        check_every_step (bool): run Pyro's validation (site shapes, model/guide match,
            distribution supports) on every step. By default it runs on the first step only,
            where a static model shows any such error; later steps skip it, which halves the
            step time of small models. Has no effect when Pyro's validation is disabled.
        extra_objectives (sequence of tuple): further objectives, ``(model, guide, elbo)``
            stepped after the main one in every step.
        extra_batch (callable or None): ``extra_batch(epoch, step)`` (1-based epoch, 0-based
            step within it) returns the tuple of tensors the extra objectives are called with,
            or ``None`` to skip them in that step; called once per step, after the main batch
            is drawn, with torch's global RNG drawing from the data-order stream: it chooses
            rows (``torch.randperm``), and ``transform`` is applied to its first tensor
            afterwards, as to the main batch's, with the noise stream (so that the data order
            does not depend on the device whose generator the transform draws from).
        checkpoint (callable or None): ``checkpoint(state)``, see above.
        resume_from (dict or None): a ``state`` passed to ``checkpoint`` by an earlier call.
        handle_signals (bool): turn SIGINT/SIGTERM into a checkpoint and
            :class:`~pyrolvm.Interrupted` (main thread only).
        compile (str): ``"auto"`` (inductor where a C++ compiler or, on CUDA, Triton is
            present, else ``"graph"``; a run's ``--compile`` or ``$PYROLVM_COMPILE`` decide
            first, see :func:`~pyrolvm.inference.compiled.resolve_mode`), ``"inductor"``,
            ``"graph"`` or ``"off"`` (Pyro's eager step). ``check_every_step`` runs the eager
            step.

    Returns:
        dict: per-epoch curves: ``"train_elbo"`` (mean over the epoch of the main objective's
        own bound per datapoint, nats: ``-loss / B`` for a minibatch of B rows, ``-loss / N``
        under a plate ``pyro.plate(name, N, subsample=idx)``, whose scale N / B Pyro puts in
        the loss; the ELBO only for an objective whose bound is the ELBO), ``"bound_name"``
        (the name of that bound, :func:`~pyrolvm.inference.bound_name`: ``"ELBO"``,
        ``"IWAE-20 bound"``, ``"β-ELBO (β=0.5)"``, ...), ``"seconds"`` (wall time of each
        epoch), with extra objectives ``"train_loss"`` (mean per step of all objectives'
        losses summed), and whatever ``callback`` returned.

    Raises:
        ConfigError: no data, ``batch_size < 1`` or ``epochs < 0``; a ``resume_from`` state
            of another model or schedule (or of an optimizer this one cannot read); under
            ``torchrun``, a minibatch with fewer rows than processes; an unknown ``compile``;
            a model and guide that do not match, stale parameters, a guide with parameters per
            datapoint on shuffled rows or minibatches, or one drawing all datapoints jointly
            under a multi-sample objective (see above).
        PeerLost: under ``torchrun``, another process stopped.
        DataError: ``data`` is not a tensor or tuple of tensors with the same number of rows,
            or holds NaN or infinite values.
        Interrupted: SIGINT or SIGTERM; ``checkpoint`` was called first.
        TrainingDiverged: the loss became NaN or infinite; ``exc.history`` holds the curves of
            the epochs completed before it. The parameters may already be non-finite: the
            checkpoint of the last completed epoch is the last good state.
    """
    loss = loss if loss is not None else make_elbo("trace")
    optim = optim if optim is not None else make_optim()
    tensors = _checked_tensors(data, batch_size, epochs, distributed.world_size())
    n, device, batch_size, epochs = len(tensors[0]), tensors[0].device, int(batch_size), int(epochs)
    callbacks, extra = _as_callbacks(callback), bool(extra_objectives)
    objectives = [(model, guide, loss), *extra_objectives]
    steps_per_epoch = math.ceil(n / batch_size)
    if resume_from is None:
        state = _TrainingState.start(history, steps_per_epoch, device, extra)
    else:
        first = _resume_batches(
            tensors, batch_size, transform, extra_batch, resume_from, steps_per_epoch
        )
        _warm_up(objectives, [first[0]] + [first[1]] * len(extra_objectives))
        state = _TrainingState.resume(resume_from, optim, steps_per_epoch, device, extra)
    state.step_callback = step_callback
    step = _Step(
        objectives,
        optim,
        transform,
        extra_batch is not None,
        compile,
        check_every_step,
        (n, batch_size, shuffle),
    )
    bar = _progress_bar(state, epochs, progress, step)
    save = functools.partial(state.save, checkpoint, optim)
    try:
        with _stop_requests(handle_signals) as stop:
            start = cast(int, state.first_epoch)
            for epoch in range(start + 1, start + epochs + 1):
                t0 = time.perf_counter()
                order = state.begin_epoch(epoch, n, shuffle)
                if order is None:
                    continue
                _set_epoch(objectives, epoch)
                halted = _run_epoch(
                    epoch, order, state, step, tensors, batch_size, extra_batch, bar, stop, save
                )
                seconds = time.perf_counter() - t0
                _end_epoch(epoch, state, loss, optim, callbacks, extra, seconds, save)
                if stop["stop"] if state.world == 1 else halted:
                    raise Interrupted(
                        f"{halted or stop['stop']} at the end of epoch {epoch}",
                        epoch=epoch,
                        step=steps_per_epoch,
                    )
    except (TrainingDiverged, Interrupted) as exc:
        exc.history = state.history
        raise
    finally:
        bar.close()
    return state.history
