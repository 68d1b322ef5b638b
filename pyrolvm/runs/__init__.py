"""Runs compose the parts: config -> data -> model + guide -> stages -> evaluate -> run folder.
Each kind is a declaration (:class:`RunKind`) registered in :data:`RUNS`; the run template
does the rest, and the ``pyrolvm`` command, the ``train_KIND`` / ``evaluate_KIND`` functions
and this package's exports come from the registry. Every module here is imported, so that
its kinds register."""

import importlib
import pkgutil

from ..fitting import MixtureFit, fit_mixture
from .autoregressive import AutoregressiveConfig, evaluate_autoregressive
from .config import Range, RunConfig, validate
from .objective import ObjectiveConfig
from .registry import RUNS, Run, RunKind, Stage, evaluate_run, load_run, register
from .vae import DATASET_DEFAULTS
from .vae_family import AmortizedConfig

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

#: The kinds' own names (their config classes, ``train_KIND``, ``evaluate_KIND``).
KIND_EXPORTS = {name: obj for kind in RUNS.values() for name, obj in kind.exports().items()}
globals().update(KIND_EXPORTS)

__all__ = [
    "AmortizedConfig",
    "AutoregressiveConfig",
    "DATASET_DEFAULTS",
    "MixtureFit",
    "ObjectiveConfig",
    "RUNS",
    "Range",
    "Run",
    "RunConfig",
    "RunKind",
    "Stage",
    "evaluate_autoregressive",
    "evaluate_run",
    "load_run",
    "fit_mixture",
    "register",
    "validate",
]
__all__ += sorted(KIND_EXPORTS)  # pyright: ignore[reportUnsupportedDunderAll]
