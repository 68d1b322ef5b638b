"""The state a training run needs to continue exactly where it stopped, as tensors and plain
Python values only (so that ``torch.load(weights_only=True)`` reads it back): every random
number generator, the values in Pyro's param store, and the optimizer's moments."""

import random
from typing import Any, cast

import numpy as np
import pyro
import torch

from ..errors import ConfigError


def rng_state() -> dict[str, Any]:
    """The states of torch's (CPU and, where used, CUDA), Python's and numpy's global random
    number generators, as a dict of tensors and tuples."""
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
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators from :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["random"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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
