"""Objectives: ``pyro.infer.ELBO`` subclasses usable as ``SVI(model, guide, optim, loss=...)``,
and the registry of them by the names the command line uses.

Every ``loss`` is the negative bound summed over the batch plate (nats), like
``Trace_ELBO``'s. The multi-sample objectives share :class:`MultiSampleELBO`, which owns the
vectorized particles and the per-datapoint log-weights of shape (K, B); each of
:class:`IWAE`, :class:`DReG`, :class:`STL`, :class:`VIMCO` is the few lines that make it
different.
"""

from pyro.infer import ELBO, Trace_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO

from ...errors import ConfigError
from .base import ImportanceWeights, MultiSampleELBO
from .dreg import DReG
from .iwae import IWAE
from .stl import STL
from .vimco import VIMCO


def _pyro(cls):
    def make(num_particles):
        return cls(num_particles=num_particles, vectorize_particles=num_particles > 1)

    make.__doc__ = f"``pyro.infer.{cls.__name__}`` with vectorized particles."
    return make


#: Objectives by the names the CLI uses: each maps ``num_particles`` to an ELBO instance.
ELBOS = {
    "trace": _pyro(Trace_ELBO),
    "meanfield": _pyro(TraceMeanField_ELBO),
    "tracegraph": _pyro(TraceGraph_ELBO),
    "iwae": IWAE,
    "dreg": DReG,
    "stl": STL,
    "vimco": VIMCO,
}


def make_elbo(name: str, num_particles: int = 1) -> ELBO:
    """Build an objective by name (see :data:`ELBOS`): ``trace`` (``Trace_ELBO``), ``meanfield``
    (``TraceMeanField_ELBO``, analytic KL where available), ``tracegraph`` (``TraceGraph_ELBO``,
    score function with Rao-Blackwellization and the guide's baselines), ``iwae``
    (:class:`IWAE`), ``dreg`` (:class:`DReG`), ``stl`` (:class:`STL`), ``vimco``
    (:class:`VIMCO`, needs num_particles >= 2).

    Raises:
        ConfigError: unknown name, or num_particles < 1.
    """
    if name not in ELBOS:
        raise ConfigError(f"unknown ELBO {name!r}: choose one of {', '.join(ELBOS)}")
    if int(num_particles) < 1:
        raise ConfigError(f"num_particles must be >= 1, got {num_particles}")
    return ELBOS[name](int(num_particles))


__all__ = ["DReG", "ELBOS", "IWAE", "ImportanceWeights", "MultiSampleELBO", "STL", "VIMCO",
           "make_elbo"]
