"""Experiment tracking: every run writes TensorBoard event files in its folder
(``tensorboard --logdir runs`` shows them all), through ``torch.utils.tensorboard``'s
``SummaryWriter``, whose own thread writes the events the run hands it.

What a run writes (a kind of several stages prefixes each tag with the stage's name,
``codebook/epoch/...``):

- ``step/train BOUND``: every 10 steps (the losses the training loop reads anyway, without a
  host synchronisation of its own), the mean over those steps of the training objective's
  bound per datapoint, named by the bound (:func:`pyrolvm.inference.bound_name`: ``train
  ELBO``, ``train IWAE-5 bound``), so that runs trained under different bounds never share an
  axis; at the global step (the steps of kinds whose stages train through
  :meth:`~pyrolvm.runs.Run.fit`);
- ``epoch/NAME``: each per-epoch curve of the run's history (``train_elbo`` as ``epoch/train
  BOUND``, the objective's bound on the test data as ``epoch/test BOUND``, ``test_elbo``,
  ``seconds``, ...), at the epoch, written when the epoch's checkpoint is;
- at the end: the settings as hyperparameters (TensorBoard's HPARAMS tab), the scalar figures
  of ``metrics.json`` as ``final/NAME`` and the run's figures as images (``figures/NAME``).

Tracking never stops a run and never slows its steps: a missing ``tensorboard`` package or a
writer that fails is one warning (logger ``pyrolvm.tracking``) and the run goes on without it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("pyrolvm.tracking")

#: Events the writer's queue holds before the run waits for its thread (its default, 10,
#: would make the run wait on the disk).
QUEUE = 10_000


def curve_tag(key: str, bound: str | None) -> str:
    """The TensorBoard name of the history curve ``key`` of a run trained under ``bound``:
    ``train_elbo`` is ``train BOUND``, ``test_bound`` ``test BOUND``, the others their key
    (without a ``_curve`` suffix)."""
    if key == "train_elbo":
        return f"train {bound or 'ELBO'}"
    if key in ("test_bound", "test_bound_curve"):
        return f"test {bound or 'bound'}"
    return key.removesuffix("_curve")


class Tracker:
    """The TensorBoard writer of one run folder, or nothing: every method does nothing once
    tracking is off, and the first failure turns it off with one warning.

    Args:
        folder (str): the run folder (the event files go there).
        enabled (bool): the run's ``--tensorboard``.
        stages (int): the number of the kind's stages (more than 1: tags prefixed).
    """

    def __init__(self, folder: str, enabled: bool = True, stages: int = 1) -> None:
        self.writer: Any = None
        self.prefix = stages > 1
        self.logged: dict[str, int] = {}  # epochs written, by stage
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            logger.warning(
                "pyrolvm: the run goes on without TensorBoard event files: the tensorboard "
                "package is not installed (pip install tensorboard; --no-tensorboard to skip)"
            )
            return
        self._guard(lambda: setattr(self, "writer", SummaryWriter(folder, max_queue=QUEUE)))

    @property
    def active(self) -> bool:
        """Whether event files are being written."""
        return self.writer is not None

    def _guard(self, write: Callable[[], Any]) -> None:
        """``write()``; a failure closes the writer, warns once and turns tracking off."""
        try:
            write()
        except Exception as exc:  # a tracker never stops a run: any failure, one warning
            writer, self.writer = self.writer, None
            logger.warning(
                "pyrolvm: TensorBoard tracking stopped (%s: %s); the run goes on without it",
                type(exc).__name__,
                str(exc).splitlines()[0][:200] if str(exc) else "",
            )
            if writer is not None:
                with contextlib.suppress(Exception):  # (its own failure said enough)
                    writer.close()

    def _tag(self, stage: str | None, tag: str) -> str:
        return f"{stage}/{tag}" if self.prefix and stage else tag

    def step_hook(self, stage: str | None, loss: Any) -> Callable[[list[int], list[float]], None]:
        """The ``step_callback`` of :func:`pyrolvm.inference.train` for a stage training
        ``loss`` (``None``: the ELBO): the mean bound of the steps read, at the last of them,
        tagged with the bound's current name (an annealed β changes it every epoch)."""
        from .inference import ELBO_NAME, bound_name

        def hook(steps: list[int], bounds: list[float]) -> None:
            if self.writer is not None:
                name = bound_name(loss) if loss is not None else ELBO_NAME
                tag, mean = self._tag(stage, f"step/train {name}"), sum(bounds) / len(bounds)
                self._guard(lambda: self.writer.add_scalar(tag, mean, steps[-1]))

        return hook

    def resumed(self, stage: str | None, history: dict) -> None:
        """A stage resumed with ``history``: its epochs were written before."""
        self.logged[stage or ""] = len(history.get("train_elbo") or [])

    def epochs(self, stage: str | None, history: dict) -> None:
        """Write the epochs of ``history`` (per-epoch curves) not written yet."""
        if self.writer is None or not history:
            return
        names = history.get("bound_name") or []
        done = len(history.get("train_elbo") or [])
        first = self.logged.get(stage or "", 0)
        first = 0 if done < first else first  # a new training call of the stage (a restart)
        for epoch in range(first, done):
            bound = names[epoch] if epoch < len(names) else None
            for key, values in history.items():
                value = values[epoch] if isinstance(values, list) and epoch < len(values) else None
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    tag = self._tag(stage, f"epoch/{curve_tag(key, bound)}")
                    self._guard(lambda t=tag, v=value, e=epoch: self.writer.add_scalar(t, v, e + 1))
                if self.writer is None:
                    return
        self.logged[stage or ""] = done

    def finish(self, config: dict, metrics: dict, folder: str) -> None:
        """Write the settings as hyperparameters with the scalar figures of ``metrics`` as
        their metrics (``final/NAME``), and the PNG figures ``metrics["figures"]`` in
        ``folder`` as images."""
        if self.writer is None:
            return
        from torch.utils.tensorboard.summary import hparams

        final = {
            f"final/{k}": float(v)
            for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        settings = {
            k: v if isinstance(v, (int, float, str, bool)) or v is None else str(v)
            for k, v in config.items()
        }

        def write_hparams() -> None:
            for summary in hparams(settings, final):
                self.writer.file_writer.add_summary(summary)
            for tag, value in final.items():
                self.writer.add_scalar(tag, value)

        self._guard(write_hparams)
        for name in metrics.get("figures") or []:
            path = os.path.join(folder, name)
            if self.writer is not None and name.endswith(".png") and os.path.exists(path):
                self._guard(lambda p=path, n=name: self._image(p, n))

    def _image(self, path: str, name: str) -> None:
        from matplotlib.image import imread

        image = imread(path)
        if image.ndim == 2:
            image = image[..., None].repeat(3, axis=-1)
        self.writer.add_image(
            f"figures/{name.removesuffix('.png')}", image[..., :3], 0, None, "HWC"
        )

    def close(self) -> None:
        """Flush the events and stop the writer's thread."""
        if self.writer is not None:
            self._guard(self.writer.close)
            self.writer = None
