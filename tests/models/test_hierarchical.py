"""The two-stochastic-layer VAE and its guide: exact log-likelihood of its linear-Gaussian
case against importance sampling, shapes, training under every kind of objective."""

import pyro
import pytest
import torch

from pyrolvm.guides import TwoLayerGuide
from pyrolvm.inference import importance_sample, make_elbo, mean_and_stderr
from pyrolvm.models import TwoLayerVAE

D, L1, L2 = 4, 3, 2


def linear_pair(seed=0):
    """Linear layers and a constant scale of p(z1 | z2): the model is linear-Gaussian, with
    x ~ N(B a + b, B (A A^T + S^2) B^T + sigma^2 I) for z1 = A z2 + a + S eps."""
    torch.manual_seed(seed)
    model = TwoLayerVAE(D, (L1, L2), ((), ()), likelihood="gaussian")
    guide = TwoLayerGuide(D, (L1, L2), ((), ()))
    with torch.no_grad():
        model.top[0].weight[L1:] = 0.0  # the scale of p(z1 | z2) does not depend on z2
        model.log_scale.fill_(0.0)  # sigma = 1
    return model, guide


def exact_log_marginal(model, x):
    top, dec = model.top[0], model.decoder[0]
    a_mat, a = top.weight[:L1], top.bias[:L1]
    s = torch.nn.functional.softplus(top.bias[L1:]) + model.min_scale
    b_mat, b = dec.weight, dec.bias
    cov1 = a_mat @ a_mat.T + torch.diag(s**2)
    cov = b_mat @ cov1 @ b_mat.T + torch.diag(model.log_scale.exp() ** 2)
    mean = b_mat @ a + b
    return torch.distributions.MultivariateNormal(mean, covariance_matrix=cov).log_prob(x)


def test_importance_sampled_log_likelihood_converges_to_the_exact_value():
    model, guide = linear_pair()
    with torch.no_grad():
        x = model.sample(30, mean=False)
        exact = exact_log_marginal(model, x)
    # a proposal fitted to this x (model fixed): q need not be exact, only reasonable
    for p in model.parameters():
        p.requires_grad_(False)
    model.train(False)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), pyro.infer.Trace_ELBO())
    for _ in range(200):
        svi.step(x)
    result = importance_sample(model, guide, x, num_samples=2000)
    # the ELBO (mean log-weight of the same draws) is below log p(x) by the guide's KL (its
    # diagonal factors miss the posterior's correlations), by more than 4 standard errors
    elbo_gap, elbo_se = mean_and_stderr(exact - result.elbo)
    assert elbo_gap > 4 * elbo_se
    # the K = 2000 estimate is the exact log p(x): the mean paired difference over the 30
    # points is within 4 of its standard errors of zero, and within 0.02 nats
    diff, se = mean_and_stderr(exact - result.log_likelihood)
    assert abs(diff) < 4 * se and abs(diff) < 0.04 and abs(diff) < elbo_gap / 4


def test_shapes_and_samples():
    model, guide = TwoLayerVAE(D, (L1, L2), ((8,), (8,))), TwoLayerGuide(D, (L1, L2), ((8,), (8,)))
    x = torch.bernoulli(torch.rand(5, D))
    trace = pyro.poutine.trace(guide).get_trace(x)
    assert trace.nodes["z1"]["value"].shape == (5, L1)
    assert trace.nodes["z2"]["value"].shape == (5, L2)
    assert model.sample(3).shape == (3, D)
    assert model.decode(guide.encode(x)[0]).shape == (5, D)


@pytest.mark.parametrize("name", ["trace", "iwae", "dreg", "stl", "vimco"])
def test_every_objective_takes_a_step(name):
    pyro.clear_param_store()
    torch.manual_seed(0)
    model, guide = TwoLayerVAE(D, (L1, L2), ((8,), (8,))), TwoLayerGuide(D, (L1, L2), ((8,), (8,)))
    x = torch.bernoulli(torch.rand(5, D))
    loss = make_elbo(name, 3).loss_and_grads(model, guide, x)
    assert loss == loss and loss > 0
    grads = [p.grad for p in list(model.parameters()) + list(guide.parameters())]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
