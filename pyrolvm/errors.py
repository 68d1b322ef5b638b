"""Errors that pyro-lvm raises for bad input, each with a message that says what to do.

Every error a user can cause (an unknown name, data of the wrong shape, dtype or support,
a missing data root, a diverging run) is a :class:`PyroLVMError`; the command line prints
its message and exits with status 2 instead of showing a traceback.
"""

from __future__ import annotations


class PyroLVMError(Exception):
    """Base class of the errors pyro-lvm raises for bad input or a failed run."""


class ConfigError(PyroLVMError, ValueError):
    """An unknown name or an out-of-range setting (dataset, likelihood, ELBO, sizes)."""


class DataError(PyroLVMError, ValueError):
    """Data that cannot be used: wrong shape or dtype, NaN/inf, outside the likelihood's support,
    or a data root without the expected files."""


class TrainingDiverged(PyroLVMError, RuntimeError):
    """The loss became NaN or infinite during training.

    Attributes:
        epoch (int): the epoch (1-based) in which the loss became non-finite.
        step (int): the global optimization step (1-based) at which it happened.
        history (dict): set by :func:`pyrolvm.inference.train` when it re-raises: the curves of
            the epochs completed before the loss became non-finite.
    """

    history: dict[str, list[float]]

    def __init__(self, message: str, epoch: int | None = None, step: int | None = None) -> None:
        super().__init__(message)
        self.epoch = epoch
        self.step = step


class Interrupted(PyroLVMError):
    """Training stopped on SIGINT or SIGTERM after finishing its current step; the checkpoint
    holds the state at that step, from which the run can be resumed.

    Attributes:
        epoch (int): the epoch (1-based) in progress.
        step (int): the steps of that epoch completed.
        history (dict): the curves of the completed epochs.
    """

    history: dict[str, list[float]]

    def __init__(self, message, epoch=None, step=None):
        super().__init__(message)
        self.epoch = epoch
        self.step = step


class PeerLost(PyroLVMError, RuntimeError):
    """Another process of a distributed launch (``torchrun``) stopped or stopped answering
    during a collective operation: this process stops too (the checkpoint of the last
    completed epoch stays in the run folder)."""
