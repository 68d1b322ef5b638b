"""Inference: the training loop, ELBO estimators, log-likelihood evaluation, diagnostics.

Takes ``model`` and ``guide`` callables as ``pyro.infer.SVI`` does; never imports a model or
a guide.
"""

from .diagnostics import GradientStats, gradient_snr
from .elbos import ELBOS, IWAE, make_elbo
from .estimators import STL, VIMCO, DReG
from .evaluation import PROPOSALS, ImportanceResult, importance_sample, log_likelihood, mean_and_stderr
from .importance import log_weights, prior_proposal, vectorized_traces
from .training import make_optim, train

__all__ = [
    "DReG",
    "STL",
    "VIMCO",
    "ELBOS",
    "GradientStats",
    "IWAE",
    "ImportanceResult",
    "PROPOSALS",
    "gradient_snr",
    "importance_sample",
    "log_likelihood",
    "log_weights",
    "make_elbo",
    "make_optim",
    "mean_and_stderr",
    "prior_proposal",
    "train",
    "vectorized_traces",
]
