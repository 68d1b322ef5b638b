"""The registry of run kinds: a kind is a short declaration (:class:`RunKind`), and
``pyrolvm train KIND``, ``pyrolvm evaluate RUN``, the ``train_KIND``/``evaluate_KIND``
functions of :mod:`pyrolvm.runs` and a checkpoint's way back to its evaluation all come from
it, through the run template (:mod:`pyrolvm.runs.template`)."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..devices import resolve_device
from ..errors import ConfigError
from .common import load_checkpoint, load_data, on_device
from .template import Run, Stage, evaluate_folder, summary, train_run

__all__ = ["RUNS", "Run", "RunKind", "Stage", "evaluate_run", "register"]


def default_data(cfg: Any, data: Any = None) -> Any:
    """The run's dataset: ``data``, or ``cfg.dataset`` binarized as ``cfg.binarize`` (default
    dynamic), checked, on the run's device."""
    binarize = getattr(cfg, "binarize", None) or "dynamic"
    return on_device(load_data(cfg, binarize, data), resolve_device(cfg.device))


@dataclass(frozen=True)
class RunKind:
    """One kind of run, declared: what it is made of; the template does the rest.

    Attributes:
        name (str): the command (``pyrolvm train NAME``) and the checkpoint's ``kind``.
        config (type): its :class:`~pyrolvm.runs.config.RunConfig` subclass (the CLI flags).
        description (str): one line for ``--help``.
        build (callable): ``build(run) -> {name: part}``, the modules (or dicts of tensors)
            the checkpoint saves, built from ``run.cfg`` and ``run.data``; a setting the parts
            refuse raises :class:`~pyrolvm.ConfigError` before the run folder opens.
        stages (sequence of Stage, or callable): the stages in order, or ``stages(cfg)``.
        score (callable): ``score(run) -> dict``, the test figures of the trained parts
            (``pyrolvm evaluate``'s, and the training's).
        report (callable or None): ``report(run) -> dict``, ``metrics.json`` after training
            (default: ``score``).
        figures (callable or None): ``figures(run, metrics) -> [file names]``, written into
            ``run.folder``.
        title (callable): ``title(metrics, cfg) -> str``, the printed summary's first line.
        summary_rows (callable or None): ``(metrics, cfg) -> [(label, value)]`` (default: the
            evaluation rows).
        evaluation_rows (callable): ``(metrics) -> [(label, value)]``, printed by
            ``pyrolvm evaluate``.
        data (callable or None): ``data(cfg, data=None) -> Dataset`` (default: ``cfg.dataset``
            binarized as ``cfg.binarize``, on the run's device).
        check (callable or None): ``check(run)``, a trial of the parts on a tiny batch before
            the folder opens (the random state and the param store are restored after it).
        evaluate_options (dict): ``{config field: help}``, the settings ``pyrolvm evaluate``
            may override (``--eval-samples``...).
        extendable (bool): a finished run may be given more ``--epochs`` with ``--resume``.
        tiny (dict): settings of a run of a few seconds on digits, with which the shared
            run-contract test (``tests/runs/test_run_contract.py``) trains, evaluates,
            interrupts and resumes every kind.
        takes_over (tuple): ``(kind, setting, values)`` triples: ``pyrolvm train KIND
            --SETTING VALUE`` with a VALUE among ``values`` is a run of this kind (a family
            split off another kind; its old command lines keep working).
        train, evaluate, summary (callable): generated (``train(config=None, data=None,
            **overrides)``, ``evaluate(folder, data_root=None, progress=True,
            device="auto", **options)``, ``summary(metrics, config, folder)``).
    """

    name: str
    config: type
    description: str = ""
    build: Callable[[Run], dict] | None = None
    stages: Sequence[Stage] | Callable[[Any], Sequence[Stage]] = ()
    score: Callable[[Run], dict] | None = None
    report: Callable[[Run], dict] | None = None
    figures: Callable[[Run, dict], list] | None = None
    title: Callable[[dict, Any], str] = lambda metrics, cfg: ""
    summary_rows: Callable[[dict, Any], list] | None = None
    evaluation_rows: Callable[[dict], list] = lambda metrics: []
    data: Callable[..., Any] | None = None
    check: Callable[[Run], None] | None = None
    evaluate_options: dict[str, str] = field(default_factory=dict)
    extendable: bool = False
    tiny: dict = field(default_factory=dict)
    takes_over: tuple = ()
    train: Callable | None = None
    evaluate: Callable | None = None
    summary: Callable | None = None

    def __post_init__(self):
        py = self.name.replace("-", "_")
        generated = {
            "report": self.report or self.score,
            "summary_rows": self.summary_rows or (lambda m, cfg: self.evaluation_rows(m)),
            "train": self.train or _train_function(self, py),
            "evaluate": self.evaluate or _evaluate_function(self, py),
            "summary": self.summary or (lambda m, cfg, folder: summary(self, m, cfg, folder)),
        }
        for key, value in generated.items():
            object.__setattr__(self, key, value)

    def stage_list(self, cfg: Any) -> list[Stage]:
        """The stages of a run with settings ``cfg``."""
        return list(self.stages(cfg) if callable(self.stages) else self.stages)

    def load_data(self, cfg: Any, data: Any = None) -> Any:
        """The run's data (``data`` or the kind's default loading)."""
        return (self.data or default_data)(cfg, data)

    def elsewhere(self, setting: str) -> list[str]:
        """The other kinds that have ``setting`` (a pointer for a setting this kind lacks)."""
        return [
            k.name
            for k in RUNS.values()
            if k is not self and setting in {f.name for f in dataclasses.fields(k.config)}
        ]

    def exports(self) -> dict[str, Any]:
        """The names :mod:`pyrolvm.runs` exports for this kind: its config class,
        ``train_NAME`` and ``evaluate_NAME`` (``-`` in NAME as ``_``)."""
        py = self.name.replace("-", "_")
        return {
            self.config.__name__: self.config,
            f"train_{py}": self.train,
            f"evaluate_{py}": self.evaluate,
        }


def _train_function(kind: RunKind, py: str) -> Callable:
    def train(config: Any = None, data: Any = None, **overrides: Any) -> dict:
        return train_run(kind, config, data, **overrides)

    train.__name__ = train.__qualname__ = f"train_{py}"
    train.__doc__ = f"""Train a run of kind ``{kind.name}`` ({kind.description}) and write its
    folder: ``pyrolvm train {kind.name}`` in one call.

    Args:
        config ({kind.config.__name__} or None): the settings; keyword ``overrides`` replace
            its fields (e.g. ``train_{py}(epochs=5, out="runs/a")``).
        data (pyrolvm.data.Dataset or None): data to use instead of loading
            ``config.dataset``.

    Writes into ``config.out``: ``config.json``, ``metrics.json``, ``checkpoint.pt`` (rewritten
    after every epoch and on interruption; ``resume`` continues it, bitwise equal to the
    uninterrupted run on the CPU) and the figures. A folder holding another run is refused
    unless ``overwrite`` (cleared first) or ``resume``.

    Returns:
        dict: the metrics written to ``metrics.json``.

    Raises:
        ConfigError, DataError: bad settings or data, or an occupied run folder (nothing is
            written).
        TrainingDiverged: the loss became NaN; the last good checkpoint stays.
        Interrupted: SIGINT/SIGTERM; the checkpoint holds the last step.
    """
    return train


def _evaluate_function(kind: RunKind, py: str) -> Callable:
    def evaluate(
        folder: str,
        data_root: str | None = None,
        progress: bool = True,
        device: str = "auto",
        **options: Any,
    ) -> dict:
        return evaluate_folder(kind, folder, data_root, progress, device, **options)

    names = ", ".join(f"``{o}``" for o in kind.evaluate_options) or "none"
    evaluate.__name__ = evaluate.__qualname__ = f"evaluate_{py}"
    evaluate.__doc__ = f"""Reload a ``{kind.name}`` run folder and recompute its test figures
    (with the run's settings and seed, the numbers of its ``metrics.json``):
    ``pyrolvm evaluate FOLDER``.

    Args:
        folder (str): a folder written by ``train_{py}``.
        data_root (str or None): the data's root, if it moved since the run.
        device (str): where to evaluate (the run's own device is not needed).
        **options: settings to evaluate with instead of the run's ({names}).

    Raises:
        ConfigError: no valid checkpoint in ``folder``, one of another kind, or a run
            stopped before its last stage.
    """
    return evaluate


#: Run kinds by name, in the order ``pyrolvm train --help`` lists them.
RUNS: dict[str, RunKind] = {}


def register(kind: RunKind) -> RunKind:
    """Add a :class:`RunKind` to :data:`RUNS` (done by each run module); returns it."""
    RUNS[kind.name] = kind
    return kind


def evaluate_run(
    folder: str,
    data_root: str | None = None,
    progress: bool = True,
    device: str = "auto",
    **options: Any,
) -> tuple[RunKind, dict]:
    """Reload a run folder of any kind and recompute its test figures.

    Args:
        folder (str): a run folder written by ``pyrolvm train``.
        data_root (str or None): MNIST root, if it moved.
        device (str): where to evaluate: auto, cpu, cuda or cuda:N (any device, whichever the
            run was trained on).
        **options: kind-specific options that are not None (e.g. ``eval_samples`` of a vae run).

    Returns:
        (RunKind, dict of metrics)

    Raises:
        ConfigError: no (valid) checkpoint in ``folder``, an unknown kind, or an option the
            kind does not take.
    """
    state = load_checkpoint(folder)
    name = state.get("kind")
    if name not in RUNS:
        raise ConfigError(
            f"{folder!r} holds a run of unknown kind {name!r}; this version of "
            f"pyrolvm knows {', '.join(RUNS)}"
        )
    kind = RUNS[name]
    metrics = kind.evaluate(
        folder, data_root=data_root, progress=progress, device=device, **options
    )
    return kind, metrics


def evaluate_options() -> dict[str, tuple[Any, str]]:
    """The options of ``pyrolvm evaluate``, ``{name: (type, help)}``: every kind's
    ``evaluate_options``, typed as the config fields they override (the first kind that
    declares one gives its help), each ``None`` by default (the run's own)."""
    out: dict[str, tuple[Any, str]] = {}
    for kind in RUNS.values():
        hints = typing.get_type_hints(kind.config, include_extras=True)
        for name, text in kind.evaluate_options.items():
            out.setdefault(name, (hints[name] | None, text))
    return out
