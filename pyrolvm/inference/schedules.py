"""Learning-rate schedules of published training protocols, as epoch -> factor functions (as
``LambdaLR`` takes them) for :func:`~pyrolvm.inference.make_optim`'s ``lr_lambda`` (stepped
once per epoch by :func:`pyrolvm.inference.train`)."""

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import Any

from ..errors import ConfigError
from .training import make_optim

#: Stages of Burda et al. (2016): stage i lasts 3^i epochs, i = 0..7 (3280 epochs in all).
BURDA_STAGES = 8
BURDA_EPOCHS = sum(3**i for i in range(BURDA_STAGES))  # 3280

#: The ``lr_schedule`` choices of :func:`make_scheduled_optim`.
SCHEDULES: tuple[str, ...] = ("constant", "burda")


def burda_stage_ends(epochs: int) -> list[int]:
    """The last epoch (1-based) of each of the 8 stages when the whole protocol is squeezed
    into ``epochs`` epochs: stage i ends at ``round(epochs * (3^0 + ... + 3^i) / 3280)``, so
    ``epochs = 3280`` gives the paper's 1, 3, 9, ..., 2187 epochs per stage (ends 1, 4, 13,
    ..., 3280) and a fraction F of it keeps the stages' proportions (stages shorter than
    an epoch are skipped)."""
    if int(epochs) < 1:
        raise ConfigError(f"epochs must be >= 1, got {epochs}")
    total = 0
    ends = []
    for i in range(BURDA_STAGES):
        total += 3**i
        ends.append(round(int(epochs) * total / BURDA_EPOCHS))
    ends[-1] = int(epochs)
    return ends


def burda_lr_factor(epochs: int) -> Callable[[int], float]:
    """The factor of the base learning rate in each epoch under Burda et al. (2016),
    section 5 ("Importance Weighted Autoencoders"): ``10^(-i/7)`` during stage i (so 1e-3 falls
    to 1e-4 over the 8 stages when the base rate is 1e-3), with the stages of
    :func:`burda_stage_ends`. The returned function takes the 0-based epoch, as ``LambdaLR``
    does (its counter starts at 0 and :func:`~pyrolvm.inference.train` steps it after every
    epoch)."""
    ends = burda_stage_ends(epochs)

    def factor(epoch: int) -> float:
        stage = min(bisect.bisect_left(ends, int(epoch) + 1), BURDA_STAGES - 1)
        return 10 ** (-stage / 7)

    return factor


def make_scheduled_optim(
    lr: float,
    betas: tuple[float, float],
    eps: float,
    schedule: str = "constant",
    epochs: int = 1,
) -> Any:
    """Adam (:func:`make_optim`) with the learning rate held (``"constant"``) or following
    :func:`burda_lr_factor` over ``epochs`` (``"burda"``: the factor of the epoch, as
    ``LambdaLR`` applies it).

    Raises:
        ConfigError: an unknown schedule or a non-positive learning rate.
    """
    if schedule not in SCHEDULES:
        raise ConfigError(f"unknown lr schedule {schedule!r}: choose one of {', '.join(SCHEDULES)}")
    if schedule == "constant":
        return make_optim(lr, betas, eps)
    return make_optim(lr, betas, eps, lr_lambda=burda_lr_factor(epochs))


__all__ = [
    "BURDA_EPOCHS",
    "BURDA_STAGES",
    "SCHEDULES",
    "burda_lr_factor",
    "burda_stage_ends",
    "make_scheduled_optim",
]
