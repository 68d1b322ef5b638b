"""Importance-sampled log-likelihood against the exact log p(x) of a linear-Gaussian model."""

import math

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO

from helpers import exact_guide, linear_gaussian, shifted_guide
from pyrolvm.errors import ConfigError
from pyrolvm.inference import IWAE, importance_sample, log_likelihood, mean_and_stderr


def test_exact_posterior_guide_gives_exact_elbo_and_log_likelihood():
    model, x = linear_gaussian()
    exact = model.log_marginal(x).detach().double()
    result = importance_sample(model, exact_guide(model), x, num_samples=7, batch_size=6)
    # With q = p(z | x) every weight p(x, z) / q(z | x) equals p(x): no Monte Carlo error,
    # only float32 rounding of the log-densities (|log p| ~ 10 nats, eps 1.2e-7).
    assert result.log_likelihood.shape == (20,)
    torch.testing.assert_close(result.elbo, exact, atol=1e-4, rtol=0)
    torch.testing.assert_close(result.log_likelihood, exact, atol=1e-4, rtol=0)
    torch.testing.assert_close(result.ess, torch.full((20,), 7.0, dtype=torch.float64),
                               atol=1e-3, rtol=0)
    loss = IWAE(num_particles=3).loss(model, exact_guide(model), x)
    assert loss == pytest.approx(-exact.sum().item(), abs=1e-3)


def test_importance_sampling_agrees_with_exact_log_likelihood():
    model, x = linear_gaussian()
    exact = model.log_marginal(x).detach().double()
    k = 2000
    result = importance_sample(model, shifted_guide(model), x, num_samples=k, chunk_size=300)
    # Delta method: the standard error of log((1/K) sum w) is sqrt(Var(w) / K) / E[w], and
    # Var(w) / E[w]^2 is estimated by K / ESS - 1. Its bias, -Var(w) / (2 K E[w]^2), is far
    # smaller. Allow 4 standard errors per datapoint.
    stderr = ((k / result.ess - 1) / k).sqrt()
    assert (stderr > 0).all()
    assert ((result.log_likelihood - exact).abs() < 4 * stderr + 1e-4).all()
    # The shifted guide is genuinely poor: its ELBO is well below log p(x).
    assert (result.elbo < exact - 0.1).all()
    # Chunking over particles does not change the estimate's distribution; a different chunk
    # size with the same seed gives a different but equally accurate answer.
    pyro.set_rng_seed(3)
    again = log_likelihood(model, shifted_guide(model), x, num_samples=k, chunk_size=k)
    assert ((again - exact).abs() < 4 * stderr + 1e-4).all()


def test_elbo_below_importance_sampling_below_exact():
    model, x = linear_gaussian()
    exact = model.log_marginal(x).detach().double()
    result = importance_sample(model, shifted_guide(model, 1.0, 2.0), x, num_samples=500)
    k = result.num_samples
    stderr = ((k / result.ess - 1) / k).sqrt()
    assert (result.elbo < result.log_likelihood).all()
    assert (result.log_likelihood < exact + 4 * stderr).all()


def test_iwae_bound_non_decreasing_in_k():
    model, x = linear_gaussian()
    guide = shifted_guide(model, 1.0, 2.0)
    reps = 200
    data = x.repeat(reps, 1)  # every row an independent draw of the K-sample bound
    exact = model.log_marginal(x).sum().item()
    means, errs = [], []
    for k in (1, 5, 50):
        pyro.set_rng_seed(k)
        draws = importance_sample(model, guide, data, num_samples=k, batch_size=1000)
        per_set = draws.log_likelihood.reshape(reps, -1).sum(-1)  # L_K summed over the 20 points
        mean, err = mean_and_stderr(per_set)
        means.append(mean)
        errs.append(err)
    # Burda et al. (2016), Theorem 1: L_1 <= L_5 <= L_50 <= log p(x). Each gap must exceed
    # 4 standard errors of the difference of two independent means.
    for i in range(2):
        assert means[i + 1] - means[i] > 4 * math.hypot(errs[i], errs[i + 1])
    assert means[-1] < exact + 4 * errs[-1]


def test_iwae_with_one_particle_is_trace_elbo():
    model, x = linear_gaussian()
    guide = shifted_guide(model)
    pyro.set_rng_seed(5)  # max_plate_nesting given: no guessing run consumes random numbers
    iwae = IWAE(num_particles=1, max_plate_nesting=1).loss(model, guide, x)
    pyro.set_rng_seed(5)
    trace = Trace_ELBO().loss(model, guide, x)
    assert iwae == pytest.approx(trace, rel=1e-5)


def test_iwae_loss_scales_with_poutine_scale():
    model, x = linear_gaussian()
    guide = exact_guide(model)
    loss = IWAE(num_particles=4).loss(model, guide, x)
    scaled = IWAE(num_particles=4).loss(poutine.scale(model, scale=3.0),
                                        poutine.scale(guide, scale=3.0), x)
    assert scaled == pytest.approx(3 * loss, rel=1e-5)


def test_iwae_gradient_matches_autograd_of_exact_bound():
    # With the exact posterior as guide the bound is log p(x) for every K, so its gradient with
    # respect to the model's parameters is the gradient of the closed-form log-marginal.
    model, x = linear_gaussian()
    guide = exact_guide(model)
    loss = IWAE(num_particles=5).differentiable_loss(model, guide, x)
    (grad_w,) = torch.autograd.grad(loss, [model.weight])
    (ref_w,) = torch.autograd.grad(-model.log_marginal(x).sum(), [model.weight])
    torch.testing.assert_close(grad_w, ref_w, atol=1e-3, rtol=1e-3)


def test_prior_proposal_is_naive_monte_carlo():
    model, x = linear_gaussian()
    exact = model.log_marginal(x).detach().double()
    result = importance_sample(model, None, x, num_samples=20000, proposal="prior")
    k = result.num_samples
    stderr = ((k / result.ess - 1) / k).sqrt()
    assert ((result.log_likelihood - exact).abs() < 4 * stderr + 1e-4).all()
    # Under the prior the log-weights are log p(x | z): the ELBO estimate is E_p(z)[log p(x|z)].
    assert (result.ess < 0.5 * k).all()


def test_bad_arguments():
    model, x = linear_gaussian()
    with pytest.raises(ConfigError, match="num_samples"):
        importance_sample(model, exact_guide(model), x, num_samples=0)
    with pytest.raises(ConfigError, match="proposal"):
        importance_sample(model, exact_guide(model), x, proposal="posterior")
    with pytest.raises(ConfigError, match="num_particles"):
        IWAE(num_particles=0)


def test_particles_are_chunked_so_memory_stays_bounded(monkeypatch):
    from pyrolvm.inference import MultiSampleELBO

    model, x = linear_gaussian()
    calls = []
    real = MultiSampleELBO.importance_weights

    def spy(self, model, guide, *args, **kwargs):
        calls.append((args[0].shape[0], self.num_particles))
        return real(self, model, guide, *args, **kwargs)

    monkeypatch.setattr(MultiSampleELBO, "importance_weights", spy)
    importance_sample(model, exact_guide(model), x, num_samples=5000, batch_size=8)
    # Default chunking keeps batch_size * chunk_size <= 10,000 model evaluations per call,
    # and every datapoint still gets all K = 5000 samples.
    assert max(b * k for b, k in calls) <= 10000
    assert sum(k for b, k in calls if b == 8) == 2 * 5000
    assert sum(k for b, k in calls if b == 4) == 5000
