"""Runs compose the parts: config -> data -> model + guide -> stages -> evaluate -> run folder
(config.json, metrics.json, checkpoint.pt, PNG figures). Each kind of run is a short
declaration (:class:`RunKind`: its config, parts, stages, evaluation, figures and summary
rows) registered in :data:`RUNS`; the run template (``pyrolvm.runs.template``) does the
rest, the ``pyrolvm`` command is generated from the registry, and so are this package's
``train_KIND`` / ``evaluate_KIND`` functions and config classes: each command is one Python
call here (``pyrolvm compare`` is :func:`compare_runs`, ``--config`` :func:`load_config`,
``--seeds`` :func:`train_seeds`). Every module of this package is imported, so that its kinds
register."""

import importlib
import pkgutil

from ..compare import Comparison, RunRecord, compare_runs
from ..fitting import MixtureFit, fit_mixture
from .autoregressive import AutoregressiveConfig, evaluate_autoregressive
from .config import Range, RunConfig, validate
from .config_files import load_config
from .objective import ObjectiveConfig
from .registry import RUNS, Run, RunKind, Stage, evaluate_run, load_run, register, train_seeds
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
    "Comparison",
    "DATASET_DEFAULTS",
    "MixtureFit",
    "ObjectiveConfig",
    "RUNS",
    "Range",
    "Run",
    "RunConfig",
    "RunKind",
    "RunRecord",
    "Stage",
    "compare_runs",
    "evaluate_autoregressive",
    "evaluate_run",
    "load_config",
    "load_run",
    "fit_mixture",
    "register",
    "train_seeds",
    "validate",
]
__all__ += sorted(KIND_EXPORTS)  # pyright: ignore[reportUnsupportedDunderAll]
