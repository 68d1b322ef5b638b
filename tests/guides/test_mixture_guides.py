"""Guides of the Gaussian mixture's global sites: MAP (AutoDelta) and mean-field."""

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO
from torch.distributions import constraints

from pyrolvm.errors import ConfigError
from pyrolvm.fitting import initial_params
from pyrolvm.guides import MixtureMAP, MixtureMeanField
from pyrolvm.models import GaussianMixture


def make_data(covariance, seed=0):
    model = GaussianMixture(3, 2, covariance, num_data=60)
    gen = torch.Generator().manual_seed(seed)
    x = torch.cat([torch.randn(20, 2, generator=gen) + 5 * i for i in range(3)])
    return model, x, initial_params(model, x, "kmeans++", seed=0)


def log_prior(model, params):
    td = torch.distributions
    lp = td.Dirichlet(torch.full((model.num_components,), model.weight_concentration)).log_prob(
        params["weights"]
    )
    lp = lp + td.Normal(model.loc_loc, model.loc_scale).log_prob(params["locs"]).sum()
    lp = lp + td.LogNormal(model.scale_loc, model.scale_scale).log_prob(params["scales"]).sum()
    if "corr" in params:
        lp = (
            lp
            + td.LKJCholesky(model.data_dim, model.corr_concentration)
            .log_prob(params["corr"])
            .sum()
        )
    return lp


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_meanfield_single_particle_loss_is_minus_log_weight(covariance):
    """One-particle TraceEnum_ELBO loss = -(sum_n log p(x_n|theta) + log p(theta) - log q(theta))
    at the guide's draw theta: the assignment summed out exactly, the globals sampled."""
    model, x, init = make_data(covariance)
    guide = MixtureMeanField(model, init, init_scale=0.1)
    pyro.set_rng_seed(1)
    guide_trace = poutine.trace(guide).get_trace(x)
    theta = {s: guide_trace.nodes[s]["value"] for s in model.global_sites}
    log_q = guide_trace.log_prob_sum()
    pyro.set_rng_seed(1)
    loss = TraceEnum_ELBO(max_plate_nesting=1).loss(model, guide, x)
    expected = -(
        model.log_likelihood(x, theta).double().sum()
        + log_prior(model, theta).double()
        - log_q.double()
    )
    assert loss == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_meanfield_median_starts_at_init_and_lies_in_supports(covariance):
    model, x, init = make_data(covariance)
    guide = MixtureMeanField(model, init)
    med = guide.median()
    for name in model.global_sites:
        torch.testing.assert_close(med[name], init[name], rtol=1e-4, atol=1e-5)
    assert constraints.simplex.check(med["weights"]).all()
    assert (med["scales"] > 0).all()
    if covariance == "full":
        assert constraints.corr_cholesky.check(med["corr"]).all()
    # every guide site is reparameterized, so the ELBO gets pathwise gradients
    trace = poutine.trace(guide).get_trace(x)
    sites = [trace.nodes[name] for name in model.global_sites]
    assert all(site["fn"].has_rsample for site in sites)


def test_meanfield_gradients_reach_every_parameter():
    model, x, init = make_data("full")
    guide = MixtureMeanField(model, init)
    loss = TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(model, guide, x)
    loss.backward()
    for name, p in guide.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_guides_need_every_global_site():
    model, x, init = make_data("full")
    partial = {k: v for k, v in init.items() if k != "corr"}
    with pytest.raises(ConfigError, match="corr"):
        MixtureMAP(model, partial)
    with pytest.raises(ConfigError, match="corr"):
        MixtureMeanField(model, partial)
    with pytest.raises(ConfigError, match="init_values"):
        MixtureMeanField(model, None)


def test_meanfield_gradients_match_finite_differences():
    # With the noise fixed (same seed) the one-particle loss is a smooth function of the
    # guide's parameters through reparameterized draws; its autograd gradient must match
    # central differences, in float64 (eps 1e-5: truncation ~eps^2, rounding ~1e-16 |loss| /
    # eps, both far below the 1e-4 relative tolerance). The Dirichlet's concentration is left
    # out: its implicit reparameterization gradient (Figurnov et al. 2018) is the derivative
    # at a fixed CDF value, not along the seeded rejection sampler's path.
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        model, x, init = make_data("full")
        x = x.double()
        init = {k: v.double() for k, v in init.items()}
        guide = MixtureMeanField(model, init, init_scale=0.1)
        elbo = TraceEnum_ELBO(max_plate_nesting=1)

        def loss():
            pyro.set_rng_seed(0)
            return elbo.differentiable_loss(model, guide, x)

        params = {n: p for n, p in guide.named_parameters() if "concentration" not in n}
        assert len(params) >= 4  # locs (loc, scale), scales (loc, scale), corr
        grads = dict(zip(params, torch.autograd.grad(loss(), list(params.values())), strict=True))
        eps = 1e-5
        for name, p in params.items():
            flat = p.data.view(-1)
            for i in sorted({0, flat.numel() // 2, flat.numel() - 1}):
                old = flat[i].item()
                flat[i] = old + eps  # p.data: no autograd history
                up = loss().item()
                flat[i] = old - eps
                down = loss().item()
                flat[i] = old
                fd = (up - down) / (2 * eps)
                g = grads[name].reshape(-1)[i].item()
                assert g == pytest.approx(fd, rel=1e-4, abs=1e-6), (name, i, g, fd)
    finally:
        torch.set_default_dtype(default)
