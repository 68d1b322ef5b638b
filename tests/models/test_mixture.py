"""GaussianMixture: exact enumerated log-likelihood, ELBO identities, infer_discrete, BIC and
bad input, against closed forms (scipy) and scikit-learn."""

import numpy as np
import pytest
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from pyrolvm.errors import ConfigError, DataError
from pyrolvm.fitting import initial_params
from pyrolvm.guides import MixtureMAP
from pyrolvm.models import GaussianMixture


def random_params(model, seed=0, dtype=torch.float32):
    """Global site values drawn from a generator (not from the prior: moderate spread)."""
    gen = torch.Generator().manual_seed(seed)
    k, d = model.num_components, model.data_dim
    weights = torch.rand(k, generator=gen, dtype=torch.float64) + 0.2
    locs = 3 * torch.randn(k, d, generator=gen, dtype=torch.float64)
    a = torch.randn(k, d, d, generator=gen, dtype=torch.float64)
    covs = a @ a.transpose(-1, -2) / d + 0.3 * torch.eye(d, dtype=torch.float64)
    if model.covariance == "diag":
        covs = covs.diagonal(dim1=-2, dim2=-1)
    params = model.params_from_moments(weights / weights.sum(), locs, covs)
    return {k_: v.to(dtype) for k_, v in params.items()}


def closed_form_log_likelihood(model, params, x):
    """log sum_k pi_k N(x; mu_k, Sigma_k) with scipy, float64: the reference."""
    covs = model.covariances({k: v.double() for k, v in params.items()}).numpy()
    w = params["weights"].double().numpy()
    mu = params["locs"].double().numpy()
    comp = np.stack(
        [multivariate_normal(mu[k], covs[k]).logpdf(x.double().numpy()) for k in range(len(w))], -1
    )
    return logsumexp(comp + np.log(w), axis=-1), comp + np.log(w)


def log_prior(model, params):
    """log p(theta) of the global sites, summed, with torch.distributions (the reference)."""
    td = torch.distributions
    k = model.num_components
    lp = td.Dirichlet(torch.full((k,), model.weight_concentration)).log_prob(params["weights"])
    lp = lp + td.Normal(model.loc_loc, model.loc_scale).log_prob(params["locs"]).sum()
    lp = lp + td.LogNormal(model.scale_loc, model.scale_scale).log_prob(params["scales"]).sum()
    if "corr" in params:
        lkj = td.LKJCholesky(model.data_dim, model.corr_concentration)
        lp = lp + lkj.log_prob(params["corr"]).sum()
    return lp


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_log_likelihood_equals_closed_form_float64(covariance):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        model = GaussianMixture(4, 3, covariance)
        params = random_params(model, dtype=torch.float64)
        x, _ = model.sample(200, params)
        ours = model.log_likelihood(x, params)
        ref, joint = closed_form_log_likelihood(model, params, x)
        assert ours.dtype == torch.float64 and ours.shape == (200,)
        np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(model.log_joint(x, params).numpy(), joint, rtol=1e-12)
    finally:
        torch.set_default_dtype(previous)


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_log_likelihood_float32_and_responsibilities(covariance):
    model = GaussianMixture(5, 4, covariance)
    params = random_params(model, seed=1)
    x, _ = model.sample(300, params)
    ref, joint = closed_form_log_likelihood(model, params, x)
    # float32 arithmetic on values of size ~10: relative error ~1e-6
    np.testing.assert_allclose(model.log_likelihood(x, params).numpy(), ref, rtol=2e-5, atol=2e-5)
    resp = model.responsibilities(x, params)
    ref_resp = np.exp(joint - logsumexp(joint, -1, keepdims=True))
    np.testing.assert_allclose(resp.numpy(), ref_resp, atol=2e-5)
    np.testing.assert_allclose(resp.sum(-1).numpy(), 1.0, atol=1e-6)


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_trace_enum_elbo_with_map_guide_is_minus_log_joint(covariance):
    """TraceEnum_ELBO's loss under point masses = -(sum_n log p(x_n | theta) + log p(theta))."""
    model = GaussianMixture(3, 2, covariance)
    params = random_params(model, seed=2)
    x, _ = model.sample(50, params)
    guide = MixtureMAP(model, params)
    theta = guide.median()  # the constrained values after the guide's unconstrained round trip
    for name in model.global_sites:
        torch.testing.assert_close(theta[name], params[name], rtol=1e-5, atol=1e-5)
    loss = TraceEnum_ELBO(max_plate_nesting=1).loss(model, guide, x)
    expected = -(model.log_likelihood(x, theta).double().sum() + log_prior(model, theta).double())
    assert loss == pytest.approx(expected.item(), rel=1e-6)


def test_minibatch_index_scales_by_n_over_b():
    """model(x[idx], idx) with num_data=N:
    loss = -(N/B sum_{n in idx} log p(x_n) + log p(theta))."""
    model = GaussianMixture(3, 2, "full", num_data=50)
    params = random_params(model, seed=3)
    x, _ = model.sample(50, params)
    guide = MixtureMAP(model, params)
    theta = guide.median()
    idx = torch.tensor([3, 17, 4, 40, 41, 0, 9])
    loss = TraceEnum_ELBO(max_plate_nesting=1).loss(model, guide, x[idx], idx)
    ll = model.log_likelihood(x[idx], theta).double().sum()
    expected = -(50 / 7 * ll + log_prior(model, theta).double())
    assert loss == pytest.approx(expected.item(), rel=1e-6)


def test_subsample_size_reads_the_subsampled_rows():
    model = GaussianMixture(2, 3, "diag")
    params = random_params(model, seed=4)
    x, _ = model.sample(40, params)
    conditioned = poutine.condition(model, data=params)
    trace = poutine.trace(poutine.enum(conditioned, first_available_dim=-2)).get_trace(
        x, subsample_size=8
    )
    idx = trace.nodes["data"]["value"]
    assert idx.shape == (8,) and len(set(idx.tolist())) == 8
    assert torch.equal(trace.nodes["x"]["value"], x[idx])
    assert trace.nodes["x"]["scale"] == pytest.approx(40 / 8)


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_infer_discrete_map_equals_argmax_of_responsibilities(covariance):
    model = GaussianMixture(4, 2, covariance)
    params = random_params(model, seed=5)
    x, _ = model.sample(500, params)
    resp = model.responsibilities(x, params)
    z = model.assign(x, params, temperature=0)
    assert z.shape == (500,) and z.dtype == torch.int64
    assert torch.equal(z, resp.argmax(-1))


def test_infer_discrete_samples_follow_responsibilities():
    model = GaussianMixture(3, 2, "full")
    params = random_params(model, seed=6)
    # one datapoint half-way between two components, repeated: its draws are i.i.d.
    point = (params["locs"][0] + params["locs"][1]) / 2
    n = 4000
    x = point.expand(n, 2).clone()
    p = model.responsibilities(x[:1], params)[0]
    z = model.assign(x, params, temperature=1)
    freq = torch.bincount(z, minlength=3).double() / n
    stderr = (p.double() * (1 - p.double()) / n).sqrt()
    # binomial frequencies: within 4 standard errors (plus float slack)
    assert ((freq - p.double()).abs() <= 4 * stderr + 1e-3).all(), (freq, p)


def test_bic_and_log_likelihood_equal_sklearn_at_sklearn_parameters():
    from sklearn.mixture import GaussianMixture as SKGaussianMixture

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        gen = torch.Generator().manual_seed(0)
        x = torch.cat(
            [torch.randn(80, 3, generator=gen, dtype=torch.float64) + 4 * i for i in range(3)]
        )
        for covariance in ("full", "diag"):
            sk = SKGaussianMixture(3, covariance_type=covariance, random_state=0).fit(x.numpy())
            model = GaussianMixture(3, 3, covariance)
            params = model.params_from_moments(sk.weights_, sk.means_, sk.covariances_)
            assert model.num_parameters == sk._n_parameters()
            assert model.log_likelihood(x, params).mean().item() == pytest.approx(
                sk.score(x.numpy()), rel=1e-10
            )
            assert model.bic(x, params) == pytest.approx(sk.bic(x.numpy()), rel=1e-10)
    finally:
        torch.set_default_dtype(previous)


@pytest.mark.parametrize("method", ["kmeans++", "kmeans", "random"])
def test_initial_params_are_valid_and_seeded(method):
    model = GaussianMixture(4, 3, "full")
    params = random_params(model, seed=7)
    x, _ = model.sample(200, params)
    a = initial_params(model, x, method, seed=1)
    b = initial_params(model, x, method, seed=1)
    for name in model.global_sites:
        assert torch.equal(a[name], b[name])
    assert a["weights"].sum().item() == pytest.approx(1.0, abs=1e-6)
    assert (a["scales"] > 0).all()
    assert torch.isfinite(model.log_likelihood(x, a)).all()
    if method == "random":
        return
    # Against scikit-learn: the centres of sklearn.cluster.kmeans_plusplus (or the labels of
    # KMeans(n_init=1)) with the same seed, every point assigned to its nearest centre, and
    # each component's smoothed weight (n_j + 1) / (N + K), mean and covariance (np.cov plus
    # 1e-6 on the diagonal) of its points; the mixture these define scores the data, by scipy,
    # exactly as the initial parameters do.
    from scipy.special import logsumexp
    from scipy.stats import multivariate_normal
    from sklearn.cluster import KMeans, kmeans_plusplus

    xn = x.double().numpy()
    if method == "kmeans++":
        centres, _ = kmeans_plusplus(xn, 4, random_state=1)
        labels = ((xn[:, None, :] - centres[None]) ** 2).sum(-1).argmin(-1)
    else:
        labels = KMeans(4, n_init=1, random_state=1).fit(xn).labels_
    log_terms = []
    for j in range(4):
        xj = xn[labels == j]
        assert len(xj) > 1
        weight = (len(xj) + 1) / (len(xn) + 4)
        cov = np.cov(xj.T) + 1e-6 * np.eye(3)
        log_terms.append(np.log(weight) + multivariate_normal(xj.mean(0), cov).logpdf(xn))
    expected = logsumexp(np.stack(log_terms), axis=0)
    np.testing.assert_allclose(model.log_likelihood(x, a).double().numpy(), expected, rtol=1e-4)
    # the means are the clusters' means, in scikit-learn's order
    np.testing.assert_allclose(
        a["locs"].double().numpy(), np.stack([xn[labels == j].mean(0) for j in range(4)]), atol=1e-5
    )


def test_full_covariance_in_one_dimension_is_diagonal():
    model = GaussianMixture(2, 1, "full")
    assert model.global_sites == ("weights", "locs", "scales")
    params = random_params(model, seed=8)
    x, _ = model.sample(20, params)
    ref, _ = closed_form_log_likelihood(model, params, x)
    np.testing.assert_allclose(model.log_likelihood(x, params).numpy(), ref, rtol=1e-5)


# ----- bad input -----


@pytest.mark.parametrize("k", [0, -1, 2.5])
def test_bad_number_of_components(k):
    with pytest.raises(ConfigError, match="positive integer"):
        GaussianMixture(k, 2)


def test_more_components_than_points():
    x = torch.randn(5, 2)
    with pytest.raises(ConfigError, match="only 5 datapoints"):
        GaussianMixture.from_data(x, 6)
    with pytest.raises(ConfigError, match="only 5 datapoints"):
        initial_params(GaussianMixture(6, 2), x)


def test_unknown_covariance_type():
    with pytest.raises(ConfigError, match="unknown covariance type 'spherical'.*full, diag"):
        GaussianMixture(2, 2, "spherical")


def test_nan_data():
    x = torch.randn(10, 2)
    x[3, 1] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        GaussianMixture.from_data(x, 2)
    model = GaussianMixture(2, 2)
    params = random_params(model)
    with pytest.raises(DataError, match="NaN"):
        model.log_likelihood(x, params)


def test_other_bad_input():
    model = GaussianMixture(2, 2)
    params = random_params(model)
    with pytest.raises(DataError, match="3 dimensions"):
        model.log_likelihood(torch.randn(4, 3), params)
    with pytest.raises(ConfigError, match="missing"):
        model.log_likelihood(torch.randn(4, 2), {"weights": params["weights"]})
    with pytest.raises(ConfigError, match="num_data"):
        model(torch.randn(4, 2), torch.arange(4))
    with pytest.raises(ConfigError, match="temperature"):
        model.assign(torch.randn(4, 2), params, temperature=0.5)
    with pytest.raises(ConfigError, match="unknown initialization"):
        initial_params(model, torch.randn(4, 2), "forgy")
    with pytest.raises(ConfigError, match="loc_scale"):
        GaussianMixture(2, 2, loc_scale=0.0)
