"""Generative models p(x, z), one module per family. Each model is a callable ``model(x)``
that follows Pyro's rules (one ``pyro.plate`` over the batch, named sample sites)."""

from .autoregressive import MADE, AutoregressiveBernoulli, PixelCNN
from .causal import HUSZAR_MODELS, conditional_y, interventional_y
from .cvae import CVAE, CVAE_LIKELIHOODS, BaselineNet, no_latents
from .hierarchical import TwoLayerVAE
from .likelihoods import bits_per_dim, scored_on
from .linear_gaussian import LinearGaussian
from .mixture import COVARIANCES, GaussianMixture
from .mixture_vae import MixturePriorVAE
from .mvae import MVAE, HalvesMVAE
from .priors import PRIORS, FlowPrior, Prior, StandardNormalPrior, VampPrior
from .sbn import LATENTS, SigmoidBeliefNet
from .ssvae import SSVAE
from .vae import DECODERS, LIKELIHOODS, VAE
from .vqvae import VQVAE, codebook_usage, quantize

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
    "HalvesMVAE",
    "MixturePriorVAE",
    "SSVAE",
    "SigmoidBeliefNet",
    "VAE",
    "MADE",
    "PixelCNN",
    "AutoregressiveBernoulli",
    "DECODERS",
    "bits_per_dim",
    "VQVAE",
    "codebook_usage",
    "quantize",
    "HUSZAR_MODELS",
    "conditional_y",
    "interventional_y",
    "no_latents",
    "FlowPrior",
    "PRIORS",
    "Prior",
    "StandardNormalPrior",
    "VampPrior",
    "scored_on",
    "TwoLayerVAE",
]
