"""Every objective's reported loss, at fixed parameters, equals its bound recomputed here
from the very draws the objective made (so exactly, up to float32 rounding).

The guide records the particles z it drew; the log-weights log p(x, z) - log q(z | x) of the
linear-Gaussian model are then recomputed with torch.distributions, and the bound from its
definition: the ELBO (1/K) sum_k log w_k (``trace``, ``tracegraph``, ``stl``), the ELBO with
the analytic KL (``meanfield``), or the IWAE bound log (1/K) sum_k w_k (``iwae``, ``dreg``,
``vimco``), summed over the batch. This is the value `pyrolvm train` reports per step.
"""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.distributions import kl_divergence

from helpers import linear_gaussian
from pyrolvm.inference import ELBOS, make_elbo

K = 2  # > 1, so that Pyro vectorizes the particles (a mutant "> 2" would not)

BOUND = {"trace": "elbo", "tracegraph": "elbo", "stl": "elbo", "meanfield": "elbo_kl",
         "iwae": "iwae", "dreg": "iwae", "vimco": "iwae"}


def recording_guide(model, shift=0.5, inflate=1.5):
    draws = []

    def guide(x):
        post = model.posterior(x)
        scale = post.covariance_matrix.diagonal(dim1=-2, dim2=-1).sqrt() * inflate
        q = dist.Normal(post.loc + shift, scale).to_event(1)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", q)
        draws.append((z.detach(), q))

    return guide, draws


def bound_from_draws(model, x, z, q, kind):
    z = z.reshape((-1,) + x.shape[:1] + z.shape[-1:])  # (K, B, L), also for unvectorized K = 1
    prior = dist.Normal(torch.zeros(z.shape[-1]), 1.0).to_event(1)
    lik = dist.Normal(z @ model.weight.T + model.bias, model.noise_scale).to_event(1)
    log_lik = lik.log_prob(x)
    log_w = log_lik + prior.log_prob(z) - q.log_prob(z)
    if kind == "elbo":
        return log_w.mean(0).sum()
    if kind == "elbo_kl":  # Pyro's TraceMeanField_ELBO: E_q log p(x | z) - KL(q || p(z))
        return log_lik.mean(0).sum() - kl_divergence(q, prior).reshape(-1)[: x.shape[0]].sum()
    return (log_w.logsumexp(0) - math.log(z.shape[0])).sum()


def test_every_registered_objective_is_checked():
    assert set(BOUND) == set(ELBOS)


@pytest.mark.parametrize("name", sorted(ELBOS))
@pytest.mark.parametrize("method", ["loss", "loss_and_grads"])
def test_reported_loss_is_minus_the_bound_on_the_same_draws(name, method):
    model, x = linear_gaussian()
    guide, draws = recording_guide(model)
    elbo = make_elbo(name, K)
    for _ in range(2):  # the first call may also guess the plate nesting (an extra guide run)
        draws.clear()
        value = getattr(elbo, method)(model, guide, x)
        z, q = draws[-1]  # the run whose weights make the loss
        assert z.shape[0] == K and z.dim() == 3
        expected = -bound_from_draws(model, x, z, q, BOUND[name]).item()
        assert value == pytest.approx(expected, abs=1e-3, rel=1e-5), (name, value, expected)


@pytest.mark.parametrize("name", ["trace", "iwae", "dreg", "stl"])
def test_differentiable_loss_value_is_minus_the_bound(name):
    model, x = linear_gaussian()
    guide, draws = recording_guide(model)
    elbo = make_elbo(name, K)
    elbo.differentiable_loss(model, guide, x)  # guesses the plate nesting
    draws.clear()
    loss = elbo.differentiable_loss(model, guide, x)
    z, q = draws[-1]
    expected = -bound_from_draws(model, x, z, q, BOUND[name]).item()
    assert loss.item() == pytest.approx(expected, abs=1e-3, rel=1e-5)


def test_make_elbo_errors_name_the_choices():
    from pyrolvm.errors import ConfigError

    with pytest.raises(ConfigError, match="^unknown ELBO 'renyi': choose one of "
                       + ", ".join(ELBOS) + "$"):
        make_elbo("renyi")
    with pytest.raises(ConfigError, match="^num_particles must be >= 1, got 0$"):
        make_elbo("trace", 0)


def test_extra_arguments_reach_model_and_guide():
    # positional and keyword arguments after the data are passed to model and guide alike
    from pyrolvm.inference import IWAE, log_likelihood

    model, x = linear_gaussian()
    guide, _ = recording_guide(model)
    calls = []

    def model_(x, tag, flag=None):
        calls.append(("model", tag, flag))
        return model(x)

    def guide_(x, tag, flag=None):
        calls.append(("guide", tag, flag))
        return guide(x)

    IWAE(K).loss(model_, guide_, x, "pos", flag="kw")
    assert calls and set(calls) == {("model", "pos", "kw"), ("guide", "pos", "kw")}
    calls.clear()
    log_likelihood(model_, guide_, x, "pos", num_samples=3, flag="kw")
    assert calls and set(calls) == {("model", "pos", "kw"), ("guide", "pos", "kw")}
