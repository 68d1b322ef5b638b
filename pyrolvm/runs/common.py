"""What the run template shares with the kinds: the run's data, the record of a stopped
run, the summary table; the run folder's files (:mod:`pyrolvm.folders`)."""

import os
from typing import Any

import torch

from ..data import Dataset, check_data, load
from ..errors import Interrupted, PyroLVMError, TrainingDiverged
from ..folders import (
    CHECKPOINT,
    EVENTS,
    POINTWISE,
    fingerprint,
    load_checkpoint,
    read_json,
    run_folder,
    write_json,
)

__all__ = ["CHECKPOINT", "EVENTS", "POINTWISE", "fingerprint", "format_summary", "load_checkpoint"]
__all__ += ["load_data", "on_device", "read_json", "record_stop", "run_folder", "write_json"]


def record_stop(folder: str, exc: Interrupted | TrainingDiverged) -> PyroLVMError:
    """Write ``metrics.json`` for a run whose training stopped early (``status`` "diverged" or
    "interrupted", ``complete`` false, the curves so far) and return the error to raise in
    its place, whose message says what the checkpoint holds and how to go on."""
    history = getattr(exc, "history", None) or {}
    done = len(history.get("train_elbo", []))
    if isinstance(exc, Interrupted):
        status = "interrupted"
        message = (
            f"interrupted ({exc}); {os.path.join(folder, CHECKPOINT)} holds the state "
            "at that step: run the same command with --resume to continue"
        )
        error = Interrupted(message, exc.epoch, exc.step)
    else:
        status = "diverged"
        message = f"{exc} (run folder {folder}: checkpoint.pt holds epoch {done})"
        error = TrainingDiverged(message, exc.epoch, exc.step)
    error.history = history
    metrics = {"status": status, "complete": False, "error": str(exc), "epochs": done}
    write_json(os.path.join(folder, "metrics.json"), metrics | {"curves": history, **history})
    return error


def load_data(cfg: Any, binarize: str, data: Dataset | None = None, binary=False) -> Dataset:
    """The run's dataset (``data``, else ``cfg.dataset`` loaded from ``cfg.data_root`` with
    ``binarize`` and ``cfg.seed``), both splits checked (:func:`pyrolvm.data.check_data`;
    ``binary``: values in {0, 1}).

    Raises:
        ConfigError, DataError: as :func:`pyrolvm.data.load` and its check.
    """
    if data is None:
        data = load(cfg.dataset, root=cfg.data_root, binarize=binarize, seed=cfg.seed)
    check_data(data.train, "the training data", binary=binary)
    check_data(data.test, "the test data", binary=binary)
    return data


def on_device(data: Any, device: Any) -> Any:
    """``data`` (a :class:`~pyrolvm.data.Dataset`, or an object with its attributes) with its
    tensors on ``device``, moved once; ``data`` itself when they are already there."""
    return data if data.train.device == torch.device(device) else data.to(device)


def format_summary(title: str, rows: list[tuple[str, str]]) -> str:
    """A two-column text table: ``rows`` is a list of (label, value string)."""
    width = max(len(label) for label, _ in rows)
    lines = [title, "-" * max(len(title), width + 20)]
    lines += [f"{label:<{width}}  {value}" for label, value in rows]
    return "\n".join(lines)
