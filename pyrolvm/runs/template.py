"""The run template: what every kind of run does, written once.

``train``: the settings resolved and validated; the data loaded and checked; the parts built
(param store cleared, seeded) before the folder opens, so that a setting the parts refuse
writes nothing; the folder opened (:func:`pyrolvm.folders.run_folder`); ``config.json``; the
stages in order, each checkpointed in one layout; a stop recorded; the report, the figures,
``metrics.json``. ``evaluate``: the parts rebuilt with the checkpoint's state and scored.

**The checkpoint** (``checkpoint.pt``, read with ``torch.load(weights_only=True)``)::

    {"kind", "config", "layout": 2,
     "stage": the stage in progress (the last one, once the run is complete),
     "epoch": its epochs done, "train": its resumable state,
     "stages": {name: result} of the stages finished before it,
     "parts": {name: state_dict or tensors} of every part, "complete": bool}

A stage resumes from its state; a finished stage is not run again (its result comes from the
checkpoint); the last stage runs again from its final state when a complete run is resumed
(retraining nothing, or extending it to more ``--epochs``).
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyro
import torch
from torch import nn

from ..devices import resolve_device
from ..errors import ConfigError, Interrupted, TrainingDiverged
from ..fitting.svi import fit_svi
from ..folders import (
    CHECKPOINT,
    POINTWISE,
    extended,
    fingerprint,
    load_checkpoint,
    run_folder,
    save_checkpoint,
    write_json,
)
from ..inference import distributed, rng_state, set_rng_state
from ..tracking import Tracker
from .common import format_summary, record_stop

#: The checkpoint layout written by this template.
LAYOUT = 2


@dataclass(frozen=True)
class Stage:
    """One resumable stage of a run: ``fit(run)`` trains from ``run.resume`` (its saved state,
    or ``None``), passes its states to ``run.save`` and returns its result (plain values and
    tensors: the checkpoints of the later stages keep it)."""

    name: str
    fit: Callable[[Run], Any]


class Run:
    """A run being trained or evaluated: what the functions a kind declares receive.

    Attributes:
        kind (RunKind): its declaration; ``cfg`` its resolved config.
        data (pyrolvm.data.Dataset): the data, on ``device`` (``torch.device``).
        folder (str or None): the run folder (``None`` before it is opened).
        saved (dict or None): the checkpoint resumed or evaluated.
        evaluating (bool): reloaded by ``pyrolvm evaluate``, with the ``options`` given.
        parts (dict): the modules (or dicts of tensors) the checkpoint saves, by name.
        results (dict): the results of the stages finished so far, by name.
        stage (str or None): the stage in progress; ``resume`` its saved state.
        extra (dict): what a kind's functions hand each other (e.g. masks, imputations);
            a kind's ``score`` puts ``extra["test_log_likelihood"] = (log_likelihood, test)``
            (the per-datapoint estimates, shape (N,), and the test data scored) for the
            template to save them (``test_log_likelihood.pt``: ``pyrolvm compare``'s paired
            differences).
        tracker: the run's TensorBoard writer (``pyrolvm.tracking.Tracker``).
    """

    def __init__(self, kind, cfg, data, saved=None, evaluating=False, options=None):
        self.kind, self.cfg, self.data = kind, cfg, data
        self.device = resolve_device(cfg.device)
        self.folder: str | None = None
        self.saved, self.evaluating, self.options = saved, evaluating, dict(options or {})
        self.config_dict = dataclasses.asdict(cfg) | {"data_dim": data.data_dim}
        self.parts: dict[str, Any] = {}
        self.results: dict[str, Any] = {}
        self.extra: dict[str, Any] = {}
        self.stage: str | None = None
        self.resume: dict | None = None
        self.state: dict | None = None
        self.tracker = Tracker("", enabled=False)

    def add(self, name: str, part: Any) -> Any:
        """Register ``part`` (an ``nn.Module``, moved to ``device``, or a dict of tensors) as
        ``name``, with the state the checkpoint holds for it; returns it."""
        saved = (self.saved or {}).get("parts", {}).get(name)
        if isinstance(part, nn.Module):
            part.to(self.device)
            if saved is not None:
                part.load_state_dict(saved)
        elif saved is not None:
            part = saved
        self.parts[name] = part
        return part

    def save(self, state: dict) -> None:
        """Checkpoint the stage in progress with its resumable ``state``."""
        self.state = state
        self.write_checkpoint(complete=False)
        self.tracker.epochs(self.stage, self.history())

    def history(self) -> dict:
        """The per-epoch curves of the stage in progress, as its last saved state holds them."""
        state = self.state or {}
        return state.get("history") or (state.get("train") or {}).get("history") or {}

    def write_checkpoint(self, complete: bool) -> None:
        """Write ``checkpoint.pt`` in the template's layout (see the module's docstring)."""
        assert self.folder is not None
        parts = dict((self.saved or {}).get("parts", {}))
        for name, part in self.parts.items():
            parts[name] = part.state_dict() if isinstance(part, nn.Module) else part
        history = self.history()
        checkpoint = {"kind": self.kind.name, "config": self.config_dict, "layout": LAYOUT}
        checkpoint |= {"stage": self.stage, "epoch": len(history.get("train_elbo", []))}
        stages = {k: v for k, v in self.results.items() if k != self.stage}
        checkpoint |= {"train": self.state, "stages": stages, "parts": parts}
        save_checkpoint(os.path.join(self.folder, CHECKPOINT), checkpoint | {"complete": complete})

    def trial(self, model: Callable, guide: Callable, loss: Any, *batch: Any) -> None:
        """One ``loss.loss_and_grads`` at ``batch`` on deep copies of ``model`` and ``guide``
        (their parameters, baselines and gradients untouched): what the objective, the guide
        or the model refuses raises here (for a kind's ``check``)."""
        model, guide = copy.deepcopy((model, guide))
        loss.loss_and_grads(model, guide, *batch)

    @property
    def hooks(self) -> dict[str, Any]:
        """What a fitting function takes to run as the stage in progress: ``progress``,
        ``checkpoint`` (:meth:`save`) and ``resume_from`` (``resume``)."""
        return dict(progress=self.cfg.progress, checkpoint=self.save, resume_from=self.resume)

    def fit(self, model: Callable, guide: Callable, data: Any, loss: Any = None, **options):
        """One :func:`~pyrolvm.fitting.fit_svi` call as this stage (with :attr:`hooks`, and
        the tracker's per-step scalars)."""
        hook = self.tracker.step_hook(self.stage, loss) if self.tracker.active else None
        return fit_svi(model, guide, data, loss, **self.hooks, step_callback=hook, **options)


def make_config(kind: Any, config: Any, overrides: dict) -> Any:
    """``config`` (default: the kind's) with ``overrides``, resolved and validated (else
    :class:`ConfigError`)."""
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(kind.config)})
    if unknown:
        others = sorted({k for name in unknown for k in kind.elsewhere(name)})
        raise ConfigError(
            f"a {kind.name} run has no setting {', '.join(map(repr, unknown))}"
            + (f" (a setting of {', '.join(others)} runs)" if others else "")
        )
    return dataclasses.replace(config or kind.config(), **overrides).resolved()


def build(run: Run) -> None:
    """The kind's parts (``kind.build(run)``), registered with ``run.add``; for a new run,
    ``kind.check(run)`` on them, the random state and Pyro's param store restored after."""
    for name, part in (run.kind.build(run) if run.kind.build else {}).items():
        run.add(name, part)
    if run.kind.check is not None and not run.evaluating and run.saved is None:
        rng = rng_state()
        try:
            run.kind.check(run)
        finally:
            pyro.clear_param_store()
            set_rng_state(rng)


def of_this_layout(state: dict, folder: str) -> dict:
    """``state``, a checkpoint of this template's layout (else :class:`ConfigError`)."""
    if state.get("layout") != LAYOUT:
        raise ConfigError(
            f"{folder!r} was written by an earlier version of pyrolvm, whose checkpoints this "
            "one cannot read: use that version, or start a new run with another --out"
        )
    return state


def train_run(kind: Any, config: Any = None, data: Any = None, **overrides: Any) -> dict:
    """Train a run of ``kind`` and write its folder; see the module's docstring."""
    cfg = make_config(kind, config, overrides)
    run = Run(kind, cfg, kind.load_data(cfg, data))
    pyro.clear_param_store()
    pyro.set_rng_seed(cfg.seed)
    build(run)
    fixed = cfg.epochs_fixed_because() if kind.extendable else ""
    extendable = ("epochs",) if kind.extendable and not fixed else ()
    with run_folder(
        cfg.out, kind.name, run.config_dict, cfg.resume, cfg.overwrite, extendable, fixed
    ) as (folder, saved):
        run.folder, run.saved = folder, saved and of_this_layout(saved, folder)
        for name, part in list(run.parts.items()):
            run.add(name, part)  # with the checkpoint's state
        if extended(saved, run.config_dict):  # a new run, or one given more --epochs
            write_json(os.path.join(folder, "config.json"), {"kind": kind.name, **run.config_dict})
        stages = kind.stage_list(cfg)
        track = cfg.tensorboard and distributed.is_main()
        run.tracker = Tracker(folder, track, len(stages))
        try:
            metrics = run_stages(run, stages, folder)
        finally:
            run.tracker.close()
    return metrics


def train_seeds(kind: Any, seeds: Any, config: Any = None, data: Any = None, **overrides) -> dict:
    """The run of ``kind`` with ``config`` and ``overrides`` once per seed of ``seeds``, into
    ``OUT/seed-N`` (``OUT`` its ``out``): ``pyrolvm train KIND ... --seeds 0,1,2``;
    ``pyrolvm compare OUT`` then reports each figure's mean and s.d. across the seeds.
    Returns ``{seed: metrics}``.

    Raises:
        ConfigError: no seed, a seed given twice, ``OUT`` holding a run; as :func:`train_run`.
    """
    cfg = make_config(kind, config, overrides)
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) < len(seeds) or min(seeds) < 0:
        raise ConfigError(f"--seeds takes distinct seeds >= 0, e.g. --seeds 0,1,2 (got {seeds})")
    if any(os.path.exists(os.path.join(cfg.out, f)) for f in ("config.json", CHECKPOINT)):
        raise ConfigError(
            f"{cfg.out!r} holds a run; a sweep writes its runs into OUT/seed-N: choose another "
            "--out"
        )
    out = {}
    for seed in seeds:
        folder = os.path.join(cfg.out, f"seed-{seed}")
        out[seed] = train_run(kind, dataclasses.replace(cfg, seed=seed, out=folder), data)
    return out


def run_stages(run: Run, stages: list[Stage], folder: str) -> dict:
    """The stages of ``run`` in its opened ``folder`` (those finished before taken from the
    checkpoint), then its report, figures, ``test_log_likelihood.pt`` and ``metrics.json``."""
    kind = run.kind
    try:
        for stage in stages:
            if stage.name in (run.saved or {}).get("stages", {}):  # finished before
                run.results[stage.name] = run.saved["stages"][stage.name]
                continue
            ongoing = run.saved and run.saved["stage"] == stage.name
            run.stage, run.resume = stage.name, run.saved["train"] if ongoing else None
            run.state = run.resume
            run.tracker.resumed(stage.name, run.history())  # (its epochs were written)
            run.results[stage.name] = stage.fit(run)
    except (TrainingDiverged, Interrupted) as exc:
        raise record_stop(folder, exc) from None
    run.write_checkpoint(complete=True)
    metrics = {"status": "ok", "complete": True, **kind.report(run)}
    if kind.figures is not None:
        metrics["figures"] = kind.figures(run, metrics)
    if "test_log_likelihood" in run.extra:
        ll, test = run.extra["test_log_likelihood"]
        pointwise = {"log_likelihood": ll.detach().to("cpu", torch.float64)}
        save_checkpoint(os.path.join(folder, POINTWISE), pointwise | fingerprint(test))
    write_json(os.path.join(folder, "metrics.json"), metrics)
    run.tracker.finish(run.config_dict, metrics, folder)
    return metrics


def reload(kind: Any, folder: str, data_root=None, progress=True, device="auto", **options) -> Run:
    """The run in ``folder`` (of ``kind``) rebuilt as ``pyrolvm evaluate`` rebuilds it: its
    settings (with ``options``, the kind's ``evaluate_options``, overriding them), its data
    and its parts with the checkpoint's state.

    Raises:
        ConfigError: no valid checkpoint, one of another kind or layout, an option the kind
            does not take, or a run stopped before its last stage.
    """
    state = of_this_layout(load_checkpoint(folder), folder)
    if state["kind"] != kind.name:
        raise ConfigError(f"{folder!r} holds a {state['kind']!r} run, not a {kind.name!r} run")
    given = {k: v for k, v in options.items() if v is not None}
    extra = sorted(set(given) - set(kind.evaluate_options))
    if extra:
        flags = ", ".join("--" + e.replace("_", "-") for e in extra)
        raise ConfigError(f"{flags} does not apply to runs of kind {kind.name!r}")
    cfg = kind.config(**{k: v for k, v in state["config"].items() if k != "data_dim"})
    overrides = dict(data_root=data_root or cfg.data_root, progress=progress, device=device)
    cfg = dataclasses.replace(cfg, **overrides, **given).resolved()
    if not state["complete"] and state["stage"] != kind.stage_list(cfg)[-1].name:
        raise ConfigError(
            f"the {kind.name} run in {folder} stopped before it finished (in its stage "
            f"{state['stage']!r}): continue it with the same command and --resume, then "
            "evaluate it"
        )
    run = Run(kind, cfg, kind.load_data(cfg, None), saved=state, evaluating=True, options=given)
    run.folder = folder
    pyro.clear_param_store()
    build(run)
    return run


def evaluate_folder(kind: Any, folder: str, *args: Any, **options: Any) -> dict:
    """The test figures of the run in ``folder`` (:func:`reload`), recomputed."""
    return kind.score(reload(kind, folder, *args, **options))


def default_report(run: Run) -> dict:
    """``metrics.json`` of a kind that declares no report: its test figures (``score``) and,
    when its last stage is one training call, ``epochs``, ``train_elbo`` (the last epoch's)
    and the per-epoch ``curves``."""
    history = run.results[run.kind.stage_list(run.cfg)[-1].name]
    metrics = run.kind.score(run)
    if isinstance(history, dict) and history.get("train_elbo"):
        metrics |= {"epochs": len(history["train_elbo"]), "train_elbo": history["train_elbo"][-1]}
        metrics["curves"] = history
    return metrics


def summary(kind: Any, metrics: dict, cfg: Any, folder: str) -> str:
    """The table ``pyrolvm train`` prints: the kind's title and rows, then the run folder."""
    cfg = cfg.resolved()
    files = ["config.json", "metrics.json", CHECKPOINT, *metrics.get("figures", [])]
    rows = kind.summary_rows(metrics, cfg) + [("run folder", f"{folder}  ({', '.join(files)})")]
    return format_summary(kind.title(metrics, cfg), rows)
