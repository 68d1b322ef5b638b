"""Latent diagnostics: KL per dimension and active units on a constructed encoder with known
active dimensions; the mutual information against the closed form of the linear-Gaussian
model."""

import math

import pytest
import torch

from pyrolvm.errors import ConfigError
from pyrolvm.inference.latent import (
    active_units,
    kl_per_dimension,
    latent_summary,
    mutual_information,
    unit_activity,
)
from pyrolvm.models import LinearGaussian


def constructed_encoder(n=4000):
    # unit 0 follows x (activity 1), unit 1 barely (0.05^2 = 0.0025 < 0.01), unit 2 is the
    # prior (collapsed), unit 3 a constant shift with scale 0.5 (inactive, KL > 0)
    torch.manual_seed(0)
    x = torch.randn(n)
    loc = torch.stack([x, 0.05 * x, torch.zeros(n), torch.full((n,), 1.5)], -1)
    scale = torch.tensor([0.3, 1.0, 1.0, 0.5]).expand(n, 4)
    return x, loc, scale


def test_kl_per_dimension_and_active_units_of_a_constructed_encoder():
    x, loc, scale = constructed_encoder()
    kl = kl_per_dimension(loc, scale)
    expected = [
        0.5 * (x.pow(2).mean() + 0.09 - 1) - math.log(0.3),
        0.5 * (0.0025 * x.pow(2).mean()),
        0.0,
        0.5 * (2.25 + 0.25 - 1) - math.log(0.5),
    ]
    assert torch.allclose(kl, torch.tensor(expected, dtype=kl.dtype), atol=1e-5)
    assert kl[2] == 0.0
    activity = unit_activity(loc)
    assert activity[0] == pytest.approx(1.0, abs=0.06)
    assert activity[1] == pytest.approx(0.0025, rel=0.06)
    assert activity[2] == activity[3] == 0.0
    assert active_units(loc) == 1
    assert active_units(loc, threshold=0.001) == 2
    s = latent_summary(loc, scale, mi_points=500)
    assert s["active_units"] == 1 and s["rate"] == pytest.approx(kl.sum().item())
    assert s["mi_points"] == 500 and len(s["kl_per_dim"]) == 4


def test_mutual_information_matches_the_linear_gaussian_closed_form():
    # with q(z|x) the exact posterior (diagonal: W has orthogonal columns) and x ~ p(x),
    # I(x; z) = H[z] - H[z|x] = 0.5 log det(I + W^T W / sigma^2)
    torch.manual_seed(0)
    w = torch.tensor([[2.0, 0.0], [0.0, 0.5], [0.0, 0.0], [0.0, 0.0]])
    model = LinearGaussian(w, torch.zeros(4), 0.7)
    exact = 0.5 * torch.logdet(torch.eye(2) + w.T @ w / 0.49).item()
    with torch.no_grad():
        estimates = []
        for seed in range(3):
            x = model.marginal().sample((1500,))
            post = model.posterior(x)
            scale = post.covariance_matrix.diagonal(dim1=-2, dim2=-1).sqrt().expand_as(post.loc)
            estimates.append(
                mutual_information(post.loc, scale, torch.Generator().manual_seed(seed))
            )
    assert sum(estimates) / 3 == pytest.approx(exact, abs=0.06), (estimates, exact)
    # an uninformative encoder (q(z|x) = p(z)) has none
    none = mutual_information(
        torch.zeros(1000, 2), torch.ones(1000, 2), torch.Generator().manual_seed(0)
    )
    assert abs(none) < 1e-9


def test_bad_shapes():
    with pytest.raises(ConfigError):
        kl_per_dimension(torch.zeros(3, 2), torch.ones(3, 3))
    with pytest.raises(ConfigError):
        mutual_information(torch.zeros(1, 2), torch.ones(1, 2))


def test_small_sample_definitions_on_two_rows():
    # Two datapoints, hand-computed. KL per dimension: the closed form 0.5 (mu^2 + sigma^2 -
    # 1) - log sigma per row, then the mean over the rows: dimension 0 (mu = 1, 3; sigma = 1)
    # 0.5 and 4.5, mean 2.5; dimension 1 (mu = 0; sigma = 0.5, 2) -0.375 + log 2 and
    # 1.5 - log 2, mean 0.5625. The rate is their sum over the dimensions, 3.0625. Activity:
    # the unbiased sample variance of the posterior means over the rows, (a - b)^2 / 2 for
    # two (2 and 0 here; the biased variance would give 1); a unit is active when its
    # activity is strictly above the threshold.
    loc = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
    scale = torch.tensor([[1.0, 0.5], [1.0, 2.0]])
    kl = kl_per_dimension(loc, scale)
    assert kl.tolist() == pytest.approx([2.5, 0.5625], abs=1e-6)
    assert unit_activity(loc).tolist() == [2.0, 0.0]
    assert unit_activity(torch.tensor([[0.0], [1.0], [2.0]])).tolist() == [1.0]  # not 2 / 3
    assert active_units(loc) == 1
    assert active_units(loc, threshold=2.0) == 0 and active_units(loc, threshold=1.99) == 1
    s = latent_summary(loc, scale, mi_points=2, generator=torch.Generator().manual_seed(0))
    assert s["rate"] == pytest.approx(3.0625, abs=1e-6)
    assert s["kl_per_dim"] == pytest.approx([2.5, 0.5625], abs=1e-6)
    assert s["activity"] == [2.0, 0.0] and s["active_units"] == 1 and s["mi_points"] == 2
    # one row has no variance: one clear error, not NaN
    for fn in (unit_activity, active_units):
        with pytest.raises(ConfigError, match="N >= 2"):
            fn(torch.zeros(1, 2))


def test_mutual_information_of_two_rows_by_hand():
    # I_q = 1/N sum_i [log q(z_i|x_i) - log 1/N sum_j q(z_i|x_j)], z_i = mu_i + sigma_i eps_i
    # with eps the generator's N x L standard normal draws (float64, on the CPU), computed
    # here from the Gaussian density by hand (math, not torch) for N = 2, L = 1.
    loc, scale = torch.tensor([[0.0], [1.0]]), torch.tensor([[1.0], [2.0]])
    eps = torch.randn((2, 1), generator=torch.Generator().manual_seed(3), dtype=torch.float64)

    def log_normal(z, mu, sigma):
        return -0.5 * math.log(2 * math.pi) - math.log(sigma) - 0.5 * ((z - mu) / sigma) ** 2

    mus, sigmas = [0.0, 1.0], [1.0, 2.0]
    terms = []
    for i in range(2):
        z = mus[i] + sigmas[i] * eps[i, 0].item()
        aggregate = sum(math.exp(log_normal(z, mus[j], sigmas[j])) for j in range(2)) / 2
        terms.append(log_normal(z, mus[i], sigmas[i]) - math.log(aggregate))
    got = mutual_information(loc, scale, torch.Generator().manual_seed(3))
    assert got == pytest.approx(sum(terms) / 2, rel=1e-12, abs=1e-12)
    # encoders far apart: the aggregate at z_i is q(z_i|x_i) / N, so the estimate is its
    # upper bound log N (the row's own density enters the aggregate, divided by N)
    far = mutual_information(
        torch.tensor([[-50.0], [50.0]]), torch.ones(2, 1), torch.Generator().manual_seed(0)
    )
    assert far == pytest.approx(math.log(2), rel=1e-12)
