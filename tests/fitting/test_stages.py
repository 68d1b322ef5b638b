"""The fitting algorithms the runs call as stages (pyrolvm/fitting/): one SVI fit, the CVAE's
two phases and their scores, the VQ-VAE's codes between its stages and its two-stage bound,
the two-modality pairing and objectives, and the mixture-prior VAE's three phases; each
checked against what it must equal, on the digits or a few random rows."""

import math

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO

from pyrolvm.data import load, quadrant_mask
from pyrolvm.fitting.conditional import (
    conditional_scores,
    fit_baseline,
    fit_conditional,
    on_images,
)
from pyrolvm.fitting.mixture_vae import fine_tune, fit_mixture_vae, init_prior, warm_up
from pyrolvm.fitting.multimodal import Pairing, objectives
from pyrolvm.fitting.svi import fit_svi
from pyrolvm.fitting.vqvae import codes_of, training_codes, vqvae_scores
from pyrolvm.guides import AmortizedNormal, CVAEGuide, empty_guide
from pyrolvm.inference import make_optim, rng_state, train
from pyrolvm.models import CVAE, VAE, VQVAE, BaselineNet, MixturePriorVAE, PixelCNN


@pytest.fixture(scope="module")
def digits():
    data = load("digits", binarize="dynamic", seed=0)
    data.train, data.train_labels = data.train[:200], data.train_labels[:200]
    data.test, data.test_labels = data.test[:50], data.test_labels[:50]
    return data


def test_fit_svi_is_train_with_adam(digits):
    # one SVI fit equals train() with make_optim's Adam, bitwise
    runs, options = [], dict(epochs=2, transform=torch.bernoulli, progress=False)
    for fit in (
        lambda m, g: fit_svi(m, g, digits.train, lr=0.01, **options),
        lambda m, g: train(m, g, digits.train, None, make_optim(0.01), **options),
    ):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        model, guide = VAE(64, 2, (8,)), AmortizedNormal(64, 2, (8,))
        runs.append((fit(model, guide)["train_elbo"], model.state_dict()))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(runs[0][1][k], runs[1][1][k]) for k in runs[0][1])


def test_the_cvae_phases_and_their_scores(digits):
    mask = quadrant_mask(digits.image_shape, 2)
    nx, ny = int(mask.sum()), int((~mask).sum())
    pyro.set_rng_seed(0)
    baseline = BaselineNet(nx, ny, (8,), name="b")
    model, guide = CVAE(nx, ny, 2, (8,), baseline=baseline, name="c"), CVAEGuide(nx, ny, 2, (8,))
    wrap, data = (lambda fn: on_images(fn, mask)), digits.train
    options = dict(epochs=1, transform=torch.bernoulli, progress=False)
    fit_baseline(baseline, data, wrap, **options)
    assert {n.split("$$$")[0] for n in pyro.get_param_store()} == {"b"}  # alone in the store
    before = {k: v.clone() for k, v in baseline.state_dict().items()}
    fit_conditional(model, guide, data, Trace_ELBO(), wrap, **options)
    # phase 2 reads the fitted baseline and leaves it as it is
    assert "b" not in {n.split("$$$")[0] for n in pyro.get_param_store()}
    assert all(torch.equal(before[k], v) for k, v in baseline.state_dict().items())
    scores = conditional_scores(model, guide, baseline, digits.test, wrap, num_samples=4)
    # the baseline's -log p(y | x): its Bernoulli log-likelihood of the unobserved pixels
    x, y = digits.test[:, mask], digits.test[:, ~mask]
    with torch.no_grad():
        log_p = torch.distributions.Bernoulli(logits=baseline.net(x)).log_prob(y).sum(-1)
    assert scores["baseline_nll"] == pytest.approx(-log_p.double().mean().item(), rel=1e-6)
    assert 1 <= scores["cvae_ess"] <= 4 and scores["cvae_nll"] <= -scores["cvae_elbo"] + 1e-9


def test_the_vqvae_codes_and_bound(digits):
    pyro.set_rng_seed(0)
    model = VQVAE(digits.image_shape, 4, 2, 4, 1)
    prior = PixelCNN(model.grid_shape, 4, 4, 1, 3, input="onehot", name="prior")
    boundary = rng_state()
    a = training_codes(model, digits.train, torch.bernoulli, boundary)
    torch.rand(7)  # another state in between: the codes come from the boundary's alone
    assert torch.equal(a, training_codes(model, digits.train, torch.bernoulli, boundary))
    assert torch.equal(codes_of(model, digits.test, batch_size=7).long(), model.codes(digits.test))
    scores = vqvae_scores(model, prior, digits.test, num_codes=4, batch_size=25)
    assert scores["test_nll_bound"] == pytest.approx(
        scores["test_recon_nll"] + scores["test_prior_nll"], rel=1e-9
    )
    grid = math.prod(model.grid_shape)
    uniform = scores["test_recon_nll"] + grid * math.log(4)
    assert scores["uniform_prior_nll_bound"] == pytest.approx(uniform, rel=1e-12)
    assert 1 <= scores["codes_used"] <= 4 and scores["code_grid"] == list(model.grid_shape)


def test_the_pairing_feeds_each_subset_of_the_halves(digits):
    pairing = Pairing("halves", digits)
    top = pairing.mask
    seen = []
    record = lambda a, b: seen.append((a, b))  # noqa: E731
    images = digits.test[:3]
    pairing.joint(record)(images), pairing.first(record)(images), pairing.second(record)(images)
    assert torch.equal(seen[0][0], images[:, top]) and torch.equal(seen[0][1], images[:, ~top])
    assert seen[1][1] is None and seen[2][0] is None
    assert torch.equal(seen[2][1], images[:, ~top])

    class Guide:
        def stratum(self, m):
            return f"stratum {m}"

    steps = objectives(record, Guide(), pairing, "moe", Trace_ELBO)
    assert len(steps) == 2 and len(objectives(record, Guide(), pairing, "poe", Trace_ELBO)) == 3


def test_the_mixture_vae_phases_compose_to_its_fit(digits):
    # the run's three stages, called in turn, are fit_mixture_vae: bitwise the same metrics
    settings = dict(num_components=3, latent_dim=2, hidden=(8,), warmup_epochs=1, epochs=1)
    _, _, whole = fit_mixture_vae(digits, batch_size=50, lr=1e-3, seed=0, **settings)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    model, guide = MixturePriorVAE(64, 2, 3, (8,)), AmortizedNormal(64, 2, (8,), "relu")
    options = dict(batch_size=50, progress=False)
    history = warm_up(model, guide, digits, "vae", 1e-3, epochs=1, **options)
    metrics = init_prior(model, guide, digits, 3, "draws", 0)
    history = fine_tune(model, guide, digits, 1e-4, epochs=1, history=history, **options)
    assert history["train_elbo"] == whole["train_elbo"]
    assert all(metrics[k] == whole[k] for k in metrics)
    assert empty_guide(digits.train) is None
