"""The settings every run kind shares (:class:`RunConfig`), declared as
:mod:`pyrolvm.settings` declares settings: typed fields with their defaults, choices, bounds
and help, from which the command line, ``config.json`` and the error messages come.
"""

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Literal

from typing_extensions import Self

from ..devices import resolve_device
from ..errors import ConfigError
from ..settings import Count, PositiveFloat, Range, Sizes, flag, validate


@dataclass
class RunConfig:
    """The settings every run kind shares. A subclass declares its own fields (type, default,
    docstring as help) and ``DATASET_DEFAULTS``: per dataset, the values of fields left
    ``None`` (``"digits"`` also serves .npz files)."""

    DATASET_DEFAULTS: ClassVar[dict] = {"digits": {}}

    dataset: str = "digits"
    """digits, mnist, or an .npz file with arrays train and test of shape (N, D) in [0, 1]"""
    data_root: str | None = None
    """folder holding MNIST/raw/ (default: $PYROLVM_DATA_ROOT)"""
    seed: int = 0
    """seed of every random draw of the run"""
    out: str = ""
    """the run folder (each kind declares its default, runs/KIND)"""
    progress: bool = True
    """show progress bars"""
    resume: bool = False
    """continue the interrupted run in --out from its checkpoint (same settings)"""
    overwrite: bool = False
    """replace the run already in --out"""
    device: str = "auto"
    """auto (CUDA when available), cpu, cuda or cuda:N: where the model, guide and data live"""
    nproc: Count = 1
    """processes of a data-parallel run: N > 1 launches `torchrun --standalone
    --nproc-per-node N` on this machine (gloo on CPU, NCCL on GPUs, one GPU per process);
    ignored when already under torchrun"""
    compile: Literal["auto", "inductor", "graph", "off"] = "auto"
    """the SVI step and the evaluator's chunks traced once per shape and replayed (graph,
    bitwise equal to off) or compiled by inductor (CUDA graphs on a GPU); off: Pyro's eager
    step; auto: inductor where a C++ compiler (CPU) or Triton (CUDA) is present, else graph
    ($PYROLVM_COMPILE, if set)"""
    tensorboard: bool = True
    """write TensorBoard event files in the run folder (scalars per step and epoch, the
    figures, the settings; `tensorboard --logdir runs`); without the tensorboard package, one
    warning"""

    def resolve_defaults(self, values: dict) -> None:
        """Hook for defaults that depend on other fields; ``values`` is the dict of fields,
        changed in place."""

    def check(self) -> None:
        """Hook for rules that join several fields; raises :class:`~pyrolvm.ConfigError`."""

    def epochs_fixed_because(self) -> str:
        """Hook: why these settings keep a run from being extended with more ``--epochs``
        (e.g. a learning-rate schedule spread over them); ``""``: they do not."""
        return ""

    def resolved(self) -> Self:
        """A validated copy with every ``None`` replaced by the dataset's default.

        Raises:
            ConfigError: a field outside its declared type, choices or bounds.
        """
        table = self.DATASET_DEFAULTS.get(self.dataset, self.DATASET_DEFAULTS["digits"])
        values = dataclasses.asdict(self)
        for key, value in table.items():
            if values[key] is None:
                values[key] = value
        self.resolve_defaults(values)
        config = validate(type(self)(**values))
        if not config.out:
            raise ConfigError(
                "the run folder (--out) must be a non-empty path: give --out DIR (a run "
                'kind declares its default with a field `out: str = "runs/KIND"`)'
            )
        resolve_device(config.device)  # a clear error now for a device this machine lacks
        config.check()
        return config


__all__ = ["Count", "Literal", "PositiveFloat", "Range", "RunConfig", "Sizes", "flag", "validate"]
