"""The multimodal VAEs (image and label, image halves) and their product-of-experts guides."""

from types import SimpleNamespace

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO

from pyrolvm.errors import ConfigError
from pyrolvm.guides import HalvesMVAEGuide, MVAEGuide, product_of_experts
from pyrolvm.inference import importance_sample
from pyrolvm.models import MVAE, HalvesMVAE
from pyrolvm.runs.mvae import Pairing, evaluate


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


def test_halves_mvae_sites_subsets_and_the_product_of_its_experts():
    pyro.clear_param_store()
    model = HalvesMVAE(6, 10, latent_dim=3, hidden=(8,))
    guide = HalvesMVAEGuide(6, 10, latent_dim=3, hidden=(8,))
    top, bottom = (
        torch.bernoulli(torch.full((4, 6), 0.4)),
        torch.bernoulli(torch.full((4, 10), 0.6)),
    )
    trace = pyro.poutine.trace(model).get_trace(top, bottom)
    assert trace.nodes["top"]["fn"].event_shape == (6,)
    assert trace.nodes["bottom"]["fn"].event_shape == (10,)
    assert "bottom" not in pyro.poutine.trace(model).get_trace(top, None).nodes
    assert "top" not in pyro.poutine.trace(model).get_trace(None, bottom).nodes
    # every subset's posterior is the closed-form product of its experts with the prior
    locs, scales = guide.experts(top, bottom)
    torch.testing.assert_close(guide.encode(top, bottom), product_of_experts(locs, scales))
    torch.testing.assert_close(guide.encode(top, None), product_of_experts(locs[:1], scales[:1]))
    torch.testing.assert_close(guide.encode(None, bottom), product_of_experts(locs[1:], scales[1:]))
    for args in ((top, bottom), (top, None), (None, bottom)):
        assert torch.isfinite(torch.tensor(Trace_ELBO().loss(model, guide, *args)))
    assert [t.shape for t in model.decode(torch.zeros(2, 3))] == [(2, 6), (2, 10)]
    with pytest.raises(ConfigError, match="at least one modality"):
        model(None, None)
    with pytest.raises(ConfigError, match="at least one modality"):
        guide(None, None)


def quadrature_log_p(model, top, bottom, grid):
    """log p(top, bottom), log p(top), log p(bottom) of a HalvesMVAE with a one-dimensional
    z, by the trapezoid-free Riemann sum over ``grid`` (spacing dz; the integrand is smooth
    and negligible beyond |z| = 8, so the error is far below the tolerances here)."""
    dz = (grid[1] - grid[0]).item()
    z = grid.unsqueeze(-1)  # (G, 1)
    with torch.no_grad():
        log_prior = dist.Normal(0.0, 1.0).log_prob(z).squeeze(-1)  # (G,)
        lt = dist.Bernoulli(logits=model.top_decoder(z)).log_prob(top[:, None]).sum(-1)  # (N, G)
        lb = dist.Bernoulli(logits=model.bottom_decoder(z)).log_prob(bottom[:, None]).sum(-1)

    def integral(log_f):
        return torch.logsumexp(log_prior + log_f, dim=-1) + torch.log(torch.tensor(dz))

    return integral(lt + lb).double(), integral(lt).double(), integral(lb).double()


def test_halves_conditionals_converge_to_the_quadrature_values():
    """pyrolvm.runs.mvae.evaluate on the halves: the joint, marginal and self-normalized
    conditional estimates against log p by quadrature over a one-dimensional z."""
    torch.manual_seed(0)
    pyro.clear_param_store()
    # linear decoders logits = w_i z + b_i with |w| = 3: both halves lean on the same z
    model = HalvesMVAE(3, 3, latent_dim=1, hidden=())
    guide = HalvesMVAEGuide(3, 3, latent_dim=1, hidden=(4,))
    with torch.no_grad():
        for net, sign in ((model.top_decoder, 1.0), (model.bottom_decoder, -1.0)):
            net[0].weight.copy_(sign * torch.tensor([[3.0], [-3.0], [3.0]]))
        for net in (guide.top_expert, guide.bottom_expert):  # broad experts, scale softplus(2)
            net[-1].weight[1:].zero_()
            net[-1].bias[1:].fill_(2.0)
        z = torch.randn(12, 1)  # images drawn from the model
        top, bottom = model.decode(z)
        images = torch.bernoulli(torch.cat([top, bottom], -1))
    data = SimpleNamespace(train=images, test=images, image_shape=(2, 3))  # top = first row
    k = 10000
    cfg = SimpleNamespace(modalities="halves", eval_samples=k, eval_batch_size=12, seed=0)
    out = evaluate(model, guide, data, cfg)
    joint, top, bottom = quadrature_log_p(
        model, images[:, :3], images[:, 3:], torch.linspace(-8, 8, 4001)
    )
    # tolerance: 4 delta-method SEs of the mean over the 12 images, each sqrt((K / ESS - 1) / K)
    # per estimate, with the ESS of the poorest proposal (the conditionals differ two such
    # estimates, hence 2x)
    pairing = Pairing(cfg, data)
    ess = min(
        importance_sample(f(model), f(guide), images, num_samples=k).ess.min().item()
        for f in (pairing.joint, pairing.first, pairing.second)
    )
    tol = 2 * 4 * ((k / ess - 1) / k) ** 0.5
    # the check has teeth: a conditional taken for its marginal would be off by the mean
    # pointwise mutual information of the halves, well above the tolerance
    assert tol < 0.2 and ((joint - top) - bottom).mean() > 2 * tol
    for key, exact in (
        ("joint_nll", -joint),
        ("top_nll", -top),
        ("bottom_nll", -bottom),
        ("bottom_given_top_nll", top - joint),
        ("top_given_bottom_nll", bottom - joint),
    ):
        assert abs(out[key] - exact.mean().item()) < tol, (key, out[key], exact.mean(), tol)
