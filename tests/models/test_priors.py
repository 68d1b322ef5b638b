"""Priors of the VAE: the VampPrior is the mixture of the guide's posteriors at its
pseudo-inputs; the flow prior is a normalized density."""

import math

import pyro
import pytest
import torch
from pyro import poutine

from pyrolvm.errors import ConfigError
from pyrolvm.guides import AmortizedFullCovariance, AmortizedNormal
from pyrolvm.inference import IWAE
from pyrolvm.models import VAE, FlowPrior

D, L = 6, 3


@pytest.mark.parametrize("guide_class", [AmortizedNormal, AmortizedFullCovariance])
def test_vamp_prior_with_one_pseudo_input_is_the_posterior_there(guide_class):
    torch.manual_seed(0)
    guide = guide_class(D, L, (8,))
    x = torch.rand(1, D)
    model = VAE(
        D, L, (8,), prior="vamp", num_pseudo_inputs=1, posterior=guide.posterior, pseudo_init=x
    )
    z = torch.randn(50, L) * 2
    with torch.no_grad():
        expected = guide.posterior(x).log_prob(z)
        assert torch.allclose(model.prior.distribution().log_prob(z), expected, atol=1e-5)


def test_vamp_prior_is_the_uniform_mixture_of_posteriors():
    torch.manual_seed(0)
    guide = AmortizedNormal(D, L, (8,))
    u = torch.rand(4, D)
    model = VAE(
        D, L, (8,), prior="vamp", num_pseudo_inputs=4, posterior=guide.posterior, pseudo_init=u
    )
    z = torch.randn(7, L)
    with torch.no_grad():
        per_component = torch.stack([guide.posterior(u[k : k + 1]).log_prob(z) for k in range(4)])
        expected = per_component.logsumexp(0) - math.log(4)
        assert torch.allclose(model.prior.distribution().log_prob(z), expected, atol=1e-5)


def test_vamp_prior_trains_pseudo_inputs_and_shares_the_encoder():
    """The model registers its pseudo-inputs but not the guide's encoder (registered once, by
    the guide), and the IWAE gradient reaches both through the prior."""
    pyro.clear_param_store()
    torch.manual_seed(0)
    guide = AmortizedNormal(D, L, (8,))
    model = VAE(D, L, (8,), prior="vamp", num_pseudo_inputs=3, posterior=guide.posterior)
    x = torch.bernoulli(torch.rand(5, D))
    names = {n for n, s in poutine.trace(model).get_trace(x).nodes.items() if s["type"] == "param"}
    assert "decoder$$$prior.pseudo_inputs" in names
    assert not any("encoder" in n for n in names)
    IWAE(num_particles=2).loss_and_grads(model, guide, x)
    assert model.prior.pseudo_inputs.grad.abs().sum() > 0
    with poutine.block():  # the prior's term alone reaches the encoder
        guide.zero_grad()
        model.prior.distribution().log_prob(torch.randn(2, L)).sum().backward()
    assert guide.encoder[0].weight.grad.abs().sum() > 0
    assert model.sample(3).shape == (3, D)


def test_vamp_prior_needs_the_guide_posterior():
    model = VAE(D, L, prior="vamp")  # built before its guide, as a run builds it
    with pytest.raises(ConfigError, match="posterior=guide.posterior"):
        model.sample(2)
    guide = AmortizedNormal(D, L)
    model.prior.set_posterior(guide.posterior)
    assert model.sample(2).shape == (2, D)
    with pytest.raises(ConfigError, match="unknown prior"):
        VAE(D, L, prior="laplace")


def test_flow_prior_is_normalized_and_its_draws_have_its_moments():
    torch.manual_seed(0)
    prior = FlowPrior(2, num_flows=2, hidden=(8,)).double()
    for p in prior.parameters():  # a visibly non-Gaussian flow
        torch.nn.init.normal_(p, std=0.2)
    t = torch.linspace(-10, 10, 401, dtype=torch.float64)
    zz = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        d = prior.distribution()
        mass = d.log_prob(zz).exp() * (t[1] - t[0]) ** 2
        assert mass.sum().item() == pytest.approx(1.0, abs=2e-3)  # Riemann sum, error << 1e-3
        mean = (mass[:, None] * zz).sum(0)
        var = (mass[:, None] * (zz - mean) ** 2).sum(0)
        n = 20000
        s = d.sample((n,))
    assert ((s.mean(0) - mean).abs() < 4 * (var / n).sqrt()).all()  # 4 standard errors


def test_flow_prior_needs_two_dimensions():
    with pytest.raises(ConfigError, match="latent_dim >= 2"):
        FlowPrior(1)


def test_the_default_vae_state_dict_is_unchanged():
    """The standard normal prior holds no state: checkpoints of the earlier VAE still load."""
    assert set(VAE(D, L, (8,)).state_dict()) == {
        "decoder.0.weight",
        "decoder.0.bias",
        "decoder.2.weight",
        "decoder.2.bias",
    }
