"""The VAE with missing data: the masked likelihood and the mask-reading encoder."""

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO

from pyrolvm.data import make_mask
from pyrolvm.errors import ConfigError, DataError
from pyrolvm.guides import AmortizedNormal
from pyrolvm.inference import importance_sample, train
from pyrolvm.models import VAE


def pair(seed=0):
    pyro.clear_param_store()
    torch.manual_seed(seed)
    model = VAE(16, latent_dim=3, hidden=(8,))
    guide = AmortizedNormal(16, latent_dim=3, hidden=(8,), mask_input=True)
    return model, guide


def loss(model, guide, *args):
    pyro.set_rng_seed(3)
    return Trace_ELBO(num_particles=4, vectorize_particles=True).loss(model, guide, *args)


def test_all_observed_mask_reproduces_the_plain_loss_exactly():
    model, guide = pair()
    x = torch.bernoulli(torch.full((5, 16), 0.4))
    ones = torch.ones_like(x, dtype=torch.bool)
    assert loss(model, guide, x, ones) == loss(model, guide, x)
    # and the plain VAE's guide whose bias absorbs the mask columns gives the same loss (the
    # encoder's first layer reads [x, 1]), up to float rounding
    plain = AmortizedNormal(16, latent_dim=3, hidden=(8,), name="plain_encoder")
    with torch.no_grad():
        plain.encoder[2].load_state_dict(guide.encoder[2].state_dict())
        first = guide.encoder[0]
        plain.encoder[0].weight.copy_(first.weight[:, :16])
        plain.encoder[0].bias.copy_(first.bias + first.weight[:, 16:].sum(-1))
    assert loss(model, plain, x) == pytest.approx(loss(model, guide, x, ones), rel=1e-5)


def test_missing_pixels_are_not_scored_and_not_seen_by_the_encoder():
    model, guide = pair()
    x = torch.bernoulli(torch.full((4, 16), 0.5))
    mask = make_mask("random", 4, (4, 4), 0.5, seed=1)
    mask[0] = False  # a datapoint with nothing observed
    flipped = torch.where(mask, x, 1 - x)  # other values at the missing pixels
    assert loss(model, guide, x, mask) == loss(model, guide, flipped, mask)
    trace = pyro.poutine.trace(model).get_trace(x, mask)
    lp = trace.nodes["x"]["fn"].log_prob(x)
    full = model.likelihood_dist(trace.nodes["z"]["value"]).base_dist.log_prob(x)
    torch.testing.assert_close(lp, (full * mask).sum(-1))
    assert lp[0].item() == 0.0  # all missing: zero likelihood, no error
    # importance sampling runs through it: the all-missing row estimates log 1 = 0 up to the
    # prior/guide mismatch, finite in any case
    result = importance_sample(model, guide, (x, mask), num_samples=10)
    assert torch.isfinite(result.log_likelihood).all()


def test_masked_training_runs_on_tuples_and_bad_masks_are_refused():
    model, guide = pair()
    x = torch.bernoulli(torch.full((20, 16), 0.4))
    mask = make_mask("square", 20, (4, 4), 0.25, seed=0)
    history = train(model, guide, (x, mask), epochs=2, batch_size=10, progress=False)
    assert len(history["train_elbo"]) == 2
    with pytest.raises(DataError, match="bool tensor"):
        model(x, mask.float())
    with pytest.raises(DataError, match="one flag per pixel"):
        model(x, mask[:, :8])
    plain = AmortizedNormal(16, latent_dim=3, hidden=(8,), name="plain_encoder")
    with pytest.raises(ConfigError, match="mask_input"):
        plain(x, mask)


def test_masks():
    rnd = make_mask("random", 500, (8, 8), 0.3, seed=0)
    assert rnd.dtype == torch.bool and rnd.shape == (500, 64)
    # MCAR share of missing pixels: 0.3 +- 4 binomial SEs over 32,000 pixels
    assert abs((~rnd).float().mean().item() - 0.3) < 4 * (0.3 * 0.7 / 32000) ** 0.5
    assert torch.equal(rnd, make_mask("random", 500, (8, 8), 0.3, seed=0))  # seeded
    sq = make_mask("square", 50, (8, 8), 0.25, seed=0)
    assert ((~sq).sum(-1) == 16).all()  # a 4 x 4 hole in each image
    holes = (~sq).view(50, 8, 8)
    rows, cols = holes.any(2).sum(-1), holes.any(1).sum(-1)
    assert (rows == 4).all() and (cols == 4).all()  # contiguous square
    half = make_mask("half", 40, (8, 8), 0.5, seed=0).view(40, 8, 8)
    assert ((~half).sum((1, 2)) == 32).all()
    patterns = {tuple(h.flatten().tolist()) for h in half}
    assert len(patterns) == 4  # top, bottom, left, right
    with pytest.raises(ConfigError, match="drop --missing-rate"):
        make_mask("half", 2, (8, 8), 0.3)
    with pytest.raises(ConfigError, match="unknown mask"):
        make_mask("ring", 2, (8, 8))
