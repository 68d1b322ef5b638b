"""Three structural models with the same joint p(x, y) and different interventional
distributions p(y | do(x)) (Huszár 2019, "ML beyond Curve Fitting: An Intro to Causal
Inference and do-Calculus", the three scripts of its "Three scripts" section).

All three have ``x ~ N(0, 1)``, ``y ~ N(1, 4)``, ``Cov(x, y) = 1``, hence the same
conditional ``p(y | x) = N(1 + x, 3)``; they differ in what causes what:

1. ``"x causes y"``: ``x ~ N(0, 1)``, ``y = x + 1 + sqrt(3) e``: ``p(y | do(x)) = N(1 + x, 3)``.
2. ``"y causes x"``: ``y = 1 + 2 e``, ``x = (y - 1) / 4 + (sqrt(3) / 2) e'``:
   ``p(y | do(x)) = p(y) = N(1, 4)``.
3. ``"confounded"``: ``z ~ N(0, 1)``, ``x = z``, ``y = z + 1 + sqrt(3) e``:
   ``p(y | do(x)) = p(y) = N(1, 4)``.

Each model is ``model(num_samples)``: a ``pyro.plate("data", num_samples)`` with sites
``"x"`` and ``"y"`` (and ``"z"``); ``pyro.poutine.do(model, {"x": value})`` is the
intervention, ``pyro.poutine.condition`` the observation.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pyro
import pyro.distributions as dist
import torch

from ..errors import ConfigError

SQRT3 = math.sqrt(3.0)


def x_causes_y(num_samples: int) -> torch.Tensor:
    """Huszár's script 1: x -> y. Returns y, shape (num_samples,)."""
    with pyro.plate("data", num_samples):
        x = pyro.sample("x", dist.Normal(0.0, 1.0))
        return pyro.sample("y", dist.Normal(x + 1.0, SQRT3))


def y_causes_x(num_samples: int) -> torch.Tensor:
    """Huszár's script 2: y -> x. Returns y, shape (num_samples,)."""
    with pyro.plate("data", num_samples):
        y = pyro.sample("y", dist.Normal(1.0, 2.0))
        pyro.sample("x", dist.Normal((y - 1.0) / 4, SQRT3 / 2))
        return y


def confounded(num_samples: int) -> torch.Tensor:
    """Huszár's script 3: x <- z -> y, with x = z (a point mass). Returns y."""
    with pyro.plate("data", num_samples):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Delta(z))
        return pyro.sample("y", dist.Normal(z + 1.0, SQRT3))


#: The three models by name.
HUSZAR_MODELS: dict[str, Callable[[int], torch.Tensor]] = {
    "x causes y": x_causes_y,
    "y causes x": y_causes_x,
    "confounded": confounded,
}


def conditional_y(x: float) -> dist.Normal:
    """The closed-form observational ``p(y | x) = N(1 + x, 3)``, the same for all three models."""
    return dist.Normal(torch.tensor(1.0 + float(x)), torch.tensor(SQRT3))


def interventional_y(name: str, x: float) -> dist.Normal:
    """The closed-form interventional ``p(y | do(x))`` of model ``name`` (module docstring).

    Raises:
        ConfigError: an unknown model name.
    """
    if name not in HUSZAR_MODELS:
        raise ConfigError(f"unknown model {name!r}: choose one of {', '.join(HUSZAR_MODELS)}")
    if name == "x causes y":
        return conditional_y(x)
    return dist.Normal(torch.tensor(1.0), torch.tensor(2.0))
