"""The multimodal VAEs (image and label, image halves) and their product-of-experts guides."""

import math
from types import SimpleNamespace

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO

from pyrolvm.errors import ConfigError
from pyrolvm.guides import (
    HalvesMVAEGuide,
    MoEGuide,
    MVAEGuide,
    StratifiedMixture,
    product_of_experts,
)
from pyrolvm.guides.mvae import uniform_mixture
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


def halves_setup():
    """A HalvesMVAE with a one-dimensional z whose two halves lean on the same z (linear
    decoders logits = w_i z + b_i with |w| = 3), broad experts (scale softplus(2) whatever the
    input, so that every posterior of the guide is a fair proposal), and 12 images drawn from
    the model."""
    torch.manual_seed(0)
    pyro.clear_param_store()
    model = HalvesMVAE(3, 3, latent_dim=1, hidden=())
    guide = HalvesMVAEGuide(3, 3, latent_dim=1, hidden=(4,))
    with torch.no_grad():
        for net, sign in ((model.top_decoder, 1.0), (model.bottom_decoder, -1.0)):
            net[0].weight.copy_(sign * torch.tensor([[3.0], [-3.0], [3.0]]))
        for net in (guide.top_expert, guide.bottom_expert):
            net[-1].weight[1:].zero_()
            net[-1].bias[1:].fill_(2.0)
        z = torch.randn(12, 1)
        top, bottom = model.decode(z)
        images = torch.bernoulli(torch.cat([top, bottom], -1))
    data = SimpleNamespace(train=images, test=images, image_shape=(2, 3))  # top = first row
    return model, guide, data


@pytest.mark.parametrize("posterior", ["poe", "moe"])
def test_halves_conditionals_converge_to_the_quadrature_values(posterior):
    """pyrolvm.runs.mvae.evaluate on the halves, with the product of experts (MVAE) or their
    mixture (MMVAE) as the proposal: the joint, marginal and self-normalized conditional
    estimates against log p by quadrature over the one-dimensional z."""
    model, guide, data = halves_setup()
    guide = guide if posterior == "poe" else MoEGuide(guide)
    images = data.test
    k = 10000
    cfg = SimpleNamespace(modalities="halves", eval_samples=k, eval_batch_size=12, seed=0)
    out = evaluate(model, guide, data, cfg)
    joint, top, bottom = quadrature_log_p(
        model, images[:, :3], images[:, 3:], torch.linspace(-8, 8, 4001)
    )
    # tolerance: 4 delta-method SEs sqrt((K / ESS - 1) / K) of one datapoint's estimate (a
    # bound on the SE of the mean over the 12 images) with the ESS of the poorest proposal;
    # the conditionals differ two such estimates, hence 2x
    pairing = Pairing(cfg.modalities, data)
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
        ("bottom_given_top_snis_nll", top - joint),
        ("top_given_bottom_snis_nll", bottom - joint),
    ):
        assert abs(out[key] - exact.mean().item()) < tol, (key, out[key], exact.mean(), tol)


def test_stratified_mixture_samples_its_component_and_scores_the_mixture():
    gen = torch.Generator().manual_seed(0)
    locs = torch.randn(4, 2, 3, generator=gen)
    scales = torch.rand(4, 2, 3, generator=gen) + 0.5
    mixture = uniform_mixture(locs, scales)
    z = torch.randn(5, 4, 3, generator=gen)
    for m in (0, 1):
        q = StratifiedMixture(locs, scales, m)
        torch.testing.assert_close(q.log_prob(z), mixture.log_prob(z))
        # log q_MoE = log((q_0 + q_1) / 2), by hand
        by_hand = torch.logsumexp(
            dist.Normal(locs, scales).log_prob(z.unsqueeze(-2)).sum(-1), -1
        ) - math.log(2)
        torch.testing.assert_close(q.log_prob(z), by_hand)
        pyro.set_rng_seed(0)
        draws = q.rsample((2,))
        pyro.set_rng_seed(0)
        torch.testing.assert_close(draws, dist.Normal(locs[:, m], scales[:, m]).rsample((2,)))
        assert q.expand((6, 4)).rsample().shape == (6, 4, 3)


def test_the_stratified_elbo_is_the_mixtures_elbo():
    """(1/2) sum_m E_{z ~ q_m}[log p(top, bottom, z) - log q_MoE(z)] (Shi et al. 2019's
    stratified estimator, one objective per stratum) equals the ELBO of the mixture, here by
    quadrature over the one-dimensional z."""
    model, experts, data = halves_setup()
    with torch.no_grad():  # experts apart (so that q_MoE is no one expert), nearer the
        # posterior's width (log w of lower variance)
        for net, loc in ((experts.top_expert, 0.7), (experts.bottom_expert, -0.7)):
            net[-1].weight.zero_()
            net[-1].bias.copy_(torch.tensor([loc, -0.5]))
    guide = MoEGuide(experts)
    top, bottom = data.test[:, :3], data.test[:, 3:]
    grid = torch.linspace(-10, 10, 8001)
    dz = (grid[1] - grid[0]).item()
    with torch.no_grad():
        locs, scales = guide._components(top, bottom)  # (N, 2, 1)
        z = grid.view(-1, 1, 1)  # (G, 1, 1)
        log_q = uniform_mixture(locs, scales).log_prob(z)  # (G, N)
        log_p = dist.Normal(0.0, 1.0).log_prob(z).sum(-1)
        log_p = log_p + dist.Bernoulli(logits=model.top_decoder(z)).log_prob(top).sum(-1)
        log_p = log_p + dist.Bernoulli(logits=model.bottom_decoder(z)).log_prob(bottom).sum(-1)
        log_w = (log_p - log_q).double()
        q = log_q.double().exp() * dz
        exact = (q * log_w).sum(0)  # E_{q_MoE}[log w], (N,)
        # the variance of the stratified estimate with K draws per stratum, by quadrature
        var, own = 0.0, 0.0
        for m in (0, 1):
            log_q_m = dist.Normal(locs[:, m], scales[:, m]).log_prob(z).sum(-1).double()
            q_m = log_q_m.exp() * dz
            mean_m = (q_m * log_w).sum(0)
            var = var + (q_m * (log_w - mean_m) ** 2).sum(0) / 4
            # the mistake to catch: each stratum scored by its own expert's density
            own = own + (q_m * (log_p.double() - log_q_m)).sum(0) / 2
    k = 4000
    pyro.set_rng_seed(0)
    estimate = (
        sum(
            importance_sample(
                lambda t, b: model(t, b), guide.stratum(m), (top, bottom), num_samples=k
            ).elbo
            for m in (0, 1)
        )
        / 2
    )
    se = (var / k).sqrt()  # per datapoint; 4 SEs
    assert ((estimate - exact).abs() < 4 * se + 1e-6).all(), (estimate - exact, se)
    assert ((own - exact).abs() > 4 * se).all()  # the check has teeth
