"""Fitting algorithms: one SVI fit (:func:`fit_svi`, Adam and one call of
:func:`pyrolvm.inference.train`) and those that are more: mixtures from k-means starts with
restarts, M2's labelled/unlabelled objectives, the mixture-prior VAE's phases, the CVAE's
baseline and CVAE phases, the VQ-VAE's codes between its stages, a two-modality model's
objectives, and the amortization gap (a per-datapoint guide refined by SVI), with the scores
that go with them (and ``pyrolvm.fitting.scores``: importance-sampled, exact,
imputations). Each composes models, guides and :mod:`pyrolvm.inference`, takes a
``checkpoint`` callback and a ``resume_from`` state where it trains, and knows nothing of run
folders; the runs call them as stages."""

from .amortization import AmortizationGap, amortization_gap
from .causal import cevae_ate, naive_ate, regression_ate
from .conditional import conditional_scores, fit_baseline, fit_conditional, on_images, on_labels
from .mixture import (
    GUIDES,
    INITS,
    MixtureFit,
    em_reference,
    fit_mixture,
    initial_params,
    mixture_scores,
    warm_and_decay,
)
from .mixture_vae import (
    cluster,
    cluster_accuracy,
    cluster_scores,
    fine_tune,
    fit_mixture_vae,
    init_prior,
    warm_up,
)
from .multimodal import Pairing, multimodal_scores, objectives
from .scores import exact_scores, importance_scores, imputation_scores
from .ssvae import (
    accuracy,
    at_best_validation,
    fit_m2,
    labelled_batches,
    m2_objectives,
    split_labels,
    validation_split,
)
from .svi import fit_svi
from .vqvae import codes_of, training_codes, vqvae_scores

__all__ = [
    "AmortizationGap",
    "amortization_gap",
    "GUIDES",
    "INITS",
    "MixtureFit",
    "Pairing",
    "accuracy",
    "at_best_validation",
    "cluster",
    "cluster_accuracy",
    "cluster_scores",
    "codes_of",
    "conditional_scores",
    "em_reference",
    "exact_scores",
    "fine_tune",
    "importance_scores",
    "imputation_scores",
    "fit_baseline",
    "fit_conditional",
    "fit_m2",
    "fit_mixture",
    "fit_mixture_vae",
    "fit_svi",
    "init_prior",
    "initial_params",
    "labelled_batches",
    "m2_objectives",
    "mixture_scores",
    "multimodal_scores",
    "objectives",
    "on_images",
    "on_labels",
    "split_labels",
    "training_codes",
    "validation_split",
    "vqvae_scores",
    "warm_and_decay",
    "warm_up",
    "cevae_ate",
    "naive_ate",
    "regression_ate",
]
