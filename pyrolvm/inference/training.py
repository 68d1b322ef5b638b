"""The training loop: stochastic variational inference over minibatches held in memory."""

import contextlib
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


def _compiled_steps(objectives, mode, validate, check_every_step):
    """One :class:`~pyrolvm.inference.compiled.CompiledStep` per ``(model, guide, loss)`` (the
    eager step with ``check_every_step``, which validates every step)."""
    mode = "off" if check_every_step else mode
    return [compiled.CompiledStep(m, g, lo, mode, validate) for m, g, lo in objectives]


@contextlib.contextmanager
def _unchecked(*args):
    yield


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


def _warm_up(objectives, batches):
    """Evaluate each objective once without gradients, so that every parameter exists in the
    param store and every ELBO has guessed its plate nesting, as after a first step."""
    with torch.no_grad():
        for (model, guide, loss), batch in zip(objectives, batches, strict=True):
            loss.loss(model, guide, *batch)


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
    tensors = as_tuple(data)
    n = len(tensors[0])
    if n == 0:
        raise ConfigError("no training data")
    if int(batch_size) < 1 or int(epochs) < 0:
        raise ConfigError(f"batch_size must be >= 1 and epochs >= 0, got {batch_size}, {epochs}")
    for i, t in enumerate(tensors):
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise DataError(f"the training data (tensor {i}) holds NaN or infinite values")
    batch_size, epochs = int(batch_size), int(epochs)
    callbacks: list[Callable] = (
        []
        if callback is None
        else list(callback)
        if isinstance(callback, (list, tuple))
        else [cast(Callable, callback)]
    )
    objectives = [(model, guide, loss), *extra_objectives]
    device = tensors[0].device
    steps_per_epoch = math.ceil(n / batch_size)
    world, me = distributed.world_size(), distributed.rank()
    if world > 1 and min(batch_size, n % batch_size or batch_size, n) < world:
        raise ConfigError(
            f"{world} processes need at least one row each of every minibatch, but the batch "
            f"size is {batch_size} and the last minibatch of the {n} datapoints holds "
            f"{n % batch_size or batch_size}: choose a batch size whose minibatches have at "
            f"least {world} rows, or fewer processes"
        )
    position: dict = {
        "first_epoch": None,
        "epoch": None,
        "step": 0,
        "perm": None,
        "total": 0.0,
        "total_all": 0.0,
        "seen": 0,
    }
    if resume_from is not None:
        first = tensors[0][:batch_size]
        first = transform(first) if transform is not None else first
        batch0 = (first,) + tuple(t[:batch_size] for t in tensors[1:])
        more0 = batch0
        if extra_batch is not None:  # a step of the resumed epoch that has extra batches
            at = resume_from.get("epoch") or 1
            found = (extra_batch(at, s) for s in range(steps_per_epoch))
            more0 = next((b for b in found if b is not None), batch0)
            if transform is not None and more0 is not batch0:
                more0 = (transform(more0[0]),) + more0[1:]
        _warm_up(objectives, [batch0] + [more0] * len(extra_objectives))
        if resume_from.get("steps_per_epoch") != steps_per_epoch:
            raise ConfigError(
                "the checkpoint comes from a run with another data size or batch "
                "size: it cannot be resumed with these settings"
            )
        load_param_state(resume_from["params"])
        optim.set_state(resume_from["optim"])
        history = {k: list(v) for k, v in resume_from["history"].items()}
        for key in position:
            position[key] = resume_from[key]
        set_rng_state(resume_from["rng"], device)
    # The random streams (see "Processes" above): the data order (and extra batches) from a
    # stream every process shares, the noise from each process's own.
    streams = resume_from.get("streams") if resume_from is not None else None
    order_rng = torch.Generator(device="cpu")
    if streams is None:  # a fresh start (or a checkpoint older than these streams)
        order_seed, noise_seed = distributed.shared_seeds(2)
        order_rng.manual_seed(order_seed)
        if me > 0:
            torch.manual_seed(distributed.mix_seed(noise_seed, me))
    else:
        order_rng.set_state(streams["order"])
        noise_seed = int(streams["noise_seed"])
        saved_ranks = streams["ranks"]
        if 0 < me < len(saved_ranks) + 1:
            set_rng_state(saved_ranks[me - 1], device)
        elif me > 0:  # a process the interrupted launch did not have: a fresh stream
            torch.manual_seed(distributed.mix_seed(noise_seed, me, len(saved_ranks) + 1))
    history = history if history is not None else {}
    for key in ("train_elbo", "seconds") + (("train_loss",) if extra_objectives else ()):
        history.setdefault(key, [])
    # which bound "train_elbo" holds, per epoch (None for epochs of an older checkpoint)
    history.setdefault("bound_name", [None] * len(history["train_elbo"]))
    if position["first_epoch"] is None:
        position["first_epoch"] = len(history["train_elbo"])
    start = position["first_epoch"]
    resume_epoch = position["epoch"]

    def state():
        read_losses()  # the running sums include every step taken (a signal may come late)
        rngs = distributed.gather_objects(rng_state(device))  # every process's noise stream
        return {
            **position,
            "steps_per_epoch": steps_per_epoch,
            "history": {k: list(v) for k, v in history.items()},
            "params": param_state(),
            "optim": optim.get_state(),
            "rng": rngs[0],
            "streams": {
                "order": order_rng.get_state(),
                "noise_seed": noise_seed,
                "ranks": rngs[1:],
                "world_size": world,
            },
        }

    def save():  # every process takes part in state(); rank 0 alone writes
        if checkpoint is not None:
            taken = state()
            if me == 0:
                checkpoint(taken)

    def on_order_stream(fn, *args):  # fn's draws from the global RNG come from order_rng
        saved = torch.get_rng_state()
        torch.set_rng_state(order_rng.get_state())
        try:
            return fn(*args)
        finally:
            order_rng.set_state(torch.get_rng_state())
            torch.set_rng_state(saved)

    # the steps' losses, read (one host synchronisation) only when the bar shows them, at the
    # end of an epoch and before a checkpoint: (epoch, step, main, main + extra, rows)
    pending: list[tuple[int, int, Any, Any, int]] = []

    def read_losses():
        read = _as_floats([v for entry in pending for v in entry[2:4]])  # one transfer
        for (epoch_, step_, _, _, rows_), main_, value_ in zip(
            pending, read[0::2], read[1::2], strict=True
        ):
            if not math.isfinite(value_):
                pending.clear()
                if world > 1:  # (every process reads the same sum) unless a peer died: under
                    distributed.agree("a training step")  # NCCL an aborted sum reads garbage
                raise TrainingDiverged(
                    f"the loss became {value_} at epoch {epoch_}, step {step_ + 1}: lower "
                    "the learning rate (--lr), check the data for extreme values, or "
                    "use more particles; the checkpoint of the last completed epoch is "
                    "kept",
                    epoch=epoch_,
                    step=(epoch_ - 1) * steps_per_epoch + step_ + 1,
                )
            position["total"] += main_
            position["total_all"] += value_
            position["seen"] += rows_
        if step_callback is not None and pending and me == 0:
            steps_read = [(e - 1) * steps_per_epoch + s + 1 for e, s, *_ in pending]
            step_callback(steps_read, [-m / e[4] for e, m in zip(pending, read[0::2], strict=True)])
        pending.clear()

    validate, first_step = is_validation_enabled(), True
    per_row_total: int | None = None
    steps = _compiled_steps(objectives, compile, validate, check_every_step)
    done = (
        0
        if resume_epoch is None
        else (resume_epoch - start - 1) * steps_per_epoch + position["step"]
    )
    bar = tqdm(
        total=epochs * steps_per_epoch,
        initial=done,
        # tqdm: None = quiet when not a terminal; rank 0 alone shows it
        disable=None if progress and me == 0 else True,
        unit="step",
        dynamic_ncols=True,
    )
    for compiled_step in steps:  # a new shape's compile shows on the bar while it runs
        compiled_step.announce = bar.set_postfix_str
    halted = None
    try:
        with _stop_requests(handle_signals) as stop:
            for epoch in range(start + 1, start + epochs + 1):
                if resume_epoch is not None and epoch < resume_epoch:
                    continue
                t0 = time.perf_counter()
                if resume_epoch == epoch and position["step"] < steps_per_epoch:
                    perm = position["perm"]  # continue this epoch where it stopped
                elif resume_epoch == epoch:
                    continue  # this epoch ended (callbacks and checkpoint included)
                else:
                    perm = (
                        torch.randperm(n, generator=order_rng, device="cpu")
                        if shuffle
                        else torch.arange(n, device="cpu")
                    )
                    position.update(
                        epoch=epoch, step=0, perm=perm, total=0.0, total_all=0.0, seen=0
                    )
                for _, _, objective in objectives:
                    set_epoch = getattr(objective, "set_epoch", None)
                    if set_epoch is not None:  # schedules (BetaELBO's anneal)
                        set_epoch(epoch)
                assert perm is not None
                # the order is drawn on the CPU (the same order on every device), the data
                # is indexed where it lies
                order = perm.to(device)
                for step in range(position["step"], steps_per_epoch):
                    idx = order[step * batch_size : (step + 1) * batch_size]
                    batch = tuple(d[idx] for d in tensors)
                    more, more_rows = batch, len(idx)
                    if extra_batch is not None:
                        more = on_order_stream(extra_batch, epoch, step)
                        more_rows = len(more[0]) if more is not None else 0
                    if world > 1:  # this process's shard of the minibatch (and of the extra)
                        batch = distributed.shard(batch)
                        more = distributed.shard(more) if more is not None else None
                    if transform is not None:  # the noise stream (after the order's draws)
                        batch = (transform(batch[0]),) + batch[1:]
                        if extra_batch is not None and more is not None:
                            more = (transform(more[0]),) + more[1:]
                    if extra_batch is None:
                        more = batch
                    checked = pair_check_errors if first_step else _unchecked
                    if first_step:  # per-datapoint accounting: see "Returns"
                        per_row_total = check_training_pair(
                            model,
                            guide,
                            *batch,
                            loss=loss,
                            num_rows=n,
                            batch_size=batch_size,
                            shuffle=shuffle,
                        )
                    with pyro.validation_enabled(validate and (check_every_step or first_step)):
                        sync = None
                        if world > 1:
                            asked = stop["stop"] is not None
                            sync = distributed.GradientSync(len(batch[0]), len(idx), asked)
                        with checked(model, guide, *batch):
                            main = steps[0](optim, *batch, sync=sync)
                        value = main
                        if more is not None:  # None: this step has no extra batch
                            for (m, g, _), extra_step in zip(
                                extra_objectives, steps[1:], strict=True
                            ):
                                more_sync = None
                                if world > 1:
                                    more_sync = distributed.GradientSync(len(more[0]), more_rows)
                                with checked(m, g, *more):
                                    value = value + extra_step(optim, *more, sync=more_sync)
                    first_step = False
                    halted = stop["stop"]  # every process stops at the step where any was asked
                    if sync is not None:
                        halted = (
                            (halted or "a stop request to another process") if sync.stop else None
                        )
                    if per_row_total is not None:  # the loss carries the plate's scale N / B
                        main = main * (len(idx) / per_row_total)
                    pending.append((epoch, step, main, value, len(idx)))
                    position["step"] = step + 1
                    bar.update(1)
                    if step % 10 == 0 or step == steps_per_epoch - 1 or halted or steps[0].fresh:
                        read_losses()
                        bar.set_postfix_str(
                            f"epoch {epoch} elbo {-position['total'] / position['seen']:.2f}"
                            + steps[0].note(),
                            refresh=False,
                        )
                    if halted and step + 1 < steps_per_epoch:
                        save()
                        raise Interrupted(
                            f"{halted} at epoch {epoch}, step {step + 1} of {steps_per_epoch}",
                            epoch=epoch,
                            step=step + 1,
                        )
                history["train_elbo"].append(-position["total"] / position["seen"])
                if extra_objectives:
                    history["train_loss"].append(position["total_all"] / steps_per_epoch)
                history["seconds"].append(time.perf_counter() - t0)
                history["bound_name"].append(bound_name(loss))
                if isinstance(optim, (pyro.optim.PyroLRScheduler, Adam)):
                    optim.step()  # the epoch's learning-rate schedule
                for cb in callbacks:
                    for key, value in (cb(epoch, history) or {}).items():
                        history.setdefault(key, []).append(value)
                position["perm"] = None
                save()
                if stop["stop"] if world == 1 else halted:
                    raise Interrupted(
                        f"{halted or stop['stop']} at the end of epoch {epoch}",
                        epoch=epoch,
                        step=steps_per_epoch,
                    )
    except (TrainingDiverged, Interrupted) as exc:
        exc.history = history
        raise
    finally:
        bar.close()
    return history
