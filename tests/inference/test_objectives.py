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
from helpers import linear_gaussian
from torch.distributions import kl_divergence

from pyrolvm.inference import ELBOS, make_elbo

K = 2  # > 1, so that Pyro vectorizes the particles (a mutant "> 2" would not)

BOUND = {
    "trace": "elbo",
    "tracegraph": "elbo",
    "stl": "elbo",
    "meanfield": "elbo_kl",
    "iwae": "iwae",
    "dreg": "iwae",
    "vimco": "iwae",
    # the loss-issue objectives at the settings that reduce them to a bound above
    "beta": "elbo",
    "freebits": "elbo",
    "mmd": "elbo",
    "renyi": "iwae",
    "miwae": "iwae",
    "piwae": "iwae",
    "miwae-dreg": "iwae",
    "ciwae": "iwae",
}
OPTIONS = {
    "beta": {"beta": 1.0},
    "freebits": {"free_bits": 0.0},
    "mmd": {"mmd_weight": 0.0},
    "renyi": {"alpha": 0.0},
    "miwae": {"num_groups": 1},
    "piwae": {"num_groups": 1},
    "miwae-dreg": {"num_groups": 1},
    "ciwae": {"beta": 0.0},
}


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
    elbo = make_elbo(name, K, **OPTIONS.get(name, {}))
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

    with pytest.raises(
        ConfigError, match="^unknown ELBO 'renyi2': choose one of " + ", ".join(ELBOS) + "$"
    ):
        make_elbo("renyi2")
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


@pytest.mark.parametrize("leave_one_out", [True, False])
def test_vimco_guide_gradient_on_the_same_draws(leave_one_out):
    # VIMCO's guide gradient written out for the draws it made (Mnih & Rezende 2016, eqs. 8-10):
    #   sum_k (L - L_-k) grad log q(z_k) + sum_k w~_k grad log w_k,
    #   L = log (1/K) sum_j w_j,  L_-k = log (1/K) (sum_{j != k} w_j + exp(mean_{j != k} log w_j)),
    # (L_-k = 0 without leave-one-out baselines), z_k held fixed (not reparameterized).
    # Any baseline independent of z_k keeps the estimator unbiased, so the unbiasedness tests
    # in test_estimators.py cannot see a wrong baseline; this one can.
    from pyrolvm.guides.amortized import non_reparameterized
    from pyrolvm.inference import VIMCO

    model, x = linear_gaussian()
    k = 4
    x = x[:3]
    draws = []

    def guide(x):
        loc = pyro.param("q_loc", torch.zeros(3, 2) + 0.3)
        log_scale = pyro.param("q_log_scale", torch.full((3, 2), -0.2))
        q = non_reparameterized(dist.Normal(loc, log_scale.exp())).to_event(1)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", q)
        draws.append(z.detach())

    guide(x)
    elbo = VIMCO(k, max_plate_nesting=1, leave_one_out=leave_one_out)
    store = pyro.get_param_store()
    params = [store.get_param(n).unconstrained() for n in ("q_loc", "q_log_scale")]
    for p in params:
        p.grad = None
    draws.clear()
    value = elbo.loss_and_grads(model, guide, x)
    got = [-p.grad.clone() for p in params]  # gradient of the bound
    (z,) = draws
    assert z.shape == (k, 3, 2)
    loc, log_scale = params
    log_q = dist.Normal(loc, log_scale.exp()).log_prob(z).sum(-1)  # (K, B), differentiable
    with torch.no_grad():
        log_p = dist.Normal(0.0, 1.0).log_prob(z).sum(-1) + dist.Normal(
            z @ model.weight.T + model.bias, model.noise_scale
        ).log_prob(x).sum(-1)
    log_w = log_p - log_q
    lw = log_w.detach()
    bound = lw.logsumexp(0) - math.log(k)
    if leave_one_out:
        loo = []
        for j in range(k):
            others = torch.cat([lw[:j], lw[j + 1 :]])
            loo.append(torch.cat([others, others.mean(0, keepdim=True)]).logsumexp(0) - math.log(k))
        signal = bound - torch.stack(loo)
    else:
        signal = bound.expand(k, -1)
    surrogate = (signal * log_q).sum() + (log_w.logsumexp(0) - math.log(k)).sum()
    expected = torch.autograd.grad(surrogate, params)
    assert value == pytest.approx(-bound.sum().item(), abs=1e-4)  # the score term adds 0
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, atol=1e-4, rtol=1e-4)
        assert e.abs().sum() > 0


@pytest.mark.parametrize("name", ["dreg", "stl", "vimco", "iwae"])
def test_gradients_accumulate_into_existing_grads(name):
    # loss_and_grads adds its gradient to whatever .grad holds, as Pyro's ELBOs do (SVI zeroes
    # the grads between steps, so a zero tensor, not None, is the usual starting point). A
    # guide with two latent sites takes DReG's general two-pass path.
    def model(x):
        with pyro.plate("data", x.shape[0]):
            z1 = pyro.sample("z1", dist.Normal(0.0, 1.0))
            z2 = pyro.sample("z2", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z1 + z2 * pyro.param("w", torch.tensor(0.7)), 1.0), obs=x)

    def guide(x):
        a = pyro.param("a", torch.full((x.shape[0],), 0.2))
        b = pyro.param("b", torch.full((x.shape[0],), -0.1))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z1", dist.Normal(a, 0.8))
            pyro.sample("z2", dist.Normal(b + 0.0, 0.9))

    x = torch.tensor([0.5, -1.0, 2.0])
    elbo = make_elbo(name, 3)
    guide(x)
    model(x)
    params = [pyro.param(n).unconstrained() for n in ("w", "a", "b")]

    def grads(start):
        for p, s in zip(params, start, strict=True):
            p.grad = None if s is None else s.clone()
        pyro.set_rng_seed(11)
        elbo.loss_and_grads(model, guide, x)
        return [p.grad.clone() for p in params]

    elbo.loss(model, guide, x)  # guesses the plate nesting before the seeded calls
    fresh = grads([None] * 3)
    assert all(g.abs().sum() > 0 for g in fresh)
    zeros = grads([torch.zeros_like(p) for p in params])
    offset = [torch.full_like(p, 0.25) for p in params]
    shifted = grads(offset)
    for f, z, s, o in zip(fresh, zeros, shifted, offset, strict=True):
        torch.testing.assert_close(z, f)
        torch.testing.assert_close(s, f + o)


@pytest.mark.parametrize("name", ["iwae", "dreg", "stl", "vimco"])
def test_a_named_batch_plate_must_exist(name):
    from pyrolvm.errors import ConfigError
    from pyrolvm.inference import ELBOS

    model, x = linear_gaussian()
    guide, _ = recording_guide(model)
    cls = type(ELBOS[name](2))
    assert math.isfinite(cls(2, batch_plate="data").loss(model, guide, x))
    with pytest.raises(ConfigError, match="no plate named 'nope'"):
        cls(2, batch_plate="nope").loss(model, guide, x)
