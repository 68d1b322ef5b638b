"""Inference: the training loop, objectives, log-likelihood evaluation, diagnostics.

Takes ``model`` and ``guide`` callables as ``pyro.infer.SVI`` does; never imports a model or
a guide.
"""

from .batches import as_tuple, num_rows, rows
from .bounds import ELBO_NAME, bound_name, bound_on_data, is_elbo, trained_bound
from .diagnostics import GradientStats, gradient_snr
from .evaluation import (
    PROPOSALS,
    ImportanceResult,
    importance_sample,
    log_likelihood,
    mean_and_stderr,
)
from .importance import find_batch_plate, latent_sites, log_weights, prior_proposal, sum_to_batch
from .imputation import ImputationResult, imputation_error, impute
from .latent import LatentDiagnostics, SiteDiagnostics, latent_diagnostics, latent_summary
from .objectives import (
    ANNEALING,
    CIWAE,
    ELBOS,
    FREE_BITS_GROUPS,
    IWAE,
    MIWAE,
    MMDELBO,
    PIWAE,
    STL,
    VIMCO,
    BetaELBO,
    BetaSchedule,
    DReG,
    FreeBitsELBO,
    ImportanceWeights,
    MinibatchELBO,
    MIWAEDReG,
    MultiSampleELBO,
    Renyi,
    elbo_options,
    kl_per_dimension,
    make_elbo,
)
from .pairs import PairTraces, check_pair, check_pair_traces, pair_check_errors, trace_pair
from .schedules import (
    BURDA_EPOCHS,
    SCHEDULES,
    burda_lr_factor,
    burda_stage_ends,
    make_scheduled_optim,
)
from .state import load_param_state, param_state, rng_state, set_rng_state
from .training import make_optim, svi_step, train

__all__ = [
    "ELBO_NAME",
    "bound_name",
    "bound_on_data",
    "is_elbo",
    "trained_bound",
    "ANNEALING",
    "BURDA_EPOCHS",
    "SCHEDULES",
    "burda_lr_factor",
    "burda_stage_ends",
    "check_pair",
    "check_pair_traces",
    "pair_check_errors",
    "PairTraces",
    "trace_pair",
    "make_scheduled_optim",
    "BetaELBO",
    "BetaSchedule",
    "CIWAE",
    "FREE_BITS_GROUPS",
    "FreeBitsELBO",
    "MIWAE",
    "MIWAEDReG",
    "MMDELBO",
    "MinibatchELBO",
    "PIWAE",
    "Renyi",
    "elbo_options",
    "kl_per_dimension",
    "DReG",
    "ELBOS",
    "GradientStats",
    "IWAE",
    "ImportanceResult",
    "ImportanceWeights",
    "ImputationResult",
    "LatentDiagnostics",
    "SiteDiagnostics",
    "MultiSampleELBO",
    "PROPOSALS",
    "STL",
    "VIMCO",
    "as_tuple",
    "find_batch_plate",
    "gradient_snr",
    "importance_sample",
    "imputation_error",
    "impute",
    "latent_diagnostics",
    "latent_sites",
    "latent_summary",
    "load_param_state",
    "log_likelihood",
    "log_weights",
    "make_elbo",
    "make_optim",
    "mean_and_stderr",
    "num_rows",
    "param_state",
    "prior_proposal",
    "rng_state",
    "rows",
    "set_rng_state",
    "sum_to_batch",
    "svi_step",
    "train",
]
