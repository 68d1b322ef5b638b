"""Fitting algorithms that are more than one call of :func:`pyrolvm.inference.train`:
mixtures from k-means starts with restarts, M2's labelled/unlabelled objectives, and the
mixture-prior VAE's pre-training and prior initialization, and the amortization gap
(a per-datapoint guide refined by SVI). Each composes models, guides and
:mod:`pyrolvm.inference`; runs call them."""

from .amortization import AmortizationGap, amortization_gap
from .causal import cevae_ate, naive_ate, regression_ate
from .mixture import GUIDES, INITS, MixtureFit, fit_mixture, initial_params
from .mixture_vae import cluster, cluster_accuracy, cluster_scores, fit_mixture_vae
from .ssvae import accuracy, fit_m2, split_labels

__all__ = [
    "AmortizationGap",
    "amortization_gap",
    "GUIDES",
    "INITS",
    "MixtureFit",
    "accuracy",
    "cluster",
    "cluster_accuracy",
    "cluster_scores",
    "fit_m2",
    "fit_mixture",
    "fit_mixture_vae",
    "initial_params",
    "split_labels",
    "cevae_ate",
    "naive_ate",
    "regression_ate",
]
