"""Test scores of trained models: importance-sampled (a relaxed discrete model scored as its
discrete self), exact (a model without latent variables), and the imputation of missing pixels
(Mattei & Frellsen 2019, "MIWAE", sections 3-4: self-normalized importance sampling against
mean imputation)."""

from typing import Any

import pyro
import torch

from ..guides import empty_guide
from ..inference import (
    as_tuple,
    importance_sample,
    imputation_error,
    impute,
    mean_and_stderr,
)
from ..models import SigmoidBeliefNet, bits_per_dim


class exact_discrete:  # noqa: N801 (a context, read as a phrase)
    """Within this context a relaxed (Concrete / straight-through) sigmoid belief net and its
    guide are their discrete versions, so that importance sampling estimates the discrete
    model's log p(x); other models are left alone."""

    def __init__(self, model, guide):
        self.model, self.guide = model, guide
        self.saved = (getattr(model, "temperature", None), getattr(guide, "relaxation", None))

    def __enter__(self):
        if isinstance(self.model, SigmoidBeliefNet):
            self.model.temperature, self.guide.relaxation = None, "none"

    def __exit__(self, *exc):
        if isinstance(self.model, SigmoidBeliefNet):
            self.model.temperature, self.guide.relaxation = self.saved


def importance_scores(
    model, guide, test, num_samples, batch_size, seed, progress=False, discrete=False, keep=None
) -> dict:
    """Importance-sampled test scores of ``test`` (a tensor (N, D), or a tuple of the model's
    arguments) with ``num_samples`` samples, seeded by ``seed``: ``test_elbo``, ``test_nll``,
    ``test_nll_stderr`` (nats per datapoint), ``test_ess`` (mean ESS) and, for ``discrete``
    data, ``test_bits_per_dim`` and its ``_stderr`` (nll / (D ln 2)); with a dict ``keep``,
    the per-datapoint log-likelihoods and the test set as
    ``keep["test_log_likelihood"] = (ll, test)``."""
    pyro.set_rng_seed(seed)
    with exact_discrete(model, guide):
        result = importance_sample(
            model, guide, test, num_samples=num_samples, progress=progress, batch_size=batch_size
        )
    if keep is not None:
        keep["test_log_likelihood"] = (result.log_likelihood, test)
    nll, nll_se = mean_and_stderr(-result.log_likelihood)
    out: dict[str, Any] = {"test_elbo": mean_and_stderr(result.elbo)[0], "test_nll": nll}
    out["test_nll_stderr"] = nll_se
    out["test_ess"] = result.ess.mean().item()
    if discrete:
        d = as_tuple(test)[0].shape[-1]
        out["test_bits_per_dim"] = bits_per_dim(nll, d)
        out["test_bits_per_dim_stderr"] = bits_per_dim(nll_se, d)
    return out


def exact_scores(model, test, batch_size, progress=False, keep=None) -> dict:
    """The exact test log-likelihood of a model without latent variables (K = 1, the empty
    guide; the model in evaluation mode): ``test_nll`` and ``test_nll_stderr`` (nats per
    datapoint), ``test_bits_per_dim``; with a dict ``keep``, the per-datapoint values and the
    test set as ``keep["test_log_likelihood"] = (ll, test)``."""
    was_training = model.training
    model.eval()
    try:
        result = importance_sample(
            model, empty_guide, test, num_samples=1, batch_size=batch_size, progress=progress
        )
        ll = result.log_likelihood
    finally:
        model.train(was_training)
    if keep is not None:
        keep["test_log_likelihood"] = (ll, test)
    nll, se = mean_and_stderr(-ll)
    return {
        "test_nll": nll,
        "test_nll_stderr": se,
        "test_bits_per_dim": bits_per_dim(nll, test.shape[-1]),
    }


def mean_imputation(train, train_mask):
    """Per-pixel mean of the observed training pixels, shape (D,) (0.5 at a pixel never
    observed): the baseline imputation."""
    count = train_mask.sum(0)
    total = (train * train_mask).sum(0)
    return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, 0.5))


def imputation_scores(model, guide, data, masks, num_samples, batch_size, seed, progress=False):
    """The test set's missing pixels (``masks``: (training, test) masks, ``True`` where
    observed) imputed by self-normalized importance sampling with ``num_samples`` samples
    (:func:`pyrolvm.inference.impute`), seeded by ``seed``, against the truth and against
    ``mean_imputation``.

    Returns:
        (dict, ImputationResult): the dict holds ``missing_share`` (of the test pixels),
        ``test_all_missing`` (test images with no observed pixel: they contribute
        log p(x_obs) = 0), ``imputation_mse`` and ``mean_imputation_mse`` (mean squared error
        over missing test pixels; the Brier score for binary pixels) with their ``*_stderr``
        (over test images).
    """
    train_mask, test_mask = masks
    pyro.set_rng_seed(seed)
    result = impute(
        model,
        guide,
        data.test,
        test_mask,
        num_samples=num_samples,
        batch_size=batch_size,
        progress=progress,
    )
    mse, mse_se = imputation_error(result.imputed, data.test, test_mask)
    baseline = mean_imputation(data.train, train_mask).expand_as(data.test)
    by_mean = torch.where(test_mask, data.test, baseline)
    mean_mse, mean_se = imputation_error(by_mean, data.test, test_mask)
    metrics = {"missing_share": (~test_mask).double().mean().item()}
    metrics["test_all_missing"] = int((~test_mask.any(-1)).sum().item())
    metrics |= {"imputation_mse": mse, "imputation_mse_stderr": mse_se}
    return metrics | {
        "mean_imputation_mse": mean_mse,
        "mean_imputation_mse_stderr": mean_se,
    }, result
