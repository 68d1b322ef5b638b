"""The compiled SVI step: a pair's whole step traced once, below Python, and replayed.

Pyro interprets a model and guide anew at every step (traces, messengers, distribution
objects), a fixed cost of milliseconds whatever the networks' size. For a pair whose
structure does not change from step to step, :class:`CompiledStep` runs that interpretation
once per *key* (the shapes, dtypes and devices of the batch and of the param store's
tensors, and the objective's settings): it traces the objective's ``loss_and_grads`` with
``torch.fx.experimental.proxy_tensor.make_fx``, every tensor of Pyro's param store an input
of the graph (the tensors the networks registered with ``pyro.module`` hold are those same
tensors), and records only the tensor operations: the forward pass, the random draws (as
operations, so that every replay draws anew), and the backward pass. The graph returns the
loss, the gradients and the param-store entries the step replaces (the decaying-average
baselines of ``TraceGraph_ELBO``); per-step settings of the objective (the annealed beta of
:class:`~pyrolvm.inference.BetaELBO`, its ``graph_inputs``) are inputs, not constants.

Modes (``compile=``): ``"graph"`` replays the traced graph (the same kernels as the eager
step, drawing from the same random streams: bitwise equal to it); ``"inductor"`` compiles it
with ``torch.compile`` (inductor; CUDA graphs on a GPU; its random draws come from its own
generator, seeded from torch's: reproducible from the seed, but not equal draw for draw to
the eager step; with ``torch._inductor.config.fallback_random`` it uses eager's); ``"off"``
is Pyro's eager step; ``"auto"`` is inductor where a C++ compiler (CPU) or Triton (CUDA) is
present, else graph. The first step of every key runs eagerly, with Pyro's validation on,
and the graph is checked against it (replayed at the same draws, it must give the same loss
and gradients); a step that cannot be traced (a Python branch on a tensor's value, a
parameter created or dropped by a step, an in-place change of a parameter) falls back to
the eager step, with one logged line saying why.

The evaluator (:func:`~pyrolvm.inference.importance_sample`) runs the same kind of graph,
without gradients, for its K-particle chunks (:func:`chunk_log_weights`).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import logging
import numbers
import operator
import os
import random
import shutil
import time
import types
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO
from pyro.infer.util import is_validation_enabled
from pyro.ops.provenance import ProvenanceTensor

from ..errors import ConfigError
from . import distributed

#: The ``compile`` choices of :func:`~pyrolvm.inference.train` and ``--compile``.
MODES: tuple[str, ...] = ("auto", "inductor", "graph", "off")
#: The environment variable that sets what ``"auto"`` means (e.g. ``off`` in the test suite).
ENV = "PYROLVM_COMPILE"

logger = logging.getLogger("pyrolvm.compile")
_DEFAULT: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "pyrolvm_compile", default=None
)


# -- the switch -------------------------------------------------------------------------------


def _check_mode(mode: Any, where: str = "compile") -> str:
    if mode not in MODES:
        raise ConfigError(f"unknown {where} mode {mode!r}: choose one of {', '.join(MODES)}")
    return mode


@functools.cache
def has_cpp_compiler() -> bool:
    """Whether a C++ compiler is on the PATH (``$CXX``, ``g++``, ``c++`` or ``clang++``): what
    inductor needs on the CPU."""
    names = [os.environ.get("CXX") or "", "g++", "c++", "clang++"]
    return any(shutil.which(n) for n in names if n)


@functools.cache
def _has_triton() -> bool:
    try:
        from torch.utils._triton import has_triton
    except ImportError:  # pragma: no cover (older torch)
        return False
    return bool(has_triton())


def resolve_mode(mode: str | None = "auto", device: torch.device | None = None) -> str:
    """The mode a step runs in: ``mode`` itself unless it is ``"auto"``; ``"auto"`` takes the
    mode set by :func:`compile_mode` (a run's ``--compile``), else ``$PYROLVM_COMPILE``, else
    ``"inductor"`` where it can compile (a C++ compiler for the CPU, Triton for CUDA) and
    ``"graph"`` elsewhere.

    Raises:
        ConfigError: an unknown mode (in the argument or the environment variable).
    """
    mode = _check_mode("auto" if mode is None else mode)
    if mode == "auto":
        mode = _check_mode(_DEFAULT.get() or "auto")
    if mode == "auto" and os.environ.get(ENV):
        mode = _check_mode(os.environ[ENV], f"${ENV}")
    if mode == "auto":
        cuda = device is not None and device.type == "cuda"
        mode = "inductor" if (_has_triton() if cuda else has_cpp_compiler()) else "graph"
    return mode


@contextlib.contextmanager
def compile_mode(mode: str | None) -> Iterator[None]:
    """Within the block, ``compile="auto"`` (the default of :func:`~pyrolvm.inference.train`
    and of the evaluator) means ``mode`` (``None`` or ``"auto"``: unchanged). A run sets its
    ``--compile`` this way.

    Raises:
        ConfigError: an unknown mode.
    """
    token = _DEFAULT.set(None if mode is None else _check_mode(mode))
    try:
        yield
    finally:
        _DEFAULT.reset(token)


# -- the eager step ---------------------------------------------------------------------------


def loss_and_grads(
    model: Callable, guide: Callable, loss: Any, args: Sequence[Any], probe: bool = False
) -> tuple[Any, list[tuple[str, torch.Tensor]], bool]:
    """Pyro's eager step without the update: the objective's ``loss_tensor_and_grads`` (or
    ``loss_and_grads``) under a trace of the ``param`` sites it touches.

    Returns:
        (loss, named, subsampled): the loss (a float or a 0-d tensor, nats); the parameters'
        unconstrained tensors ``[(name, tensor)]`` sorted by name, their gradients in
        ``.grad``; whether a sample site lies in a subsampled plate (looked for only with
        ``probe``).
    """
    objective = cast(Any, loss)
    step_loss = getattr(objective, "loss_tensor_and_grads", None) or objective.loss_and_grads
    found = distributed.SubsampleProbe() if probe else contextlib.nullcontext()
    with poutine.trace(param_only=True) as capture, found:
        value = step_loss(model, guide, *args)
    nodes = cast(Any, capture.trace.nodes)
    named = sorted(
        ((name, site["value"].unconstrained()) for name, site in nodes.items()),
        key=lambda item: item[0],
    )
    return value, named, bool(probe and cast(Any, found).found)


def update(
    optim: Any,
    named: list[tuple[str, torch.Tensor]],
    value: Any,
    sync: distributed.GradientSync | None = None,
    subsampled: bool = False,
) -> Any:
    """The end of a step: the gradients summed over the processes (``sync``), ``optim`` on the
    parameters, their gradients cleared (set to ``None``). Returns the loss (the whole
    minibatch's under ``sync``)."""
    if sync is not None:
        value = sync(named, value, subsampled)
    params = [p for _, p in named]
    optim(params)
    for p in params:
        p.grad = None
    return value


# -- tracing ----------------------------------------------------------------------------------


class CannotCompile(Exception):
    """A step that cannot be traced to a graph; ``str(exc)`` says why, in one line."""


#: Pyro's ELBO modules whose losses are read with ``torch_item`` and checked with
#: ``warn_if_nan`` (host reads, which a graph cannot hold).
_PYRO_LOSSES = (
    "pyro.infer.trace_elbo",
    "pyro.infer.trace_mean_field_elbo",
    "pyro.infer.tracegraph_elbo",
    "pyro.infer.traceenum_elbo",
)


def _item_as_tensor(x: Any) -> Any:
    """``pyro.infer.util.torch_item`` inside a graph: the value as a detached float64 tensor
    (Python's floats are float64: the same number) instead of a host read."""
    return x if isinstance(x, numbers.Number) else x.detach().to(torch.float64)


def _no_nan_check(*args: Any, **kwargs: Any) -> None:
    """``pyro.util.warn_if_nan`` inside a graph: nothing (train checks every loss it reads)."""


@contextlib.contextmanager
def _pyro_losses_as_tensors() -> Iterator[None]:
    """Within the block Pyro's ``Trace_ELBO``, ``TraceMeanField_ELBO``, ``TraceGraph_ELBO`` and
    ``TraceEnum_ELBO`` compute their losses as they do, but return them as float64 tensors
    (see :func:`_item_as_tensor`) and skip their NaN warnings."""
    saved = []
    try:
        for name in _PYRO_LOSSES:
            module = importlib.import_module(name)
            for attr, stand_in in (("torch_item", _item_as_tensor), ("warn_if_nan", _no_nan_check)):
                if hasattr(module, attr):
                    saved.append((module, attr, getattr(module, attr)))
                    setattr(module, attr, stand_in)
        yield
    finally:
        for module, attr, value in reversed(saved):
            setattr(module, attr, value)


_RNG = tuple[Any, ...]


def _rng_state(device: torch.device) -> _RNG:
    cuda = torch.cuda.get_rng_state_all() if device.type == "cuda" else None
    return torch.get_rng_state(), cuda, random.getstate(), np.random.get_state()


def _set_rng_state(state: _RNG) -> None:
    cpu, cuda, py, npy = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)
    random.setstate(py)
    np.random.set_state(npy)


@contextlib.contextmanager
def _other_draws(device: torch.device) -> Iterator[None]:
    """Within the block every random generator (torch's, Python's, numpy's) draws from a
    stream unrelated to the run's, which is restored after: the trace draws other numbers than
    the eager step, so that a draw frozen into the graph as a constant shows in the check."""
    saved = _rng_state(device)
    seed = (torch.initial_seed() + 1) % 2**32
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    try:
        yield
    finally:
        _set_rng_state(saved)


def _store_state() -> tuple[dict, dict, dict]:
    store = pyro.get_param_store()
    return dict(store._params), dict(store._param_to_name), dict(store._constraints)


def _set_store_state(state: tuple[dict, dict, dict]) -> None:
    store = pyro.get_param_store()
    for current, saved in zip(
        (store._params, store._param_to_name, store._constraints), state, strict=True
    ):
        current.clear()
        current.update(saved)


def _plain(t: torch.Tensor) -> torch.Tensor:
    """The tensor a param-store entry computes with: itself, or the tensor a Pyro
    ``ProvenanceTensor`` wraps (``TraceGraph_ELBO`` stores its decaying averages so; every
    operation on the wrapper runs on the wrapped tensor, which must be the graph's input)."""
    return getattr(t, "_t", t) if isinstance(t, ProvenanceTensor) else t


def _replace(name: str, value: torch.Tensor) -> None:
    """Put ``value`` (unconstrained) in Pyro's param store under ``name``, as
    ``ParamStoreDict.__setitem__`` does."""
    store = pyro.get_param_store()
    old = store._params.get(name)
    value.requires_grad_(True)
    store._params[name] = value
    if old is not None:
        store._param_to_name.pop(old, None)
    store._param_to_name[value] = name


def _where(tb: Any) -> str:
    """`` at FILE:LINE`` of the innermost frame of a traceback outside torch and this module."""
    here = os.path.abspath(__file__)
    torch_dir = os.path.dirname(os.path.abspath(torch.__file__))
    found = ""
    while tb is not None:
        path = os.path.abspath(tb.tb_frame.f_code.co_filename)
        if path != here and not path.startswith(torch_dir):
            short = os.path.join(*path.split(os.sep)[-3:])
            found = f" at {short}:{tb.tb_lineno}"
        tb = tb.tb_next
    return found


def _reason(exc: BaseException) -> str:
    """One line: why tracing failed."""
    text = str(exc)
    where = _where(exc.__traceback__)
    if "_local_scalar_dense" in text or "data-dependent" in text:
        return f"the step reads a tensor's value in Python (data-dependent control flow){where}"
    first = text.strip().splitlines()[0][:200] if text.strip() else ""
    return f"{type(exc).__name__}: {first}{where}"


def _is_impure(node: torch.fx.Node) -> bool:
    """Nodes dead-code elimination keeps: inputs, outputs, random draws (dropping an unused
    draw would change the random stream) and in-place operations."""
    if node.op in ("placeholder", "output"):
        return True
    target = node.target
    if isinstance(target, torch._ops.OpOverload) and (
        torch.Tag.nondeterministic_seeded in target.tags or target._schema.is_mutable
    ):
        return True
    return node.is_impure()


def _check_mutations(gm: torch.fx.GraphModule) -> None:
    """Refuse a graph that changes an input (a parameter, the data) or a tensor held outside
    the graph (e.g. BatchNorm's running statistics) in place."""
    for node in gm.graph.nodes:
        target = node.target
        if not isinstance(target, torch._ops.OpOverload) or not target._schema.is_mutable:
            continue
        for arg, spec in zip(node.args, target._schema.arguments, strict=False):
            written = spec.alias_info is not None and spec.alias_info.is_write
            if written and isinstance(arg, torch.fx.Node) and arg.op in ("placeholder", "get_attr"):
                raise CannotCompile(
                    f"the step changes a parameter, the data or a tensor held by a module in "
                    f"place ({target}, e.g. BatchNorm's running statistics)"
                )


def trace(fn: Callable[..., Any], inputs: Sequence[Any]) -> torch.fx.GraphModule:
    """``make_fx(fn)(*inputs)`` (real tensors: the inputs are the tensors themselves, so that
    the param store's tensors, wherever the model and guide reach them, are graph inputs),
    with dead operations removed (random draws kept).

    Raises:
        CannotCompile: ``fn`` cannot be traced (its reason in one line).
    """
    from torch.fx.experimental.proxy_tensor import make_fx

    try:
        gm = make_fx(fn)(*inputs)
    except CannotCompile:
        raise
    except Exception as exc:  # whatever the pair does that a graph cannot hold
        raise CannotCompile(_reason(exc)) from exc
    gm.graph.eliminate_dead_code(is_impure_node=_is_impure)
    gm.recompile()
    _check_mutations(gm)
    return gm


def _close(got: Any, expected: Any) -> bool:
    """Whether a graph's output equals the eager step's (up to a relative 1e-4 of the largest
    value: the graph runs the same kernels, so any real difference is far larger)."""
    if expected is None:
        return got is None
    if got is None:
        return False
    if not isinstance(expected, torch.Tensor):  # (a Python float: on the CPU, whatever the default)
        expected = torch.tensor(float(expected), dtype=torch.float64, device="cpu")
    if not isinstance(got, torch.Tensor):
        return False
    if got.shape != expected.shape:
        return False
    got, expected = got.double().cpu(), expected.double().cpu()
    if not torch.equal(got.isnan(), expected.isnan()):
        return False
    finite = expected.isfinite()
    if not torch.equal(got[~finite], expected[~finite]):
        return False
    scale = expected[finite].abs().max().item() if finite.any() else 0.0
    return bool(((got - expected)[finite].abs() <= 1e-4 * scale + 1e-6).all())


@contextlib.contextmanager
def _quiet_cuda_home() -> Iterator[None]:
    """Silence torch's warning that a CPU-only machine has no CUDA runtime, which inductor's
    C++ toolchain setup logs on the CPU (it concerns CUDA extensions, not this compile)."""
    cpp_logger = logging.getLogger("torch.utils.cpp_extension")
    level = cpp_logger.level
    cpp_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        cpp_logger.setLevel(level)


def _compiled(
    gm: torch.fx.GraphModule, inputs: Sequence[Any], device: torch.device
) -> Callable[..., Any]:
    """Inductor's program of a traced graph, compiled by a first call on other draws (whose
    numbers are discarded): on the CPU ``compile_fx`` (inductor without dynamo's guards, which
    a graph of fixed shapes does not need: less time per call), on CUDA ``torch.compile``
    with CUDA graphs (``mode="reduce-overhead"``). Compiled in this process (inductor's pool
    of compile workers costs more than it saves on a step's few kernels); inductor's on-disk
    cache serves a graph compiled before, by this run or another."""
    import torch._inductor.config as inductor_config

    with inductor_config.patch(compile_threads=1), torch.no_grad(), _quiet_cuda_home():
        if device.type == "cuda":
            fn = cast(Callable, torch.compile(gm, mode="reduce-overhead", fullgraph=True))
        else:
            from torch._inductor.compile_fx import compile_fx

            fn = cast(Callable, compile_fx(gm, list(inputs)))
        with _other_draws(device):
            if device.type == "cuda":
                torch.compiler.cudagraph_mark_step_begin()
            fn(*inputs)
    return fn


def _mode_key(mode: str) -> tuple:
    """The mode's part of a key: the mode, and for inductor its ``fallback_random`` setting."""
    if mode != "inductor":
        return (mode,)
    import torch._inductor.config as inductor_config

    return mode, inductor_config.fallback_random


def _signature(args: Sequence[Any]) -> tuple:
    """The part of a key that the arguments give: each tensor's shape, strides, dtype and
    device (inductor's program assumes the strides it was compiled for).

    Raises:
        TypeError: an argument that is not a tensor.
    """
    out = []
    for a in args:
        if not isinstance(a, torch.Tensor):
            raise TypeError("an argument of the model and guide is not a tensor")
        out.append((tuple(a.shape), a.stride(), a.dtype, a.device, a.requires_grad))
    return tuple(out)


class _StoreKey:
    """The param store's part of a key (names, shapes, dtypes, devices), recomputed only when
    a tensor of the store was replaced."""

    def __init__(self) -> None:
        self._tensors: tuple = ()
        self._key: tuple = ()

    def __call__(self) -> tuple:
        params = pyro.get_param_store()._params
        tensors = tuple(params.values())
        if len(tensors) != len(self._tensors) or not all(map(operator.is_, tensors, self._tensors)):
            self._tensors = tensors
            self._key = tuple(
                (n, tuple(p.shape), p.stride(), p.dtype, p.device) for n, p in params.items()
            )
        return self._key


class _PythonState:
    """The Python state of a model and guide that can change their program: for every
    ``nn.Module`` reachable from their objects (a bound method's object, or the callable
    itself), ``training`` and its other public attributes that hold a bool, float, str or
    ``None`` (a temperature, a relaxation, a flag; integers, e.g. counters, are left out),
    listed when first seen and read at every step."""

    def __init__(self, callables: Sequence[Any]) -> None:
        self._read: list[tuple[Any, tuple[str, ...]]] = []
        seen: set[int] = set()
        for fn in callables:
            owner = fn.__self__ if isinstance(fn, types.MethodType) else fn
            objects = list(owner.modules()) if isinstance(owner, torch.nn.Module) else [owner]
            for obj in objects:
                if id(obj) in seen or not hasattr(obj, "__dict__"):
                    continue
                seen.add(id(obj))
                names = tuple(
                    k
                    for k, v in vars(obj).items()
                    if not k.startswith("_")
                    and (v is None or isinstance(v, (float, str)) or type(v) is bool)
                )
                if names:
                    self._read.append((obj, names))

    def __call__(self) -> tuple:
        return tuple(getattr(obj, name, None) for obj, names in self._read for name in names)


class _OwnerCache:
    """A dict keyed by callables (bound methods by their object and function), whose entries
    go when an object they are keyed by is collected."""

    def __init__(self) -> None:
        self._entries: dict[tuple, Any] = {}

    @staticmethod
    def _parts(fn: Any) -> tuple[list[Any], tuple]:
        if isinstance(fn, types.MethodType):
            return [fn.__self__], (id(fn.__self__), fn.__func__)
        return [fn], (id(fn),)

    def get(self, callables: Sequence[Any], make: Callable[[], Any]) -> Any:
        owners, key = [], ()
        for fn in callables:
            o, k = self._parts(fn)
            owners += o
            key += k
        if key in self._entries:
            return self._entries[key]
        value = make()
        try:
            for owner in owners:
                weakref.finalize(owner, self._entries.pop, key, None)
        except TypeError:  # not weakly referenceable: not cached
            return value
        self._entries[key] = value
        return value


_STEPS = _OwnerCache()
_CHUNKS = _OwnerCache()


@dataclass
class _Program:
    """A traced step of one key: which store entries go in (in order), which parameters the
    step trains (Pyro's param sites, sorted), which of them the graph returns a gradient for,
    which store entries it replaces (returned after the gradients), the objective's
    attributes passed in as 0-d tensors, and whether a site is subsampled."""

    names: tuple[str, ...]
    trained: tuple[str, ...]
    grads: tuple[str, ...]
    replaced: tuple[str, ...]
    graph_inputs: tuple[str, ...]
    subsampled: bool
    fn: Callable[..., Any]


def _scalar_inputs(objective: Any, names: Sequence[str], device: torch.device) -> list:
    return [
        torch.tensor(float(getattr(objective, a)), dtype=torch.float64, device=device)
        for a in names
    ]


def _device(args: Sequence[Any]) -> torch.device:
    for a in args:
        if isinstance(a, torch.Tensor):
            return a.device
    return torch.device("cpu")


# -- the training step ------------------------------------------------------------------------


class CompiledStep:
    """One SVI step of ``model``/``guide`` under ``loss``, compiled per key (see the module
    docstring); ``step(optim, *args, sync=None)`` does what
    :func:`~pyrolvm.inference.svi_step` does and returns the same loss.

    Args:
        model, guide (callable): the Pyro model and guide.
        loss (pyro.infer.ELBO): the objective.
        mode (str): ``"auto"``, ``"inductor"``, ``"graph"`` or ``"off"`` (see
            :func:`resolve_mode`; ``"auto"`` is resolved at the first step, on the data's
            device).
        validate (bool or None): run the first step of every key with Pyro's validation (the
            default: whether it is enabled now).

    Attributes:
        mode (str or None): the mode in use (``"off"`` after a fallback), ``None`` before the
            first step.
        compile_seconds (float): time spent tracing, checking and compiling, all keys.
        reason (str or None): why the step fell back to the eager step.

    Raises:
        ConfigError: an unknown mode.
    """

    def __init__(
        self,
        model: Callable,
        guide: Callable,
        loss: Any,
        mode: str | None = "auto",
        validate: bool | None = None,
    ) -> None:
        self.model, self.guide, self.loss = model, guide, loss
        self._asked = _check_mode("auto" if mode is None else mode)
        self.mode: str | None = None
        self.validate = is_validation_enabled() if validate is None else bool(validate)
        self.compile_seconds = 0.0
        self.reason: str | None = None
        #: ``announce(text)`` is called before a new shape is traced and compiled (train: the
        #: progress bar).
        self.announce: Callable[[str], Any] | None = None
        #: Whether a shape was compiled since the last :meth:`note`.
        self.fresh = False
        self._store_key = _StoreKey()
        self._python_state = _PythonState((model, guide))
        self._new_keys = 0  # first steps in a row that changed the key (params created, ...)
        self._programs: dict[tuple, _Program] = _STEPS.get((model, guide, loss), dict)
        self._scalars: dict[tuple, torch.Tensor] = {}

    def note(self) -> str:
        """A few words for the progress bar: the compile time, or that the step is eager (and
        ``fresh`` turns false)."""
        self.fresh = False
        if self.reason is not None:
            return ", eager step"
        return f", compiled in {self.compile_seconds:.1f} s" if self.compile_seconds else ""

    def _give_up(self, reason: str) -> None:
        self.reason, self.mode = reason, "off"
        logger.warning("pyrolvm: the SVI step runs eagerly (not compiled): %s", reason)

    def _graph_inputs(self) -> tuple[str, ...]:
        return tuple(getattr(self.loss, "graph_inputs", ()))

    def _key(self, args: Sequence[Any]) -> tuple:
        skip = self._graph_inputs()
        settings = tuple(
            (k, v)
            for k, v in vars(self.loss).items()
            if k not in skip and (v is None or isinstance(v, (bool, int, float, str)))
        )
        return (
            _signature(args),
            self._store_key(),
            settings,
            self._python_state(),
            type(self.loss),
            _mode_key(cast(str, self.mode)),
        )

    def __call__(self, optim: Any, *args: Any, sync: distributed.GradientSync | None = None) -> Any:
        if self.mode is None:
            self.mode = resolve_mode(self._asked, _device(args))
        if self.mode != "off":
            try:
                key = self._key(args)
            except TypeError as exc:
                self._give_up(str(exc))
            else:
                program = self._programs.get(key)
                if program is not None:
                    self._new_keys = 0
                    value, named = self._run(program, args)
                    return update(optim, named, value, sync, program.subsampled)
                return self._first(key, optim, args, sync)
        value, named, found = loss_and_grads(
            self.model, self.guide, self.loss, args, probe=sync is not None
        )
        return update(optim, named, value, sync, found)

    def _inputs(self, program: _Program, args: Sequence[Any]) -> list:
        params = pyro.get_param_store()._params
        device = _device(args)
        scalars = []
        for a in program.graph_inputs:
            value = float(getattr(self.loss, a))
            t = self._scalars.get((a, value, device))
            if t is None:
                t = self._scalars[(a, value, device)] = torch.tensor(
                    value, dtype=torch.float64, device=device
                )
            scalars.append(t)
        return [*(_plain(params[n]) for n in program.names), *args, *scalars]

    def _outputs(self, program: _Program, outs: Sequence[Any], cuda: bool):
        """Put a replay's gradients into ``.grad`` and its replaced entries into the store;
        return (loss, named parameters)."""
        params = pyro.get_param_store()._params
        g = len(program.grads)
        for name, grad in zip(program.grads, outs[1 : 1 + g], strict=True):
            params[name].grad = grad
        for name, value in zip(program.replaced, outs[1 + g :], strict=True):
            _replace(name, value.clone() if cuda else value)
        value = outs[0].clone() if cuda else outs[0]
        return value, [(n, params[n]) for n in program.trained]

    def _run(self, program: _Program, args: Sequence[Any]):
        inputs = self._inputs(program, args)
        cuda = self.mode == "inductor" and _device(args).type == "cuda"
        with torch.no_grad():
            if cuda:
                torch.compiler.cudagraph_mark_step_begin()
            outs = program.fn(*inputs)
        return self._outputs(program, outs, cuda)

    def _first(self, key: tuple, optim: Any, args: Sequence[Any], sync: Any) -> Any:
        """The first step of a key: eager with Pyro's validation, then traced, checked
        against the eager step and (inductor) compiled. The step's numbers are the eager
        step's (graph: the same) or the compiled program's at the same draws (inductor). A
        step that changes the key (the run's first: it creates the parameters and guesses
        the plate nesting, with draws of its own) is only the eager step."""
        device = _device(args)
        before, rng0 = _store_state(), _rng_state(device)
        with pyro.validation_enabled(self.validate):
            value, named, subsampled = loss_and_grads(
                self.model, self.guide, self.loss, args, probe=True
            )
        if self._key(args) != key:  # (its next step traces the new key)
            self._new_keys += 1
            if self._new_keys >= 4:
                self._give_up(
                    "the step changes what a compiled step depends on at every step (the "
                    "param store's names or shapes, or a float, str or bool attribute of the "
                    "model's or guide's modules)"
                )
            return update(optim, named, value, sync, subsampled)
        self._new_keys = 0
        grads = {n: p.grad for n, p in named}
        after, rng1 = _store_state(), _rng_state(device)
        t0 = time.perf_counter()
        program = None
        if self.announce is not None:
            self.announce(f"compiling the step for a new shape ({self.mode})")
        try:
            program = self._build(args, before[0], after[0], rng0, named, value, grads, subsampled)
        except CannotCompile as exc:
            self._give_up(str(exc))
        finally:
            _set_store_state(after)
            for n, p in named:
                p.grad = grads[n]
            _set_rng_state(rng1)
            self.compile_seconds += time.perf_counter() - t0
            self.fresh = True
        if program is not None:
            self._programs[key] = program
            if self.mode == "inductor":  # this step's numbers: the compiled program's
                for _, p in named:
                    p.grad = None
                inputs = self._inputs(program, args)
                params = [_plain(before[0].get(n, after[0][n])) for n in program.names]
                _set_rng_state(rng0)
                cuda = device.type == "cuda"
                with torch.no_grad():
                    if cuda:
                        torch.compiler.cudagraph_mark_step_begin()
                    outs = program.fn(*params, *inputs[len(params) :])
                value, named = self._outputs(program, outs, cuda)
        return update(
            optim, named, value, sync, subsampled if program is None else program.subsampled
        )

    def _body(self, names: tuple[str, ...], n_args: int, graph_inputs: tuple[str, ...], info: dict):
        model, guide, objective = self.model, self.guide, cast(Any, self.loss)
        step_loss = getattr(objective, "loss_tensor_and_grads", None) or objective.loss_and_grads

        def body(*flat):
            params = flat[: len(names)]
            args = flat[len(names) : len(names) + n_args]
            scalars = flat[len(names) + n_args :]
            saved = {a: objective.__dict__[a] for a in graph_inputs if a in objective.__dict__}
            try:
                for a, t in zip(graph_inputs, scalars, strict=True):
                    setattr(objective, a, t)
                with (
                    poutine.trace(param_only=True) as capture,
                    pyro.validation_enabled(False),
                    _pyro_losses_as_tensors(),
                ):
                    value = step_loss(model, guide, *args)
            finally:
                for a in graph_inputs:
                    if a in saved:
                        setattr(objective, a, saved[a])
                    else:
                        objective.__dict__.pop(a, None)
            if not isinstance(value, torch.Tensor):
                raise CannotCompile("the objective's loss is a Python number, not a tensor")
            store = pyro.get_param_store()._params
            if set(store) != set(names):
                raise CannotCompile("the step adds parameters to Pyro's param store or drops some")
            trained = tuple(sorted(cast(Any, capture.trace.nodes)))
            chosen = set(trained)
            by_name = dict(zip(names, params, strict=True))
            grads = tuple(n for n, p in by_name.items() if n in chosen and p.grad is not None)
            replaced = tuple(n for n, p in by_name.items() if _plain(store[n]) is not p)
            info.update(trained=trained, grads=grads, replaced=replaced)
            return (value, *(by_name[n].grad for n in grads), *(_plain(store[n]) for n in replaced))

        return body

    def _build(self, args, before, after, rng0, named, value, grads, subsampled) -> _Program:
        if isinstance(self.loss, TraceEnum_ELBO):
            raise CannotCompile(
                "enumeration (TraceEnum_ELBO) sums over the enumerated values with a mask of the "
                "nonzero probabilities whose size depends on the data (pyro.infer.util)"
            )
        device = _device(args)
        names = tuple(after)
        graph_inputs = self._graph_inputs()
        scalars = _scalar_inputs(self.loss, graph_inputs, device)
        current = [_plain(after[n]) for n in names]
        for p in current:
            p.grad = None
        info: dict = {}
        body = self._body(names, len(args), graph_inputs, info)
        try:
            with _other_draws(device):
                gm = trace(body, [*current, *args, *scalars])
        finally:
            for p in current:
                p.grad = None
        trained = tuple(n for n, _ in named)
        if info["trained"] != trained:
            raise CannotCompile("the step's parameters differ from one run of the step to the next")
        program = _Program(
            names, trained, info["grads"], info["replaced"], graph_inputs, subsampled, gm
        )
        # the check: replayed at the eager step's draws, on its inputs, the graph gives its numbers
        inputs = [*(_plain(before.get(n, after[n])) for n in names), *args, *scalars]
        expected = [value, *(grads[n] for n in program.grads)]
        expected += [_plain(after[n]) for n in program.replaced]
        missing = [n for n in trained if grads[n] is not None and n not in program.grads]
        _set_rng_state(rng0)
        with torch.no_grad():
            outs = gm(*inputs)
        if missing or not all(_close(o, e) for o, e in zip(outs, expected, strict=True)):
            raise CannotCompile(
                "the traced step does not reproduce the eager step (it uses a value computed "
                "outside the parameters and the data, e.g. a Python random draw or a tensor "
                "cached between steps)"
            )
        if self.mode == "inductor":
            program.fn = self._compile(gm, [*current, *args, *scalars], device)
        return program

    def _compile(self, gm, inputs, device) -> Callable[..., Any]:
        """Inductor's program of the graph (:func:`_compiled`); the graph itself if inductor
        fails (one logged line)."""
        try:
            fn = _compiled(gm, inputs, device)
        except Exception as exc:  # inductor's own failures: replay the graph instead
            self.mode = "graph"
            logger.warning(
                "pyrolvm: inductor could not compile the SVI step (%s); replaying the traced "
                "graph instead",
                _reason(exc),
            )
            return gm
        return fn


# -- the evaluator ----------------------------------------------------------------------------


class _ChunkLogWeights:
    """See :func:`chunk_log_weights`."""

    def __init__(self, model: Callable, proposal: Callable) -> None:
        self.model, self.proposal = model, proposal
        self._programs: dict[tuple, tuple[tuple[str, ...], Callable]] = {}
        self._store_key = _StoreKey()
        self._python_state = _PythonState((model, proposal))
        self.reason: str | None = None

    def __call__(self, objective: Any, *batch: Any, **kwargs: Any):
        def eager():
            return objective.importance_weights(
                self.model, self.proposal, *batch, check_rsample=False, **kwargs
            ).log_w

        device = _device(batch)
        mode = resolve_mode("auto", device)
        if mode == "off" or self.reason is not None or kwargs or is_validation_enabled():
            return eager()
        try:
            key = (
                _signature(batch),
                self._store_key(),
                objective.num_particles,
                objective.max_plate_nesting,
                objective.batch_plate,
                float(objective.latent_weight),
                self._python_state(),
                _mode_key(mode),
            )
        except TypeError:
            return eager()
        found = self._programs.get(key)
        if found is None:
            return self._first(key, objective, batch, mode, eager)
        names, fn = found
        params = pyro.get_param_store()._params
        cuda = mode == "inductor" and device.type == "cuda"
        with torch.no_grad():
            if cuda:
                torch.compiler.cudagraph_mark_step_begin()
            out = fn(*(_plain(params[n]) for n in names), *batch)[0]
        return out.clone() if cuda else out

    def _first(self, key, objective, batch, mode, eager):
        device = _device(batch)
        rng0 = _rng_state(device)
        expected = eager()
        rng1 = _rng_state(device)
        names = tuple(pyro.get_param_store()._params)
        store = _store_state()

        def body(*flat):
            with pyro.validation_enabled(False):
                log_w = objective.importance_weights(
                    self.model, self.proposal, *flat[len(names) :], check_rsample=False
                ).log_w
            if tuple(pyro.get_param_store()._params) != names:
                raise CannotCompile("the evaluation adds parameters to Pyro's param store")
            return (log_w,)

        inputs = [*(_plain(store[0][n]) for n in names), *batch]
        try:
            with torch.no_grad(), _other_draws(device):
                gm = trace(body, inputs)
            _set_store_state(store)
            _set_rng_state(rng0)
            with torch.no_grad():
                got = gm(*inputs)[0]
            if not _close(got, expected):
                raise CannotCompile("the traced evaluation does not reproduce the eager one")
            fn: Callable = gm
            if mode == "inductor":
                fn = _compiled(gm, inputs, device)
        except CannotCompile as exc:
            self.reason = str(exc)
            logger.warning("pyrolvm: the evaluator runs eagerly (not compiled): %s", exc)
            _set_store_state(store)
            _set_rng_state(rng1)
            return expected
        except Exception as exc:  # inductor's own failures
            self.reason = _reason(exc)
            logger.warning("pyrolvm: the evaluator runs eagerly (not compiled): %s", self.reason)
            _set_store_state(store)
            _set_rng_state(rng1)
            return expected
        self._programs[key] = (names, fn)
        if mode == "graph":
            _set_rng_state(rng1)
            return expected
        _set_rng_state(rng0)  # inductor: this chunk's numbers are the compiled program's
        cuda = device.type == "cuda"
        with torch.no_grad():
            if cuda:
                torch.compiler.cudagraph_mark_step_begin()
            out = fn(*inputs)[0]
        return out.clone() if cuda else out


def chunk_log_weights(model: Callable, proposal: Callable) -> Callable[..., torch.Tensor]:
    """The evaluator's hook: ``f(objective, *batch, **kwargs)`` returns one
    chunk's log-weights, shape (K, B), ``objective.importance_weights(model, proposal, *batch,
    check_rsample=False).log_w``, from a graph traced once per key (K, the batch's shapes, the
    param store) and replayed or compiled (see the module docstring), without gradients.
    Eager while Pyro's validation is on (the evaluator's first chunk), with keyword
    arguments, in mode ``"off"``, or after a step that could not be traced (one logged line).
    The graphs are kept for the same model and proposal across calls."""
    return _CHUNKS.get((model, proposal), lambda: _ChunkLogWeights(model, proposal))


__all__ = [
    "ENV",
    "MODES",
    "CannotCompile",
    "CompiledStep",
    "chunk_log_weights",
    "compile_mode",
    "has_cpp_compiler",
    "loss_and_grads",
    "resolve_mode",
    "trace",
    "update",
]
