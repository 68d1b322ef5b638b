"""Runs compose the parts: config -> data -> model + guide -> train -> evaluate -> run folder
(config.json, metrics.json, checkpoint.pt, PNG figures). Each CLI command is one call here."""

from .gmm import GMMConfig, MixtureFit, evaluate_gmm, fit_mixture, train_gmm
from .vae import DATASET_DEFAULTS, VAEConfig, evaluate_vae, train_vae

__all__ = ["DATASET_DEFAULTS", "GMMConfig", "MixtureFit", "VAEConfig", "evaluate_gmm",
           "fit_mixture", "train_gmm", "evaluate_vae", "train_vae"]
