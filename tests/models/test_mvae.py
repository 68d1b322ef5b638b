"""The multimodal VAE and its product-of-experts guide."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO

from pyrolvm.errors import ConfigError
from pyrolvm.guides import MVAEGuide, product_of_experts
from pyrolvm.inference import importance_sample
from pyrolvm.models import MVAE


def test_product_of_gaussian_experts_is_the_closed_form_product():
    gen = torch.Generator().manual_seed(0)
    locs = [torch.randn(5, 3, generator=gen) for _ in range(2)]
    scales = [torch.rand(5, 3, generator=gen) + 0.3 for _ in range(2)]
    loc, scale = product_of_experts(locs, scales)
    # precision adds up (the prior expert contributes 1); the mean is precision-weighted
    precision = 1 + scales[0] ** -2 + scales[1] ** -2
    torch.testing.assert_close(scale**-2, precision)
    torch.testing.assert_close(
        loc, (locs[0] / scales[0] ** 2 + locs[1] / scales[1] ** 2) / precision
    )
    # and as densities: log N(z; prod) - [log N(z; 0, 1) + sum_i log N(z; expert i)] does not
    # depend on z (the product is normalized, so only a constant is left)
    z = torch.randn(7, 5, 3, generator=gen)
    log_prod = dist.Normal(loc, scale).log_prob(z)
    log_factors = dist.Normal(0.0, 1.0).log_prob(z) + sum(
        dist.Normal(m, s).log_prob(z) for m, s in zip(locs, scales, strict=True)
    )
    diff = log_prod - log_factors
    torch.testing.assert_close(diff, diff[:1].expand_as(diff), atol=1e-4, rtol=0)
    # a single expert of the standard normal halves the variance at the prior's mean
    one_loc, one_scale = product_of_experts([torch.zeros(3)], [torch.ones(3)])
    torch.testing.assert_close(one_scale**2, torch.full((3,), 0.5))
    torch.testing.assert_close(one_loc, torch.zeros(3))
    with pytest.raises(ConfigError, match="at least one expert"):
        product_of_experts([], [])


def test_mvae_sites_subsets_and_likelihoods():
    pyro.clear_param_store()
    model = MVAE(16, 10, latent_dim=3, hidden=(8,))
    guide = MVAEGuide(16, 10, latent_dim=3, hidden=(8,))
    image = torch.bernoulli(torch.full((6, 16), 0.4))
    label = torch.arange(6)
    trace = pyro.poutine.trace(model).get_trace(image, label)
    assert trace.nodes["image"]["fn"].event_shape == (16,) and "label" in trace.nodes
    assert "label" not in pyro.poutine.trace(model).get_trace(image, None).nodes
    assert "image" not in pyro.poutine.trace(model).get_trace(None, label).nodes
    # the guide's subset posteriors are the products of the present experts with the prior
    locs, scales = guide.experts(image, label)
    torch.testing.assert_close(guide.encode(image, None), product_of_experts(locs[:1], scales[:1]))
    torch.testing.assert_close(guide.encode(None, label), product_of_experts(locs[1:], scales[1:]))
    for args in ((image, label), (image, None), (None, label)):
        assert torch.isfinite(torch.tensor(Trace_ELBO().loss(model, guide, *args)))
    # log p(label) of a one-modality batch: IS over q(z | label), a proper log-probability
    pyro.set_rng_seed(0)
    ll = importance_sample(
        lambda y: model(None, y), lambda y: guide(None, y), label, num_samples=200
    ).log_likelihood
    assert (ll < 0).all() and (ll > -10).all()
    with pytest.raises(ConfigError, match="at least one modality"):
        model(None, None)
