"""The registry of run kinds: ``pyrolvm train KIND`` and ``pyrolvm evaluate RUN`` for every
kind come from it, and a checkpoint's ``kind`` finds its evaluation."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from .common import load_checkpoint


@dataclass(frozen=True)
class RunKind:
    """One kind of run.

    Attributes:
        name (str): the command (``pyrolvm train NAME``) and the checkpoint's ``kind``.
        config (type): its :class:`~pyrolvm.runs.config.RunConfig` subclass; the CLI flags are
            generated from it.
        train (callable): ``train(config) -> metrics``, writes the run folder.
        evaluate (callable): ``evaluate(folder, data_root=None, progress=True,
            device="auto", **options) -> metrics``, recomputes the test figures from the checkpoint.
        summary (callable): ``summary(metrics, config, folder) -> str``, printed after training.
        evaluation_rows (callable): ``evaluation_rows(metrics) -> [(label, value)]``, printed
            by ``pyrolvm evaluate``.
        description (str): one line for ``--help``.
        evaluate_options (tuple of str): the options of ``evaluate`` beyond the data root
            (e.g. ``("eval_samples",)``).
    """

    name: str
    config: type
    train: Callable
    evaluate: Callable
    summary: Callable
    evaluation_rows: Callable
    description: str
    evaluate_options: tuple = ()


#: Run kinds by name, in the order ``pyrolvm train --help`` lists them.
RUNS = {}


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
    given = {k: v for k, v in options.items() if v is not None}
    extra = sorted(set(given) - set(kind.evaluate_options))
    if extra:
        flags = ", ".join("--" + e.replace("_", "-") for e in extra)
        raise ConfigError(f"{flags} does not apply to runs of kind {name!r}")
    return kind, kind.evaluate(
        folder, data_root=data_root, progress=progress, device=device, **given
    )
