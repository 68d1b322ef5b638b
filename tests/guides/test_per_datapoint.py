"""The per-datapoint guide and the amortization gap: refinement never lowers a point's ELBO,
and on the linear-Gaussian model (whose posterior the diagonal family holds exactly when
L = 1) it reaches the exact posterior, so the approximation gap vanishes."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI

from pyrolvm.errors import ConfigError
from pyrolvm.fitting.amortization import amortization_gap
from pyrolvm.guides.per_datapoint import PerDatapoint
from pyrolvm.inference import BetaELBO
from pyrolvm.models import LinearGaussian


def linear_gaussian():
    torch.manual_seed(0)
    model = LinearGaussian(torch.randn(5, 1), torch.randn(5) * 0.3, noise_scale=0.6)
    with torch.no_grad():
        x = model.marginal().sample((40,))
    return model, x


def test_refinement_reaches_the_exact_posterior_and_closes_the_gap():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    model, x = linear_gaussian()
    model(x)
    before = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}

    def prior_guide(x):  # a poor amortized guide: the prior for every point
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(x.new_zeros(len(x), 1), 1.0).to_event(1))

    gap = amortization_gap(
        model, prior_guide, x, steps=600, lr=0.05, num_particles=20, eval_samples=2000
    )
    post = model.posterior(x)
    assert torch.allclose(gap.loc["z"], post.loc.detach(), atol=0.03)
    sd = post.covariance_matrix[0].diagonal().sqrt().detach()
    assert torch.allclose(gap.scale["z"], sd.expand_as(gap.scale["z"]), rtol=0.1)
    exact = model.log_marginal(x).detach().double()
    assert (gap.elbo_refined - exact).abs().max() < 0.02  # q* = p(z|x): ELBO* = log p(x)
    assert (gap.log_likelihood - exact).abs().max() < 0.02
    s = gap.summary()
    assert abs(s["approximation_gap"]) < 0.01 and s["amortization_gap"] > 0.5
    assert s["inference_gap"] == pytest.approx(s["approximation_gap"] + s["amortization_gap"])
    assert (gap.elbo_refined >= gap.elbo_amortized).all()
    # the model was held fixed and the refined guide's params are gone from the store
    store = pyro.get_param_store()
    assert set(store.keys()) == set(before)
    assert all(torch.equal(store[k], before[k]) for k in before)


def test_refinement_never_lowers_a_points_elbo():
    # started at the exact posterior, SVI noise can only move it away: the point keeps q
    pyro.clear_param_store()
    pyro.set_rng_seed(1)
    model, x = linear_gaussian()
    post = model.posterior(x)
    sd = post.covariance_matrix[0].diagonal().sqrt().detach()

    def exact_guide(x):
        p = model.posterior(x)
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(p.loc.detach(), sd.expand(len(x), 1)).to_event(1))

    gap = amortization_gap(
        model, exact_guide, x, steps=20, lr=0.2, num_particles=1, eval_samples=500
    )
    assert (gap.elbo_refined >= gap.elbo_amortized).all()
    assert gap.summary()["amortization_gap"] >= 0


def test_per_datapoint_svi_over_a_subsampled_plate():
    # non-amortized SVI with minibatches of 10 of N = 40 points: the guide's parameters
    # approach each point's exact posterior
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    torch.manual_seed(0)
    n, prior_sd, noise = 40, 1.0, 0.5
    data = torch.randn(n) * 1.2

    def model(x, subsample=None):
        with pyro.plate("data", n, subsample=subsample) as idx:
            z = pyro.sample("z", dist.Normal(torch.zeros(len(idx), 1), prior_sd).to_event(1))
            pyro.sample("x", dist.Normal(z[..., 0], noise), obs=data[idx])

    guide = PerDatapoint(n, 1)
    svi = SVI(model, guide, pyro.optim.ClippedAdam({"lr": 0.05, "lrd": 0.996}), BetaELBO(10))
    for _ in range(800):
        idx = torch.randperm(n)[:10]
        svi.step(data[idx], subsample=idx)
    post_var = 1 / (1 / prior_sd**2 + 1 / noise**2)
    loc, scale = guide.encode()
    assert torch.allclose(loc[:, 0], post_var * data / noise**2, atol=0.05)
    assert torch.allclose(scale[:, 0], torch.full((n,), post_var**0.5), rtol=0.1)


def test_errors():
    with pytest.raises(ConfigError):
        PerDatapoint(0, 2)
    with pytest.raises(ConfigError):
        PerDatapoint(3, 2, loc=torch.zeros(2, 2))
    with pytest.raises(ConfigError, match="subsample"):
        PerDatapoint(3, 2)(torch.zeros(4, 5))
