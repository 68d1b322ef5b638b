"""The registry of run kinds: a kind is a short declaration (:class:`RunKind`); ``pyrolvm
train KIND``, ``pyrolvm evaluate RUN`` and the ``train_KIND`` / ``evaluate_KIND`` functions
come from it, through the run template."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..devices import resolve_device
from ..errors import ConfigError
from .common import load_checkpoint, load_data, on_device
from .template import Run, Stage, default_report, evaluate_folder, reload, summary, train_run
from .template import train_seeds as _train_seeds

__all__ = ["RUNS", "Run", "RunKind", "Stage", "evaluate_run", "load_run", "register", "train_seeds"]


def default_data(cfg: Any, data: Any = None) -> Any:
    """``data``, or ``cfg.dataset`` binarized as ``cfg.binarize`` (default dynamic), checked,
    on the run's device."""
    binarize = getattr(cfg, "binarize", None) or "dynamic"
    return on_device(load_data(cfg, binarize, data), resolve_device(cfg.device))


@dataclass(frozen=True)
class RunKind:
    """One kind of run, declared: what it is made of; the template does the rest.

    Attributes:
        name (str): the command (``pyrolvm train NAME``) and the checkpoint's ``kind``.
        config (type): its :class:`~pyrolvm.runs.RunConfig` subclass (the flags).
        description (str): one line for ``--help``.
        build (callable): ``build(run) -> {name: part}``, the modules (or dicts of tensors)
            the checkpoint saves; what the parts refuse raises before the folder opens.
        stages (sequence of Stage, or callable): the stages in order, or ``stages(cfg)``.
        score (callable): ``score(run) -> dict``, the test figures (``pyrolvm evaluate``'s).
        report (callable or None): ``report(run) -> dict``, ``metrics.json`` after training
            (default: ``score``'s, with the epochs and curves of a one-call last stage).
        figures (callable or None): ``figures(run, metrics) -> [file names]`` it writes.
        title (str or callable): the summary's first line, a format string of the metrics
            and ``cfg``, or ``title(metrics, cfg) -> str``.
        evaluation_rows (tuple or callable): ``pyrolvm evaluate``'s ``(label, value)`` rows,
            format strings of the metrics and ``cfg`` (one naming a missing figure is left
            out), or ``evaluation_rows(metrics) -> [(label, value)]``.
        summary_rows (tuple or callable or None): the rows after training, likewise (``...``
            stands for the evaluation rows; default: those alone).
        data (callable or None): ``data(cfg, data=None) -> Dataset`` (default: ``cfg.dataset``
            binarized as ``cfg.binarize``, on the run's device).
        check (callable or None): ``check(run)``, a trial of the parts before the folder
            opens (:meth:`Run.trial`).
        evaluate_options (dict): ``{config field: help}``, what ``pyrolvm evaluate`` may
            override (``--eval-samples``...).
        extendable (bool): a finished run may be given more ``--epochs`` with ``--resume``.
        tiny (dict): the settings of a run of seconds, for the shared run-contract test.
        takes_over (tuple): ``(kind, setting, values)``: ``pyrolvm train KIND --SETTING
            VALUE`` with VALUE in ``values`` is a run of this kind.
        train, evaluate, summary (callable): generated: ``train(config=None, data=None,
            **overrides)``, ``evaluate(folder, data_root=None, progress=True, device="auto",
            **options)``, ``summary(metrics, config, folder)``.
    """

    name: str
    config: type
    description: str = ""
    build: Callable[[Run], dict] | None = None
    stages: Sequence[Stage] | Callable[[Any], Sequence[Stage]] = ()
    score: Callable[[Run], dict] | None = None
    report: Any = None
    figures: Callable[[Run, dict], list] | None = None
    title: Any = ""
    evaluation_rows: Any = ()
    summary_rows: Any = None
    data: Callable[..., Any] | None = None
    check: Callable[[Run], None] | None = None
    evaluate_options: dict[str, str] = field(default_factory=dict)
    extendable: bool = False
    tiny: dict = field(default_factory=dict)
    takes_over: tuple = ()
    train: Any = None
    evaluate: Any = None
    summary: Any = None

    def __post_init__(self):
        rows, after, title = self.evaluation_rows, self.summary_rows or (...,), self.title
        if not callable(rows):
            rows = lambda m, table=rows: format_rows(table, m)  # noqa: E731
        generated = {
            "report": self.report or default_report,
            "evaluation_rows": rows,
            "summary_rows": after
            if callable(after)
            else lambda m, c: format_rows(after, m, c, rows),
            "title": title if callable(title) else lambda m, cfg: title.format(cfg=cfg, **m),
            "train": self.train or generated_train(self),
            "evaluate": self.evaluate or generated_evaluate(self),
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
        fields = lambda kind: {f.name for f in dataclasses.fields(kind.config)}  # noqa: E731
        return [k.name for k in RUNS.values() if k is not self and setting in fields(k)]

    def exports(self) -> dict[str, Any]:
        """The names :mod:`pyrolvm.runs` exports for this kind: its config class,
        ``train_NAME`` and ``evaluate_NAME`` (``-`` in NAME as ``_``)."""
        py = self.name.replace("-", "_")
        names = (self.config.__name__, f"train_{py}", f"evaluate_{py}")
        return dict(zip(names, (self.config, self.train, self.evaluate), strict=True))


def format_rows(rows: tuple, metrics: dict, cfg: Any = None, evaluation: Any = None) -> list:
    """``rows``, ``(label, value)`` format strings of ``metrics`` and ``cfg``, formatted; a row
    naming a figure ``metrics`` lacks is left out; ``...`` stands for ``evaluation(metrics)``."""
    out = []
    for row in rows:
        if row is ...:
            out += evaluation(metrics) if evaluation is not None else []
            continue
        try:
            out.append(tuple(part.format(cfg=cfg, **metrics) for part in row))
        except KeyError:
            continue
    return out


def generated_train(kind: RunKind) -> Callable:
    """``train_NAME(config=None, data=None, **overrides)`` of ``kind``."""

    def train(config: Any = None, data: Any = None, **overrides: Any) -> dict:
        return train_run(kind, config, data, **overrides)

    py = kind.name.replace("-", "_")
    train.__name__ = train.__qualname__ = f"train_{py}"
    train.__doc__ = f"""``pyrolvm train {kind.name}`` in one call: {kind.description}.

    ``config`` ({kind.config.__name__}, default its defaults) with keyword ``overrides`` of
    its fields (``train_{py}(epochs=5, out="runs/a")``); ``data`` (a
    :class:`~pyrolvm.data.Dataset`) instead of ``config.dataset``. Writes the run folder
    (:doc:`/runs`) and returns the metrics of its ``metrics.json``.

    Raises:
        ConfigError, DataError: bad settings or data, an occupied folder (nothing written).
        TrainingDiverged, Interrupted: the checkpoint keeps the last good state.
    """
    return train


def generated_evaluate(kind: RunKind) -> Callable:
    """``evaluate_NAME(folder, ...)`` of ``kind``."""

    def evaluate(folder, data_root=None, progress=True, device="auto", **options) -> dict:
        return evaluate_folder(kind, folder, data_root, progress, device, **options)

    py = kind.name.replace("-", "_")
    evaluate.__name__ = evaluate.__qualname__ = f"evaluate_{py}"
    names = ", ".join(f"``{o}``" for o in kind.evaluate_options) or "none"
    evaluate.__doc__ = f"""``pyrolvm evaluate FOLDER`` of a ``{kind.name}`` run: its test
    figures recomputed from the checkpoint (with the run's settings, those of its
    ``metrics.json``); ``data_root`` if the data moved, ``device`` where to evaluate,
    ``options`` to evaluate with instead of the run's ({names}).

    Raises:
        ConfigError: no valid checkpoint, another kind, a run stopped before its last stage.
    """
    return evaluate


#: Run kinds by name, in the order ``pyrolvm train --help`` lists them.
RUNS: dict[str, RunKind] = {}


def register(kind: RunKind) -> RunKind:
    """Add a :class:`RunKind` to :data:`RUNS` (done by each run module); returns it."""
    RUNS[kind.name] = kind
    return kind


def load_run(folder: str, data_root=None, device="auto", **options: Any) -> Run:
    """The run in ``folder``, of any kind, rebuilt as ``pyrolvm evaluate`` rebuilds it
    (:class:`Run`: its resolved settings ``cfg``, its ``data`` and its ``parts``, e.g. the
    trained ``parts["model"]`` and ``parts["guide"]``, on ``device``); ConfigError as
    :func:`evaluate_run`."""
    return reload(kind_of(folder), folder, data_root, False, device, **options)


def kind_of(folder: str) -> RunKind:
    """The :class:`RunKind` of the run in ``folder`` (ConfigError: no valid checkpoint, or
    an unknown kind)."""
    name = load_checkpoint(folder).get("kind")
    if name not in RUNS:
        raise ConfigError(
            f"{folder!r} holds a run of unknown kind {name!r}; this version of pyrolvm knows "
            f"{', '.join(RUNS)}"
        )
    return RUNS[name]


def evaluate_run(folder: str, data_root=None, progress=True, device="auto", **options: Any):
    """Reload a run folder of any kind and recompute its test figures (``options``: those of
    the kind's ``evaluate_options`` that are not None, e.g. ``eval_samples``).

    Returns:
        (RunKind, dict of metrics)

    Raises:
        ConfigError: no (valid) checkpoint in ``folder``, an unknown kind, or an option the
            kind does not take.
    """
    kind = kind_of(folder)
    metrics = kind.evaluate(
        folder, data_root=data_root, progress=progress, device=device, **options
    )
    return kind, metrics


def train_seeds(kind: str, seeds: Any, config: Any = None, data: Any = None, **overrides: Any):
    """``pyrolvm train KIND ... --seeds 0,1,2`` in one call: the run of kind ``kind`` (a name of
    :data:`RUNS`) with ``config`` and ``overrides`` once per seed, into ``OUT/seed-N``;
    returns ``{seed: metrics}`` (``pyrolvm.runs.compare_runs(OUT)``: mean and s.d. across the
    seeds).

    Raises:
        ConfigError: an unknown kind, no or repeated seeds, ``OUT`` holding a run; as
            ``train_KIND``.
    """
    if kind not in RUNS:
        raise ConfigError(f"unknown run kind {kind!r}: choose one of {', '.join(RUNS)}")
    return _train_seeds(RUNS[kind], seeds, config, data, **overrides)
