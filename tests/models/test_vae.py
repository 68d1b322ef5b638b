import pyro
import pytest
import torch
from pyro import poutine

from pyrolvm.errors import ConfigError
from pyrolvm.guides import AmortizedNormal
from pyrolvm.models import VAE


def test_sites_shapes_and_plate():
    model = VAE(64, latent_dim=3, hidden=(16,))
    x = torch.bernoulli(torch.full((5, 64), 0.3))
    trace = poutine.trace(model).get_trace(x)
    z, obs = trace.nodes["z"], trace.nodes["x"]
    assert z["value"].shape == (5, 3) and z["fn"].event_shape == (3,)
    assert obs["is_observed"] and obs["fn"].event_shape == (64,)
    assert [f.name for f in obs["cond_indep_stack"]] == ["data"]
    assert any(name.startswith("decoder$$$") for name in pyro.get_param_store())
    # the model's log joint, written out: N(z; 0, I) and Bernoulli(x; sigmoid(f(z)))
    trace.compute_log_prob()
    with torch.no_grad():
        logits = model.decoder(z["value"])
        ref_z = torch.distributions.Normal(0.0, 1.0).log_prob(z["value"]).sum(-1)
        ref_x = (
            x * torch.nn.functional.logsigmoid(logits)
            + (1 - x) * torch.nn.functional.logsigmoid(-logits)
        ).sum(-1)
    torch.testing.assert_close(z["log_prob"], ref_z)
    torch.testing.assert_close(obs["log_prob"], ref_x)
    # decode is the Bernoulli mean sigmoid(f(z)); sample(n) decodes n prior draws
    torch.testing.assert_close(model.decode(z["value"]), torch.sigmoid(logits))
    pyro.set_rng_seed(4)
    means = model.sample(7)
    pyro.set_rng_seed(4)
    prior_draws = torch.randn(7, 3)
    torch.testing.assert_close(means, torch.sigmoid(model.decoder(prior_draws)).detach())


def test_output_bias_starts_at_logit_of_mean_pixel():
    mean = torch.rand(10) * 0.8 + 0.1
    model = VAE(10, latent_dim=2, hidden=(4,), data_mean=mean)
    bias = model.decoder[-1].bias
    torch.testing.assert_close(torch.sigmoid(bias), mean)
    gauss = VAE(10, latent_dim=2, hidden=(4,), likelihood="gaussian", data_mean=mean)
    torch.testing.assert_close(gauss.decoder[-1].bias, mean)


def test_gaussian_likelihood_log_density():
    model = VAE(4, latent_dim=2, hidden=(3,), likelihood="gaussian")
    z, x = torch.randn(6, 2), torch.rand(6, 4)
    d = model.likelihood_dist(z)
    ref = torch.distributions.Normal(model.decoder(z), model.log_scale.exp()).log_prob(x).sum(-1)
    torch.testing.assert_close(d.log_prob(x), ref)


def test_bad_settings():
    with pytest.raises(ConfigError, match="latent_dim must be a positive integer, got 0"):
        VAE(64, latent_dim=0)
    with pytest.raises(ConfigError, match="unknown likelihood 'poisson'"):
        VAE(64, likelihood="poisson")
    with pytest.raises(ConfigError, match="unknown activation"):
        VAE(64, activation="gelu2")


def test_amortized_guide():
    guide = AmortizedNormal(64, latent_dim=3, hidden=(16,))
    x = torch.rand(5, 64)
    trace = poutine.trace(guide).get_trace(x)
    site = trace.nodes["z"]
    assert site["value"].shape == (5, 3) and site["fn"].has_rsample
    loc, scale = guide.encode(x)
    assert loc.shape == scale.shape == (5, 3) and (scale > 0).all()
    # the site's distribution is N(loc, scale) of encode(x), and its draw loc + scale * eps
    torch.testing.assert_close(site["fn"].base_dist.loc, loc)
    torch.testing.assert_close(site["fn"].base_dist.scale, scale)
    pyro.set_rng_seed(2)
    z = poutine.trace(guide).get_trace(x).nodes["z"]["value"]
    pyro.set_rng_seed(2)
    torch.testing.assert_close(z, loc + scale * torch.randn(5, 3))
    with pytest.raises(ConfigError):
        AmortizedNormal(64, latent_dim=0)
