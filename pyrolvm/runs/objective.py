"""The ``--elbo`` flags of the run kinds that train any objective of
:data:`pyrolvm.inference.ELBOS`: a config inherits :class:`ObjectiveConfig` and builds its
objective with :meth:`ObjectiveConfig.make_objective`."""

from dataclasses import dataclass
from typing import Annotated, Literal

from pyro.infer import ELBO

from ..errors import ConfigError
from ..inference import ANNEALING, ELBOS, FREE_BITS_GROUPS, elbo_options, make_elbo
from .config import Count, PositiveFloat, Range, RunConfig

__all__ = ["ObjectiveConfig"]

NonNegative = Annotated[float, Range(0)]
#: The objectives' options: ``make_elbo``'s keyword -> the config's field.
OPTIONS = dict(beta="beta", anneal="anneal", warmup_epochs="warmup_epochs")
OPTIONS |= dict(free_bits="free_bits", per="free_bits_per", alpha="alpha")
OPTIONS |= dict(mmd_weight="mmd_weight", bandwidth="bandwidth", num_groups="num_groups")


@dataclass
class ObjectiveConfig(RunConfig):
    """A run config with the flags of the training objective (``--elbo`` and its options,
    those of ``pyrolvm.inference.make_elbo``; an option of another objective is refused).
    ``None``: the objective's own default."""

    GROUPS = {"objective": ("elbo", "num_particles", *OPTIONS.values())}

    elbo: Literal[tuple(ELBOS)] = "trace"
    """the training objective"""
    num_particles: Count = 1
    """particles K (miwae, piwae: per group)"""
    beta: NonNegative | None = None
    """--elbo beta, mmd: KL weight (default 1; ciwae: ELBO's, 0.5)"""
    anneal: Literal[ANNEALING] | None = None
    """--elbo beta: KL schedule"""
    warmup_epochs: Count | None = None
    """--elbo beta --anneal: epochs of its rise (default 10)"""
    free_bits: NonNegative | None = None
    """--elbo freebits: free nats of KL (default 0)"""
    free_bits_per: Literal[FREE_BITS_GROUPS] | None = None
    """--elbo freebits: floor of each (default dimension)"""
    alpha: float | None = None
    """--elbo renyi: order alpha (default 0: IWAE)"""
    mmd_weight: NonNegative | None = None
    """--elbo mmd: weight of the MMD (default 1)"""
    bandwidth: PositiveFloat | None = None
    """--elbo mmd: kernel bandwidth (default 1)"""
    num_groups: Count | None = None
    """--elbo miwae, piwae: IWAE bounds M (default 1)"""

    def elbo_options(self, names=None):
        """The objective's options among this config's fields (``make_elbo`` keywords)."""
        values = {key: getattr(self, name) for key, name in OPTIONS.items()}
        return values if names is None else {k: values[k] for k in names if k in values}

    def check_objective(self):
        """Refuse options of another objective, a ``--warmup-epochs`` without ``--anneal``, and
        what ``make_elbo`` refuses (e.g. VIMCO with one particle).

        Raises:
            ConfigError: naming the flags to drop or change.
        """
        given = [k for k, v in self.elbo_options().items() if v is not None]
        extra = [k for k in given if k not in elbo_options(self.elbo)]
        if extra:
            flags = ", ".join("--" + OPTIONS[k].replace("_", "-") for k in extra)
            raise ConfigError(f"--elbo {self.elbo} does not take {flags}")
        if self.warmup_epochs is not None and self.anneal in (None, "none"):
            raise ConfigError("--warmup-epochs needs --anneal linear or --anneal cyclical")
        self.make_objective()

    def make_objective(self) -> ELBO:
        """A fresh instance of the configured objective."""
        return make_elbo(
            self.elbo, self.num_particles, **self.elbo_options(elbo_options(self.elbo))
        )

    def objective_label(self) -> str:
        """``elbo=NAME`` with K and the options given, for summaries."""
        k = f" K={self.num_particles}" if self.num_particles > 1 else ""
        given = {k2: v for k2, v in self.elbo_options().items() if v is not None}
        options = "".join(f", {k2}={v}" for k2, v in given.items())
        return f"elbo={self.elbo}{k}{options}"
