"""Runs compose the parts: config -> data -> model + guide -> fit -> evaluate -> run folder
(config.json, metrics.json, checkpoint.pt, PNG figures). Each run kind declares its config
once (``pyrolvm.runs.config``) and registers itself (:data:`RUNS`); the ``pyrolvm``
command is generated from the registry, and each command is one Python call here."""

from ..fitting import MixtureFit, fit_mixture
from .autoregressive import (
    AutoregressiveConfig,
    MADEConfig,
    PixelCNNConfig,
    evaluate_autoregressive,
    train_made,
    train_pixelcnn,
)
from .config import Range, RunConfig, validate
from .cvae import CVAEConfig, evaluate_cvae, train_cvae
from .gmm import GMMConfig, evaluate_gmm, train_gmm
from .mixture_vae import MixtureVAEConfig, evaluate_mixture_vae, train_mixture_vae
from .mvae import MVAEConfig, evaluate_mvae, train_mvae
from .objective import ObjectiveConfig
from .registry import RUNS, RunKind, evaluate_run, register
from .ssvae import M2Config, evaluate_m2, train_m2
from .vae import DATASET_DEFAULTS, VAEConfig, evaluate_vae, train_vae
from .vqvae import VQVAEConfig, evaluate_vqvae, train_vqvae

__all__ = [
    "CVAEConfig",
    "DATASET_DEFAULTS",
    "GMMConfig",
    "M2Config",
    "MixtureFit",
    "MVAEConfig",
    "MixtureVAEConfig",
    "ObjectiveConfig",
    "RUNS",
    "Range",
    "RunConfig",
    "RunKind",
    "VAEConfig",
    "evaluate_cvae",
    "evaluate_gmm",
    "evaluate_m2",
    "evaluate_mixture_vae",
    "evaluate_mvae",
    "evaluate_run",
    "evaluate_vae",
    "fit_mixture",
    "register",
    "train_cvae",
    "train_gmm",
    "train_m2",
    "train_mixture_vae",
    "train_mvae",
    "train_vae",
    "validate",
    "AutoregressiveConfig",
    "MADEConfig",
    "PixelCNNConfig",
    "evaluate_autoregressive",
    "train_made",
    "train_pixelcnn",
    "VQVAEConfig",
    "evaluate_vqvae",
    "train_vqvae",
]
