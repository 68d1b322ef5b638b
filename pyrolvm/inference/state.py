"""The state a training run needs to continue exactly where it stopped, as tensors and plain
Python values only (so that ``torch.load(weights_only=True)`` reads it back): every random
number generator (on CUDA, the run's device's generator), the values in Pyro's param store,
and the optimizer's moments."""

import hashlib
import random
from typing import Any, cast

import numpy as np
import pyro
import torch

from ..errors import ConfigError


def rng_state(device: torch.device | str | None = None) -> dict[str, Any]:
    """The states of torch's CPU, Python's and numpy's global random number generators and,
    for a run on CUDA, of the run's device's generator, as a dict of tensors and tuples.

    Args:
        device (torch.device, str or None): the run's device. On a CUDA device its generator's
            state is kept under ``"cuda"``: one state, that of the run's device, whatever its
            index (not every visible GPU's by position). ``None``: the current CUDA device
            when CUDA is initialized, else none.
    """
    kind, keys, pos, has_gauss, cached = cast(tuple, np.random.get_state())
    state = {
        "torch": torch.get_rng_state(),
        "random": random.getstate(),
        "numpy": (
            kind,
            torch.as_tensor(keys.astype(np.int64)),
            int(pos),
            int(has_gauss),
            float(cached),
        ),
    }
    cuda = _cuda_generator(device)
    if cuda is not None:
        state["cuda"] = cuda.get_state()
    return state


def set_rng_state(state: dict[str, Any], device: torch.device | str | None = None) -> None:
    """Restore the generators from :func:`rng_state`.

    Args:
        state (dict): from :func:`rng_state`.
        device (torch.device, str or None): the device of the run that continues (as in
            :func:`rng_state`). On CUDA its generator takes the saved CUDA state, whichever GPU
            saved it (a run trained on ``cuda:1`` and resumed on ``cuda:0`` continues its
            stream). A state without one (saved by a CPU run) gives the CUDA generator a
            fresh stream seeded from the saved CPU state: the same on every resume, and not
            the stream the run started with. On the CPU a saved CUDA state is not used (the
            CPU generator draws the noise there).
    """
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["random"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    cuda = _cuda_generator(device)
    if cuda is None:
        return
    saved = state.get("cuda")
    if isinstance(saved, torch.Tensor):
        cuda.set_state(saved)
    else:  # a CPU run's state (or an older list of every GPU's, by position: not used)
        digest = hashlib.sha256(state["torch"].numpy().tobytes()).digest()
        cuda.manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def _cuda_generator(device: torch.device | str | None) -> torch.Generator | None:
    """The default CUDA generator of ``device`` (of the current CUDA device for ``None``, when
    CUDA is initialized), or ``None`` for a CPU device."""
    if device is None:
        if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
            return None
        device = torch.device("cuda")
    device = torch.device(device)
    if device.type != "cuda":
        return None
    if not torch.cuda.is_initialized():
        torch.cuda.init()
    index = device.index if device.index is not None else torch.cuda.current_device()
    return torch.cuda.default_generators[index]


def param_state() -> dict[str, torch.Tensor]:
    """The unconstrained values of every parameter in Pyro's param store, ``{name: tensor}``
    (detached copies)."""
    store = pyro.get_param_store()
    # Pyro gives each constrained value an ``unconstrained()`` accessor to its leaf tensor
    return {
        name: cast(Any, store.get_param(name)).unconstrained().detach().clone() for name in store
    }


@torch.no_grad()
def load_param_state(values: dict[str, torch.Tensor]) -> None:
    """Copy saved unconstrained values into the parameters already in Pyro's param store, in
    place (so that modules, optimizers and guides holding them see the new values).

    Raises:
        ConfigError: the saved names are not exactly those in the store, or a shape differs
            (a checkpoint of another model).
    """
    store = pyro.get_param_store()
    names = set(store.keys())
    if names != set(values):
        missing, extra = sorted(set(values) - names), sorted(names - set(values))
        raise ConfigError(
            "the checkpoint's parameters do not match the model and guide: "
            f"{'not created by them: ' + str(missing) if missing else ''}"
            f"{'; ' if missing and extra else ''}"
            f"{'not in the checkpoint: ' + str(extra) if extra else ''}"
        )
    for name, value in values.items():
        target = cast(Any, store.get_param(name)).unconstrained()
        if target.shape != value.shape:
            raise ConfigError(
                f"parameter {name!r} has shape {tuple(target.shape)} but the "
                f"checkpoint holds {tuple(value.shape)}"
            )
        target.copy_(value)
