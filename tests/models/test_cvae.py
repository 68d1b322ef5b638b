"""The conditional VAE and its baseline: log p(y | x) against closed forms."""

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F

from pyrolvm.errors import ConfigError
from pyrolvm.guides import CVAEGuide
from pyrolvm.inference import importance_sample, train
from pyrolvm.models import CVAE, BaselineNet, no_latents
from pyrolvm.runs.cvae import on_labels

X, Y, L = 2, 3, 2


def linear_cvae(seed=0, prior="conditional"):
    """A CVAE with no hidden layer and a Gaussian likelihood: z | x ~ N(A x + a, diag(s_z^2))
    (``prior="standard"``: N(0, I)), y | x, z ~ N(B_x x + B_z z + b, diag(s_y^2)), a
    linear-Gaussian conditional model."""
    gen = torch.Generator().manual_seed(seed)
    model = CVAE(X, Y, latent_dim=L, hidden=(), likelihood="gaussian", prior=prior)
    with torch.no_grad():
        if prior == "conditional":
            net = model.prior_net[0]
            net.weight.zero_()
            net.weight[:L].copy_(torch.randn(L, X, generator=gen))  # A
            net.bias[:L].copy_(torch.randn(L, generator=gen))  # a
            net.bias[L:].copy_(torch.tensor([0.3, -0.5]))  # s_z = softplus(.) + min_scale
        model.generation_net[0].weight.copy_(torch.randn(Y, X + L, generator=gen))
        model.generation_net[0].bias.copy_(torch.randn(Y, generator=gen))
        model.log_scale.copy_(torch.tensor([0.4, 0.6, 0.8]).log())
    return model


def parts(model, x):
    loc, scale = model.prior(x)
    w, b = model.generation_net[0].weight, model.generation_net[0].bias
    bx, bz = w[:, :X], w[:, X:]
    return loc.double(), scale.double(), bx.double(), bz.double(), b.double()


def exact_log_p_y_given_x(model, x, y):
    """log N(y; B_x x + B_z mu(x) + b, B_z diag(s_z^2) B_z^T + diag(s_y^2))."""
    loc, scale, bx, bz, b = parts(model, x)
    mean = x.double() @ bx.T + loc @ bz.T + b
    cov = torch.einsum("dl,bl,el->bde", bz, scale**2, bz) + torch.diag(
        model.log_scale.exp().double() ** 2
    )
    return dist.MultivariateNormal(mean, cov).log_prob(y.double())


def exact_posterior(model, x, y):
    """p(z | x, y): precision diag(1 / s_z^2) + B_z^T diag(1 / s_y^2) B_z."""
    loc, scale, bx, bz, b = parts(model, x)
    prec_y = 1 / model.log_scale.exp().double() ** 2
    precision = torch.diag_embed(1 / scale**2) + (bz.T * prec_y) @ bz
    cov = torch.linalg.inv(precision)
    rhs = loc / scale**2 + (prec_y * (y.double() - x.double() @ bx.T - b)) @ bz
    return torch.einsum("blk,bk->bl", cov, rhs), cov


def posterior_guide(model, shift=0.0, inflate=1.0, full=False):
    def guide(x, y):
        with torch.no_grad():
            loc, cov = exact_posterior(model, x, y)
        with pyro.plate("data", x.shape[0]):
            if full:
                pyro.sample("z", dist.MultivariateNormal(loc.float(), cov.float()))
            else:
                scale = cov.diagonal(dim1=-2, dim2=-1).sqrt() * inflate
                pyro.sample("z", dist.Normal((loc + shift).float(), scale.float()).to_event(1))

    return guide


def data(model, n=10, seed=1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, X, generator=gen)
    pyro.set_rng_seed(seed)
    with torch.no_grad():
        y = model.sample(x, mean=False)[0]
    return x, y


def one_hot_data(model, n=10, seed=1):
    """(labels, y): X classes, y | label drawn from the model with x = one_hot(label), the
    class-conditional VAE's input (``pyrolvm train cvae --condition label``)."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(X, (n,), generator=gen)
    pyro.set_rng_seed(seed)
    with torch.no_grad():
        y = model.sample(F.one_hot(labels, X).to(torch.get_default_dtype()), mean=False)[0]
    return labels, y


@pytest.mark.parametrize(
    "prior, inputs",
    [("conditional", "vector"), ("standard", "vector"), ("conditional", "label")],
)
def test_cvae_conditional_log_likelihood_converges_to_the_exact_log_p_y_given_x(prior, inputs):
    model = linear_cvae(prior=prior)
    if inputs == "vector":
        x, y = data(model)
        args, wrap = (x, y), lambda fn: fn
    else:  # the class-conditional run's path: rows (image y, label), x = one_hot(label)
        labels, y = one_hot_data(model)
        x = F.one_hot(labels, X).to(y.dtype)
        args, wrap = (y, labels), lambda fn: on_labels(fn, X)
    exact = exact_log_p_y_given_x(model, x, y)
    # the exact posterior as proposal: every weight is p(y | x), whatever K
    pyro.set_rng_seed(0)
    guide = wrap(posterior_guide(model, full=True))
    result = importance_sample(wrap(model), guide, args, num_samples=3)
    torch.testing.assert_close(result.log_likelihood, exact, atol=1e-4, rtol=0)
    # a poorer proposal converges: |error| < 4 delta-method SEs sqrt((K / ESS - 1) / K)
    pyro.set_rng_seed(0)
    k = 4000
    guide = wrap(posterior_guide(model, shift=0.3, inflate=1.3))
    result = importance_sample(wrap(model), guide, args, num_samples=k, batch_size=5)
    se = ((k / result.ess - 1) / k).sqrt()
    assert ((result.log_likelihood - exact).abs() < 4 * se + 1e-4).all()
    assert se.max() < 0.05  # the check has teeth: 4 SEs < 0.2 nats
    # and the ELBO of the same draws lies below it (Jensen)
    assert (result.elbo < exact).all()


def test_sites_sampling_and_the_recognition_network():
    pyro.clear_param_store()
    model = CVAE(6, 10, latent_dim=3, hidden=(8,))
    guide = CVAEGuide(6, 10, latent_dim=3, hidden=(8,))
    x, y = torch.rand(4, 6), torch.bernoulli(torch.full((4, 10), 0.5))
    model_trace = pyro.poutine.trace(model).get_trace(x, y)
    assert model_trace.nodes["y"]["is_observed"]
    assert model_trace.nodes["y"]["fn"].event_shape == (10,)
    assert model_trace.nodes["z"]["fn"].event_shape == (3,)
    assert model.sample(x, 5).shape == (5, 4, 10)
    z = pyro.poutine.trace(guide).get_trace(x, y).nodes["z"]["value"]
    assert z.shape == (4, 3)
    with pytest.raises(ConfigError, match="needs the output y"):
        guide(x)
    result = importance_sample(model, guide, (x, y), num_samples=7)
    assert result.log_likelihood.shape == (4,)


def test_baseline_log_likelihood_is_exact_and_feeds_the_prior():
    pyro.clear_param_store()
    net = BaselineNet(6, 10, hidden=(8,))
    x, y = torch.rand(20, 6), torch.bernoulli(torch.full((20, 10), 0.3))
    result = importance_sample(net, no_latents, (x, y), num_samples=2)
    with torch.no_grad():
        exact = dist.Bernoulli(logits=net.net(x)).log_prob(y).sum(-1)
    torch.testing.assert_close(result.log_likelihood, exact.double())
    history = train(net, no_latents, (x, y), epochs=30, batch_size=10, progress=False)
    assert history["train_elbo"][-1] > history["train_elbo"][0]  # maximum likelihood fit
    model = CVAE(6, 10, latent_dim=3, hidden=(8,), baseline=net)
    assert model.prior_net[0].in_features == 16  # reads x and ŷ(x)
    before = [p.clone() for p in net.parameters()]
    guide = CVAEGuide(6, 10, latent_dim=3, hidden=(8,))
    train(model, guide, (x, y), epochs=2, batch_size=10, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
    with pytest.raises(ConfigError, match="same input and output"):
        CVAE(5, 10, baseline=net)
    with pytest.raises(ConfigError, match="drop the baseline"):
        CVAE(6, 10, baseline=net, prior="standard")
    with pytest.raises(ConfigError, match="unknown prior"):
        CVAE(6, 10, prior="vamp")


def test_standard_prior_is_n01_whatever_the_input():
    model = CVAE(4, 6, latent_dim=3, hidden=(8,), prior="standard")
    assert model.prior_net is None
    x = torch.randn(5, 4)
    trace = pyro.poutine.trace(model).get_trace(x, torch.bernoulli(torch.full((5, 6), 0.5)))
    fn = trace.nodes["z"]["fn"].base_dist
    assert torch.equal(fn.loc, torch.zeros(5, 3)) and torch.equal(fn.scale, torch.ones(5, 3))


def test_quadrant_masks_follow_pyros_cvae_example():
    from pyrolvm.data import quadrant_mask

    one, two, three = (quadrant_mask((4, 4), q).view(4, 4) for q in (1, 2, 3))
    assert one.sum() == 4 and one[2:, :2].all()  # the bottom-left quadrant
    assert two.sum() == 8 and two[:, :2].all()  # the left half
    assert three.sum() == 12 and not three[2:, 2:].any()  # all but the bottom right
    with pytest.raises(ConfigError, match="1, 2 or 3"):
        quadrant_mask((4, 4), 4)
