"""Generative models p(x, z), one module per family. Each model is a callable ``model(x)``
that follows Pyro's rules (one ``pyro.plate`` over the batch, named sample sites)."""

from .hierarchical import TwoLayerVAE
from .likelihoods import bits_per_dim, scored_on
from .linear_gaussian import LinearGaussian
from .mixture import COVARIANCES, GaussianMixture
from .mixture_vae import MixturePriorVAE
from .priors import PRIORS, FlowPrior, Prior, StandardNormalPrior, VampPrior
from .sbn import LATENTS, SigmoidBeliefNet
from .ssvae import SSVAE
from .vae import LIKELIHOODS, VAE

__all__ = [
    "COVARIANCES",
    "GaussianMixture",
    "LATENTS",
    "LIKELIHOODS",
    "LinearGaussian",
    "MixturePriorVAE",
    "SSVAE",
    "SigmoidBeliefNet",
    "VAE",
    "FlowPrior",
    "PRIORS",
    "Prior",
    "StandardNormalPrior",
    "VampPrior",
    "bits_per_dim",
    "scored_on",
    "TwoLayerVAE",
]
