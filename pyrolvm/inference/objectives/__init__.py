"""Objectives: ``pyro.infer.ELBO`` subclasses usable as ``SVI(model, guide, optim, loss=...)``,
and the registry of them by the names the command line uses.

Every ``loss`` is the negative bound summed over the batch plate (nats), like
``Trace_ELBO``'s. The multi-sample objectives share :class:`MultiSampleELBO`, which owns the
vectorized particles and the per-datapoint log-weights of shape (K, B); each of
:class:`IWAE`, :class:`DReG`, :class:`STL`, :class:`VIMCO` is the few lines that make it
different. The objectives of the loss-as-intervention family (:class:`BetaELBO`,
:class:`FreeBitsELBO`, :class:`MMDELBO`, :class:`Renyi`, :class:`MIWAE`, :class:`PIWAE`,
:class:`CIWAE`, :class:`MIWAEDReG`) take their parameters through :func:`make_elbo`'s keyword
options; free bits and MMD are functions of the whole minibatch (:class:`MinibatchELBO`).
"""

import inspect

from pyro.infer import ELBO, Trace_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO

from ...errors import ConfigError
from .base import ImportanceWeights, MinibatchELBO, MultiSampleELBO
from .beta import ANNEALING, BetaELBO, BetaSchedule
from .dreg import DReG
from .freebits import FREE_BITS_GROUPS, FreeBitsELBO, kl_per_dimension
from .iwae import IWAE
from .miwae import CIWAE, MIWAE, PIWAE, MIWAEDReG
from .mmd import MMDELBO, mmd, rbf_kernel
from .renyi import Renyi
from .stl import STL
from .vimco import VIMCO


def _pyro(cls):
    def make(num_particles):
        return cls(num_particles=num_particles, vectorize_particles=num_particles > 1)

    make.__doc__ = f"``pyro.infer.{cls.__name__}`` with vectorized particles."
    return make


#: Objectives by the names the CLI uses: each maps ``num_particles`` (and, for the
#: parameterized ones, keyword options, see :func:`make_elbo`) to an ELBO instance.
ELBOS = {
    "trace": _pyro(Trace_ELBO),
    "meanfield": _pyro(TraceMeanField_ELBO),
    "tracegraph": _pyro(TraceGraph_ELBO),
    "iwae": IWAE,
    "dreg": DReG,
    "stl": STL,
    "vimco": VIMCO,
    "beta": BetaELBO,
    "freebits": FreeBitsELBO,
    "mmd": MMDELBO,
    "renyi": Renyi,
    "miwae": MIWAE,
    "piwae": PIWAE,
    "miwae-dreg": MIWAEDReG,
    "ciwae": CIWAE,
}


def elbo_options(name: str) -> tuple[str, ...]:
    """The keyword options objective ``name`` accepts beyond ``num_particles`` (a tuple of
    str; empty for the Pyro ones and the unparameterized multi-sample ones)."""
    factory = ELBOS[name]
    if not inspect.isclass(factory):
        return ()
    skip = {"self", "num_particles", "max_plate_nesting", "batch_plate", "single_pass"}
    return tuple(p for p in inspect.signature(factory.__init__).parameters if p not in skip)


def make_elbo(name: str, num_particles: int = 1, **options: object) -> ELBO:
    """Build an objective by name (see :data:`ELBOS`): ``trace`` (``Trace_ELBO``), ``meanfield``
    (``TraceMeanField_ELBO``, analytic KL where available), ``tracegraph`` (``TraceGraph_ELBO``,
    score function with Rao-Blackwellization and the guide's baselines), ``iwae``
    (:class:`IWAE`), ``dreg`` (:class:`DReG`), ``stl`` (:class:`STL`), ``vimco``
    (:class:`VIMCO`, needs num_particles >= 2), and with options: ``beta``
    (:class:`BetaELBO`: ``beta``, ``anneal``, ``warmup_epochs``), ``freebits``
    (:class:`FreeBitsELBO`: ``free_bits``, ``per``), ``mmd`` (:class:`MMDELBO`:
    ``mmd_weight``, ``bandwidth``, ``beta``), ``renyi`` (:class:`Renyi`: ``alpha``),
    ``miwae``, ``piwae`` and ``miwae-dreg`` (:class:`MIWAE`, :class:`PIWAE`, :class:`MIWAEDReG`:
    ``num_groups`` M; ``num_particles`` is K per group), ``ciwae`` (:class:`CIWAE`: ``beta``).

    Options whose value is ``None`` are dropped (they take the objective's default), so a
    caller can pass every option it has; ``elbo_options(name)`` lists those accepted.

    Raises:
        ConfigError: unknown name, num_particles < 1, an option the objective does not take,
            or an invalid option value.
    """
    if name not in ELBOS:
        raise ConfigError(f"unknown ELBO {name!r}: choose one of {', '.join(ELBOS)}")
    if int(num_particles) < 1:
        raise ConfigError(f"num_particles must be >= 1, got {num_particles}")
    options = {k: v for k, v in options.items() if v is not None}
    extra = sorted(set(options) - set(elbo_options(name)))
    if extra:
        accepted = ", ".join(elbo_options(name)) or "none"
        raise ConfigError(
            f"ELBO {name!r} does not take {', '.join(extra)} (its options: {accepted})"
        )
    return ELBOS[name](int(num_particles), **options)


__all__ = [
    "ANNEALING",
    "BetaELBO",
    "BetaSchedule",
    "CIWAE",
    "DReG",
    "ELBOS",
    "FREE_BITS_GROUPS",
    "FreeBitsELBO",
    "IWAE",
    "ImportanceWeights",
    "MIWAE",
    "MIWAEDReG",
    "MMDELBO",
    "MinibatchELBO",
    "MultiSampleELBO",
    "PIWAE",
    "Renyi",
    "STL",
    "VIMCO",
    "elbo_options",
    "kl_per_dimension",
    "make_elbo",
    "mmd",
    "rbf_kernel",
]
