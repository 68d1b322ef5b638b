"""One Adam over every parameter of a run, in place of Pyro's one optimizer per tensor.

``pyro.optim.Adam`` creates a ``torch.optim.Adam`` for each parameter tensor and steps them one
after the other: tens of optimizer calls per SVI step. :class:`Adam` here is one
``torch.optim.Adam`` (fused where the device supports it, else ``foreach``) over all of them,
with the options of Pyro's ``ClippedAdam`` (element-wise gradient clipping, a learning-rate
decay per step) and an epoch schedule (``LambdaLR``'s), behind Pyro's ``PyroOptim`` interface
(``optim(params)``, ``get_state`` / ``set_state``), so that ``pyro.infer.SVI``,
:func:`~pyrolvm.inference.svi_step` and :func:`~pyrolvm.inference.train` take it as they take
Pyro's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

import pyro
import torch
from pyro.optim import PyroOptim

from ..errors import ConfigError

#: The ``format`` tag of :meth:`Adam.get_state` (checkpoints of Pyro's per-tensor optimizers,
#: written before it, are converted by :meth:`Adam.set_state`).
STATE_FORMAT = "pyrolvm.optim.Adam/1"


def _fused_ok(params: Sequence[torch.Tensor]) -> bool:
    """Whether torch's fused Adam kernel takes these tensors (floating point, on the CPU or a
    CUDA device)."""
    return all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)


class Adam(PyroOptim):
    r"""Adam (Kingma & Ba 2015, "Adam: A Method for Stochastic Optimization", Algorithm 1) as
    **one** ``torch.optim.Adam`` over every parameter it steps (fused kernel on the CPU and
    CUDA, else ``foreach``), in place of ``pyro.optim.Adam``'s one optimizer per tensor.

    Each parameter keeps its own moments and step count, and only the parameters passed to a
    call are stepped (the others keep their gradients), exactly as with Pyro's per-tensor
    optimizers; the update itself is torch's.

    Options of Pyro's ``ClippedAdam``: ``clip_norm`` clamps every gradient element to
    ``[-clip_norm, clip_norm]`` before the update, and ``lrd`` multiplies the learning rate by
    ``lrd`` at every step (before the update). An epoch schedule ``lr_lambda(epoch)`` (0-based,
    as ``torch.optim.lr_scheduler.LambdaLR``'s) multiplies the base rate; :meth:`step`, called
    by :func:`~pyrolvm.inference.train` at the end of every epoch, advances it.

    Args:
        lr (float): the base learning rate, > 0.
        betas (tuple of float): Adam's decay rates of the moment estimates.
        eps (float): Adam's epsilon.
        weight_decay (float): L2 penalty, as ``torch.optim.Adam``'s.
        clip_norm (float or None): element-wise gradient clip (``ClippedAdam``); ``None``: none.
        lrd (float): learning-rate decay per step (``ClippedAdam``), in (0, 1].
        lr_lambda (callable or None): ``epoch -> factor`` of ``lr``; ``None``: constant.

    Raises:
        ConfigError: a non-positive learning rate, a negative ``clip_norm`` or ``lrd``
            outside (0, 1].
    """

    def __init__(
        self,
        lr: float = 1e-3,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        clip_norm: float | None = None,
        lrd: float = 1.0,
        lr_lambda: Callable[[int], float] | None = None,
    ) -> None:
        if not lr > 0:
            raise ConfigError(f"the learning rate must be positive, got {lr}")
        if clip_norm is not None and not clip_norm >= 0:
            raise ConfigError(f"clip_norm must be >= 0, got {clip_norm}")
        if not 0 < lrd <= 1:
            raise ConfigError(f"the learning-rate decay lrd must lie in (0, 1], got {lrd}")
        args: dict[str, Any] = {"lr": float(lr), "betas": tuple(betas), "eps": float(eps)}
        if weight_decay:
            args["weight_decay"] = float(weight_decay)
        super().__init__(torch.optim.Adam, args)
        self._options: dict[str, Any] = dict(args)
        self.clip_norm = None if clip_norm is None else float(clip_norm)
        self.lrd = float(lrd)
        self.lr_lambda = lr_lambda
        self.epoch = 0  # epochs of the schedule stepped
        self.steps = 0  # updates made (for lrd)
        self.optimizer: torch.optim.Adam | None = None
        self._params: list[torch.Tensor] = []
        self._known: set[torch.Tensor] = set()
        self._pending: dict[str, dict[str, torch.Tensor]] = {}

    # -- the learning rate ------------------------------------------------------------------

    @property
    def lr(self) -> float:
        """The learning rate of the next update: ``lr * lr_lambda(epoch) * lrd ** steps``."""
        factor = self.lr_lambda(self.epoch) if self.lr_lambda is not None else 1.0
        return self._options["lr"] * factor * self.lrd**self.steps

    def _set_lr(self) -> None:
        if self.optimizer is not None:
            lr = self.lr
            for group in self.optimizer.param_groups:
                group["lr"] = lr

    def step(self, *args: Any, **kwargs: Any) -> None:
        """Advance the epoch schedule by one epoch (``LambdaLR.step``; a no-op without one)."""
        self.epoch += 1
        self._set_lr()

    # -- the update ----------------------------------------------------------------------------

    def _add(self, params: list[torch.Tensor]) -> None:
        """Put new parameters under the optimizer (one parameter group per call that brings
        some), with any state :meth:`set_state` holds for their names."""
        fresh = [p for p in params if p not in self._known]
        if not fresh:
            return
        options: dict[str, Any] = dict(self._options, lr=self.lr)
        fused = _fused_ok(fresh)  # each group says which: a group inherits the first's
        options.update(fused=fused, foreach=not fused)
        optimizer = self.optimizer
        if optimizer is None:
            optimizer = self.optimizer = cast(Any, torch.optim.Adam)(fresh, **options)
        else:
            optimizer.add_param_group(dict(options, params=fresh))
        self._params.extend(fresh)
        self._known.update(fresh)
        if self._pending:
            store = pyro.get_param_store()
            fused = bool(options.get("fused"))
            for p in fresh:
                saved = self._pending.pop(cast(str, store.param_name(p)), None)
                if saved is not None:
                    optimizer.state[p] = _moments_for(p, saved, fused)

    def __call__(self, params: Iterable[torch.Tensor], *args: Any, **kwargs: Any) -> None:
        """Take one Adam step of each parameter in ``params`` that has a gradient (the others
        given are left as they are; parameters not given keep their gradients for a later
        call)."""
        # (a parameter without a gradient is not stepped: not even put under the optimizer,
        # which a tensor the param store replaces every step, a decaying average, would fill)
        params = [p for p in params if p.grad is not None]
        self._add(params)
        assert self.optimizer is not None or not params
        if self.optimizer is None:
            return
        held = []
        if len(params) != len(self._params):  # the parameters not asked for keep their grads
            asked = set(params)
            for p in self._params:
                if p.grad is not None and p not in asked:
                    held.append((p, p.grad))
                    p.grad = None
        if self.clip_norm is not None:
            for p in params:
                cast(torch.Tensor, p.grad).clamp_(-self.clip_norm, self.clip_norm)
        if self.lrd != 1.0:
            self.steps += 1
            self._set_lr()
        self.optimizer.step()
        for p, g in held:
            p.grad = g

    # -- checkpoints ---------------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        """The moments and step counts of every parameter by its name in Pyro's param store,
        and the schedule's position: a dict of tensors and plain values (loadable with
        ``torch.load(weights_only=True)``)."""
        store = pyro.get_param_store()
        moments = dict(self._pending)
        if self.optimizer is not None:
            for p in self._params:
                name = store.param_name(p)
                state = self.optimizer.state.get(p)
                if name is not None and state:
                    moments[name] = {k: v.detach().clone() for k, v in state.items()}
        return {"format": STATE_FORMAT, "epoch": self.epoch, "steps": self.steps, "state": moments}

    def set_state(self, state_dict: dict) -> None:
        """Restore :meth:`get_state`'s state; the moments of a parameter are put in place when
        it is first stepped (as Pyro's optimizers do). The state of Pyro's per-tensor ``Adam``
        or ``LambdaLR`` around ``torch.optim.Adam`` (checkpoints written before this optimizer)
        is converted: the same moments and step counts, and the schedule's epoch.

        Raises:
            ConfigError: a state of another optimizer.
        """
        if state_dict.get("format") == STATE_FORMAT:
            moments = state_dict["state"]
            self.epoch, self.steps = int(state_dict["epoch"]), int(state_dict["steps"])
        else:
            moments, self.epoch = _from_pyro(state_dict)
        self._pending = {name: dict(m) for name, m in moments.items()}
        if self.optimizer is not None:  # parameters already stepped: now
            store = pyro.get_param_store()
            fused = bool(self.optimizer.defaults.get("fused"))
            for p in self._params:
                saved = self._pending.pop(cast(str, store.param_name(p)), None)
                if saved is not None:
                    self.optimizer.state[p] = _moments_for(p, saved, fused)
        self._set_lr()


def _moments_for(p: torch.Tensor, saved: dict[str, Any], fused: bool) -> dict[str, torch.Tensor]:
    """A parameter's saved Adam state on its device and in its dtype (the step count as torch
    keeps it: a float32 tensor, on the parameter's device for the fused kernel)."""
    step = saved["step"]
    step = float(step.item() if isinstance(step, torch.Tensor) else step)
    return {
        "step": torch.tensor(step, dtype=torch.float32, device=p.device if fused else "cpu"),
        "exp_avg": saved["exp_avg"].to(p.device, p.dtype).clone(),
        "exp_avg_sq": saved["exp_avg_sq"].to(p.device, p.dtype).clone(),
    }


def _from_pyro(state_dict: dict) -> tuple[dict[str, dict[str, Any]], int]:
    """The moments by parameter name and the schedule's epoch from the state of Pyro's
    per-tensor optimizers (``PyroOptim.get_state``: ``{name: torch state dict}``, or
    ``{name: {"scheduler": ..., "optimizer": ...}}`` for an ``LRScheduler``)."""
    moments: dict[str, dict[str, Any]] = {}
    epochs = set()
    for name, entry in state_dict.items():
        if not isinstance(entry, dict):
            raise _unreadable()
        optimizer = entry.get("optimizer", entry)
        if "scheduler" in entry:
            epochs.add(int(entry["scheduler"].get("last_epoch", 0)))
        if not isinstance(optimizer, dict) or "state" not in optimizer:
            raise _unreadable()
        states = list(optimizer["state"].values())
        if len(states) > 1 or (states and not {"step", "exp_avg", "exp_avg_sq"} <= set(states[0])):
            raise _unreadable()
        if states:
            moments[name] = dict(states[0])
    epoch = max(epochs) if epochs else 0
    if not math.isfinite(epoch):
        raise _unreadable()
    return moments, epoch


def _unreadable() -> ConfigError:
    return ConfigError(
        "the checkpoint's optimizer state is neither pyrolvm's Adam nor Pyro's Adam or LambdaLR: "
        "it cannot be resumed with this optimizer (start the run afresh, or resume it with the "
        "optimizer it was trained with)"
    )


__all__ = ["STATE_FORMAT", "Adam"]
