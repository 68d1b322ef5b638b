"""Fitting Gaussian mixtures by SVI with enumeration: recovery of a known mixture and held-out
log-likelihood against scikit-learn's EM on real data."""

import pytest
import torch
from scipy.optimize import linear_sum_assignment

from pyrolvm.data import load
from pyrolvm.errors import ConfigError
from pyrolvm.fitting import fit_mixture


def separated_mixture(n_per=150, seed=0):
    """Three 2-D clusters 8 standard deviations apart, unequal sizes."""
    gen = torch.Generator().manual_seed(seed)
    means = torch.tensor([[0.0, 0.0], [8.0, 0.0], [0.0, 8.0]])
    sizes = [n_per, 2 * n_per, n_per]
    # drawn in float32 whatever the default dtype (the float64 job fits the same points)
    x = torch.cat(
        [
            torch.randn(s, 2, generator=gen, dtype=torch.float32) + m
            for s, m in zip(sizes, means, strict=True)
        ]
    ).to(means.dtype)
    return x, means, torch.tensor(sizes, dtype=means.dtype) / sum(sizes)


def match(estimated, truth):
    """Estimated rows permuted to the truth's order (Hungarian matching on distances)."""
    cost = torch.cdist(truth, estimated).numpy()
    _, cols = linear_sum_assignment(cost)
    return torch.as_tensor(cols)


@pytest.mark.parametrize(
    "guide,covariance,batch_size",
    [("map", "full", None), ("map", "diag", 100), ("meanfield", "full", None)],
)
def test_recovers_means_of_well_separated_mixture(guide, covariance, batch_size):
    x, means, weights = separated_mixture()
    fit = fit_mixture(
        x,
        3,
        covariance,
        guide=guide,
        epochs=150 if batch_size is None else 40,
        batch_size=batch_size,
        lr=0.05,
        init="random",
        seed=0,
    )
    perm = match(fit.params["locs"], means)
    # sample means of 150..300 unit-variance points have standard error <= 1/sqrt(150) = 0.08
    # per coordinate; allow 4 standard errors
    assert (fit.params["locs"][perm] - means).abs().max() < 0.33
    # weight estimates: standard error sqrt(w(1-w)/N) <= 0.025
    assert (fit.params["weights"][perm] - weights).abs().max() < 0.1
    assert fit.history["train_log_likelihood"][-1] > fit.history["train_log_likelihood"][0]


def test_restarts_keep_the_best():
    x, _, _ = separated_mixture(50)
    fit = fit_mixture(x, 3, "diag", init="random", n_init=3, epochs=20, seed=0)
    assert len(fit.restarts) == 3
    assert fit.history["train_log_likelihood"][-1] == pytest.approx(max(fit.restarts))
    assert fit.model.log_likelihood(x, fit.params).mean().item() == pytest.approx(
        max(fit.restarts), abs=1e-5
    )


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_heldout_log_likelihood_matches_sklearn_on_digits(covariance):
    """Digits projected to 10 dimensions by PCA fitted on the training split, K = 10:
    held-out mean log-likelihood within 1% of scikit-learn's EM (n_init=5) or better."""
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture as SKGaussianMixture

    ds = load("digits")
    pca = PCA(10, random_state=0).fit(ds.train.numpy())
    xtr = torch.tensor(pca.transform(ds.train.numpy()), dtype=torch.float32)
    xte = torch.tensor(pca.transform(ds.test.numpy()), dtype=torch.float32)
    sk = SKGaussianMixture(10, covariance_type=covariance, n_init=5, random_state=0)
    sk_test = sk.fit(xtr.numpy()).score(xte.numpy())
    fit = fit_mixture(xtr, 10, covariance, epochs=300, lr=0.05, seed=0)
    ours = fit.model.log_likelihood(xte, fit.params).mean().item()
    assert ours >= sk_test - 0.01 * abs(sk_test), (ours, sk_test)


def test_fit_bad_input():
    x = torch.randn(20, 2)
    with pytest.raises(ConfigError, match="unknown guide"):
        fit_mixture(x, 2, guide="laplace")
    with pytest.raises(ConfigError, match="n_init"):
        fit_mixture(x, 2, n_init=0)
    with pytest.raises(ConfigError, match="only 20 datapoints"):
        fit_mixture(x, 21)
    with pytest.raises(ConfigError, match="unknown covariance"):
        fit_mixture(x, 2, "tied")
