"""The full-covariance and flow guides: normalized densities, moments, the change of variables
by hand, the exact posterior of a linear-Gaussian model, and DReG/STL support."""

import math

import pyro
import pytest
import torch
from helpers import linear_gaussian
from pyro import poutine
from pyro.infer import SVI, TraceMeanField_ELBO
from pyro.optim import ClippedAdam
from torch.distributions import kl_divergence

from pyrolvm.errors import ConfigError
from pyrolvm.guides import AmortizedFlow, AmortizedFullCovariance, AmortizedNormal
from pyrolvm.inference import STL, make_elbo
from pyrolvm.inference.objectives.base import detached_log_prob

D = 3


def guides():
    torch.manual_seed(0)
    return {
        "fullcov": AmortizedFullCovariance(D, 2, (8,)),
        "iaf": AmortizedFlow(D, 2, "iaf", 3, (8,), context_dim=4),
        "planar": AmortizedFlow(D, 2, "planar", 4, (8,), context_dim=4),
    }


def grid(half_width=8.0, n=401):
    t = torch.linspace(-half_width, half_width, n, dtype=torch.float64)
    zz = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
    return zz, (t[1] - t[0]) ** 2


@pytest.mark.parametrize("name", ["fullcov", "iaf"])
def test_density_integrates_to_one_and_matches_sample_moments(name):
    guide = guides()[name].double()
    x = torch.rand(1, D, dtype=torch.float64)
    with torch.no_grad():
        q = guide.posterior(x)
        zz, cell = grid()
        p = q.log_prob(zz.unsqueeze(1)).squeeze(1).exp() * cell  # (G,) probability masses
        # Riemann sum of a smooth density with well inside the grid: error << 1e-3
        assert p.sum().item() == pytest.approx(1.0, abs=2e-3)
        mean = (p[:, None] * zz).sum(0)
        cov = (p[:, None, None] * (zz - mean)[:, :, None] * (zz - mean)[:, None, :]).sum(0)
        torch.manual_seed(1)
        n = 20000
        s = q.sample((n,)).squeeze(1)
    # sample mean within 4 standard errors sqrt(var / n) of the mean the density implies
    se = (cov.diagonal() / n).sqrt()
    assert ((s.mean(0) - mean).abs() < 4 * se).all()
    # sample variances within 4 standard errors (var * sqrt(2 / n) for near-Gaussian draws)
    assert ((s.var(0) - cov.diagonal()).abs() < 4 * cov.diagonal() * math.sqrt(2 / n) * 1.5).all()


@pytest.mark.parametrize("name", ["planar", "iaf"])
def test_log_prob_is_the_change_of_variables_by_hand(name):
    """log q(z) at a draw z = f(eps) equals log N(eps) - log |det df/deps|, the Jacobian
    taken by autograd and its determinant by torch.linalg (no library log-det)."""
    guide = guides()[name].double()
    x = torch.rand(1, D, dtype=torch.float64)
    q = guide.posterior(x)
    eps = q.base_dist.sample()
    transform = torch.distributions.ComposeTransform(q.transforms)
    jac = torch.autograd.functional.jacobian(lambda e: transform(e.unsqueeze(0))[0], eps[0])
    z = transform(eps)  # after the Jacobian's calls: the transforms cache this draw
    by_hand = q.base_dist.log_prob(eps) - torch.linalg.det(jac).abs().log()
    assert q.log_prob(z).item() == pytest.approx(by_hand.item(), abs=1e-8)


def test_all_guides_are_reparameterized():
    x = torch.rand(4, D)
    for guide in guides().values():
        site = poutine.trace(guide).get_trace(x).nodes["z"]
        assert site["fn"].has_rsample and site["value"].requires_grad


def test_detached_log_prob_keeps_the_value_and_only_the_path():
    """STL/DReG's log q with parameters detached: same value; no gradient to the guide's
    parameters except through z; its z-gradient is that of log q at z with the parameters
    attached; planar (no inverse) is refused."""
    x = torch.rand(4, D)
    for name, guide in guides().items():
        site = poutine.trace(guide).get_trace(x).nodes["z"]
        if name == "planar":
            with pytest.raises(ConfigError, match="no inverse"):
                detached_log_prob(site)
            continue
        value = site["value"]
        lp = detached_log_prob(site)
        assert torch.allclose(lp, site["fn"].log_prob(value), atol=1e-5)
        assert not detached_log_prob(dict(site, value=value.detach())).requires_grad
        leaf = value.detach().requires_grad_()
        (g_ref,) = torch.autograd.grad(site["fn"].log_prob(leaf).sum(), leaf)
        (g,) = torch.autograd.grad(lp.sum(), value)
        assert torch.allclose(g, g_ref, atol=1e-5)


@pytest.mark.parametrize("objective", ["stl", "dreg"])
def test_stl_and_dreg_refuse_planar_with_one_error(objective):
    model, x = linear_gaussian(data_dim=D, latent_dim=2)
    guide = AmortizedFlow(D, 2, "planar", 2, (8,))
    with pytest.raises(ConfigError, match="IAF"):
        make_elbo(objective, 2).loss_and_grads(model, guide, x)


def fit(guide, model, x, steps, loss):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    svi = SVI(model, guide, ClippedAdam({"lr": 0.05, "lrd": 0.99}), loss)  # lr decays to 0.0025
    for _ in range(steps):
        svi.step(x)


@pytest.fixture(scope="module")
def correlated():
    """A linear-Gaussian model whose posterior has correlation 0.78 (the gap of the
    diagonal guide, 0.5 (sum log diag(Lambda) - log det Lambda), is 0.48 nats)."""
    model, x = linear_gaussian(data_dim=D, latent_dim=2, noise_scale=0.5, seed=7)
    for p in model.parameters():
        p.requires_grad_(False)
    model.train(False)  # fixed parameters, not in the param store
    return model, x


def kl_to_posterior(guide, model, x):
    with torch.no_grad():
        return kl_divergence(guide.posterior(x), model.posterior(x))


def test_full_covariance_guide_reaches_the_exact_posterior(correlated):
    model, x = correlated
    post = model.posterior(x)
    cov = post.covariance_matrix[0]
    corr = cov[0, 1] / (cov[0, 0] * cov[1, 1]).sqrt()
    assert corr.abs() > 0.5  # the test needs a correlated posterior
    guide = AmortizedFullCovariance(D, 2, hidden=())  # linear encoder: the exact family
    fit(guide, model, x, 300, STL(num_particles=2))  # STL: zero variance at the optimum
    q = guide.posterior(x)
    with torch.no_grad():
        assert torch.allclose(q.loc, post.loc, atol=0.02)
        assert torch.allclose(q.covariance_matrix, cov.expand_as(q.covariance_matrix), atol=0.01)
    # ELBO = log p(x) - KL(q || p(z | x)) exactly: within 0.005 nats of log p(x) per point
    assert kl_to_posterior(guide, model, x).max() < 5e-3


def test_diagonal_guide_stops_short_by_the_known_kl_gap(correlated):
    model, x = correlated
    precision = torch.linalg.inv(model.posterior(x).covariance_matrix[0])
    gap = 0.5 * (precision.diagonal().log().sum() - torch.logdet(precision))
    assert gap > 0.1
    guide = AmortizedNormal(D, 2, hidden=())
    fit(guide, model, x, 300, TraceMeanField_ELBO(num_particles=4, vectorize_particles=True))
    kl = kl_to_posterior(guide, model, x)
    # the best diagonal Gaussian has variances 1 / Lambda_ii and the exact mean: KL = gap
    assert kl.mean().item() == pytest.approx(gap.item(), abs=0.02)
    assert kl.min() >= gap - 1e-4  # no diagonal Gaussian does better (up to float32)
