"""One SVI fit: Adam (with an optional learning-rate schedule) and one call of
:func:`pyrolvm.inference.train`, the stage every run kind is made of at least once."""

from collections.abc import Callable
from typing import Any

from pyro.infer import ELBO

from ..inference import make_scheduled_optim, train
from ..inference.batches import Data


def fit_svi(
    model: Callable,
    guide: Callable,
    data: Data,
    loss: ELBO | None = None,
    *,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    lr_schedule: str = "constant",
    epochs: int = 1,
    **train_options: Any,
) -> dict[str, list]:
    """Fit ``model``/``guide`` to ``data`` with Adam (Kingma & Ba 2015; ``lr``, ``betas``,
    ``eps``; ``lr_schedule`` ``"burda"`` for the 8 stages of Burda et al. 2016 over
    ``epochs``, :func:`~pyrolvm.inference.make_scheduled_optim`) by
    :func:`pyrolvm.inference.train` with ``loss`` (default ``Trace_ELBO``) and
    ``train_options`` (``batch_size``, ``transform``, ``callback``, ``checkpoint``,
    ``resume_from``, ...).

    Returns:
        dict: :func:`~pyrolvm.inference.train`'s per-epoch curves.

    Raises:
        ConfigError, DataError, TrainingDiverged, Interrupted: as
            :func:`~pyrolvm.inference.train`; a non-positive ``lr`` or an unknown schedule.
    """
    optim = make_scheduled_optim(lr, betas, eps, lr_schedule, epochs)
    return train(model, guide, data, loss, optim, epochs=epochs, **train_options)
