"""pyro-lvm: deep latent-variable generative models as Pyro model/guide pairs."""

from .errors import ConfigError, DataError, PyroLVMError, TrainingDiverged

__version__ = "0.1.0"
__all__ = ["ConfigError", "DataError", "PyroLVMError", "TrainingDiverged", "__version__"]
