"""pyro-lvm: deep latent-variable generative models as Pyro model/guide pairs."""

from importlib.metadata import PackageNotFoundError, version

from .errors import (
    ConfigError,
    DataError,
    Interrupted,
    PeerLost,
    PyroLVMError,
    TrainingDiverged,
)

try:
    __version__: str = version("pyro-lvm")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "ConfigError",
    "DataError",
    "Interrupted",
    "PeerLost",
    "PyroLVMError",
    "TrainingDiverged",
    "__version__",
]
