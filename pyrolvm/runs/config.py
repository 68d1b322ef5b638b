"""The settings every run kind shares (:class:`RunConfig`), those most kinds share
(:class:`Networks`, :class:`Training`, :class:`Evaluation`) and the groups of ``--help``
(:func:`group_of`), declared as :mod:`pyrolvm.settings` declares settings."""

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Literal

from typing_extensions import Self

from ..devices import resolve_device
from ..errors import ConfigError
from ..settings import Count, PositiveFloat, Range, Sizes, Switch, flag, validate

#: The groups of ``pyrolvm train KIND --help``, in order.
GROUP_ORDER = ("data", "model", "objective", "training", "evaluation", "run folder")


@dataclass
class RunConfig:
    """The settings every run kind shares. A subclass declares its own fields (type, default,
    docstring as help), ``DATASET_DEFAULTS`` (per dataset, the values of fields left ``None``;
    ``"digits"`` also serves .npz files) and ``GROUPS``, the ``--help`` group of those of its
    fields that are not in ``"model"`` (added to its bases')."""

    DATASET_DEFAULTS: ClassVar[dict] = {"digits": {}}
    GROUPS: ClassVar[dict[str, tuple[str, ...]]] = {
        "data": ("dataset", "data_root", "binarize", "train_size"),
        "training": ("seed", "epochs", "batch_size", "lr", "device", "nproc", "compile"),
        "evaluation": ("eval_samples", "eval_batch_size"),
        "run folder": ("out", "progress", "resume", "overwrite", "tensorboard"),
    }

    dataset: str = "digits"
    """digits, mnist, or an .npz file"""
    data_root: str | None = None
    """holds MNIST/raw/ (default: $PYROLVM_DATA_ROOT)"""
    seed: int = 0
    """seed of every random draw"""
    out: str = ""
    """the run folder"""
    progress: bool = True
    """show progress bars (--no-progress: hide them)"""
    resume: bool = False
    """continue the run in --out (same settings)"""
    overwrite: bool = False
    """replace the run in --out"""
    device: str = "auto"
    """auto (CUDA if any), cpu, cuda, cuda:N"""
    nproc: Count = 1
    """data-parallel processes (N > 1: torchrun)"""
    compile: Literal["auto", "inductor", "graph", "off"] = "auto"
    """the SVI step"""
    tensorboard: bool = True
    """TensorBoard event files in --out"""

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


@dataclass
class Networks:
    """Latent and hidden sizes (``None``: the kind's ``DATASET_DEFAULTS``)."""

    latent_dim: Count | None = None
    """latent dimensions"""
    hidden: Sizes | None = None
    """hidden layer sizes"""


@dataclass
class Training:
    """Adam's passes, minibatch and learning rate (``None``: the kind's ``DATASET_DEFAULTS``)."""

    epochs: Count | None = None
    """passes over the data"""
    batch_size: Count | None = None
    """datapoints per step"""
    lr: PositiveFloat | None = None
    """Adam learning rate"""


@dataclass
class Evaluation:
    """The importance-sampled evaluation on the test set."""

    eval_samples: Count = 1000
    """importance samples K of the test NLL"""
    eval_batch_size: Count = 100
    """test datapoints per evaluation call"""


def group_of(config: type, name: str) -> str:
    """The ``--help`` group of the field ``name`` of the config class ``config``: the first
    ``GROUPS`` along its bases that names it, else ``"model"``."""
    for cls in config.__mro__:
        for group, names in cls.__dict__.get("GROUPS", {}).items():
            if name in names:
                return group
    return "model"


__all__ = [
    "Count",
    "Evaluation",
    "GROUP_ORDER",
    "Literal",
    "Networks",
    "PositiveFloat",
    "Range",
    "RunConfig",
    "Sizes",
    "Switch",
    "Training",
    "flag",
    "group_of",
    "validate",
]
