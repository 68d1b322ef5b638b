"""Generative models p(x, z), one module per family. Each model is a callable ``model(x)``
that follows Pyro's rules (one ``pyro.plate`` over the batch, named sample sites)."""

from .cvae import CVAE, CVAE_LIKELIHOODS, BaselineNet, no_latents
from .linear_gaussian import LinearGaussian
from .mixture import COVARIANCES, GaussianMixture
from .mixture_vae import MixturePriorVAE
from .mvae import MVAE
from .sbn import LATENTS, SigmoidBeliefNet
from .ssvae import SSVAE
from .vae import LIKELIHOODS, VAE

__all__ = [
    "BaselineNet",
    "CVAE",
    "CVAE_LIKELIHOODS",
    "COVARIANCES",
    "GaussianMixture",
    "LATENTS",
    "LIKELIHOODS",
    "LinearGaussian",
    "MVAE",
    "MixturePriorVAE",
    "SSVAE",
    "SigmoidBeliefNet",
    "VAE",
    "no_latents",
]
