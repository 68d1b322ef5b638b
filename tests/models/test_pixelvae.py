"""The PixelVAE decoder (``VAE(decoder="pixelcnn")``, Gulrajani et al. 2017): causal given z
(gradient checks), normalized (an exact sum over all 2^9 images of a 3x3 grid), sampled from
the conditionals it scores (the band of rows the sampler reads gives the teacher-forced
logits), trained by the ELBO and IWAE and evaluated by importance sampling. Its runs:
tests/runs/test_pixelvae_runs.py."""

import itertools

import pyro
import pytest
import torch

from pyrolvm.errors import ConfigError
from pyrolvm.guides import AmortizedNormal
from pyrolvm.inference import importance_sample, make_elbo, train
from pyrolvm.models import VAE, AutoregressiveBernoulli, PixelCNN

ALL_9 = torch.tensor(list(itertools.product([0.0, 1.0], repeat=9)))
SMALL = dict(decoder="pixelcnn", decoder_layers=2, decoder_channels=4, decoder_kernel=3)


def pixelvae(shape=(3, 3), latent_dim=2, **options):
    d = shape[0] * shape[1]
    return VAE(d, latent_dim, (8,), image_shape=shape, **(SMALL | options))


def test_decoder_output_depends_only_on_earlier_pixels_and_on_z():
    # raster order on a 5x6 image: d(i, j) = 6 i + j; f_d may read x_<d and z, nothing else
    torch.manual_seed(0)
    model = pixelvae((5, 6), decoder_layers=3, decoder_kernel=5).double()
    x = torch.bernoulli(torch.full((1, 30), 0.5)).double().requires_grad_()
    z = torch.randn(1, 2).double().requires_grad_()
    assert isinstance(model.likelihood_dist(z), AutoregressiveBernoulli)
    for d in range(30):
        out = model.likelihood_dist(z).logits(x)[0, d]
        gx, gz = torch.autograd.grad(out, (x, z))
        assert (gx[0, d:] == 0).all(), d
        assert (gz != 0).any(), d  # z reaches every pixel, the first one included
    # no blind spot: the last pixel sees every pixel before it
    assert (gx[0, :29] != 0).all()


def test_log_likelihood_given_z_sums_to_one_over_all_images():
    model = pixelvae(data_mean=torch.full((9,), 0.3)).double()
    for z in (torch.zeros(2), torch.tensor([1.5, -2.0])):
        log_p = model.likelihood_dist(z.double()).log_prob(ALL_9.double())
        assert torch.logsumexp(log_p, 0).item() == pytest.approx(0.0, abs=1e-12)
    # a batch of z against every image at once: broadcasting (4, 1) with (512,)
    zs = torch.randn(4, 1, 2).double()
    log_p = model.likelihood_dist(zs).log_prob(ALL_9.double())
    assert log_p.shape == (4, 512)
    assert torch.allclose(torch.logsumexp(log_p, -1), torch.zeros(4).double(), atol=1e-12)


def test_samples_come_from_the_conditionals_that_log_prob_scores():
    # the sampler reads only the band of rows a pixel can see (PixelCNN.receptive_rows):
    # the probabilities it draws from equal the teacher-forced ones at the drawn image
    torch.manual_seed(1)
    model = VAE(
        12 * 5, 3, (8,), image_shape=(12, 5), decoder="pixelcnn", decoder_channels=4
    ).double()
    likelihood = model.likelihood_dist(torch.randn(6, 3).double())
    x, probs = likelihood.sample_with_probs()
    assert x.shape == probs.shape == (6, 60) and ((x == 0) | (x == 1)).all()
    assert torch.allclose(probs, torch.sigmoid(likelihood.logits(x)), atol=1e-12)
    assert model.decode(torch.randn(2, 3).double()).shape == (2, 60)
    assert model.sample(3, mean=False).shape == (3, 60)
    grid = PixelCNN((6, 4), levels=3, channels=4, num_layers=2, kernel_size=3).double()
    levels, p = grid.sample_with_probs(4)
    assert torch.allclose(p, torch.softmax(grid.logits(levels), -1), atol=1e-12)


@pytest.mark.parametrize("objective, particles", [("trace", 1), ("iwae", 3)])
def test_trains_and_importance_samples(objective, particles):
    torch.manual_seed(0)
    x = torch.bernoulli(torch.full((40, 9), 0.3))
    model, guide = pixelvae(data_mean=x.mean(0)), AmortizedNormal(9, 2, (8,))
    history = train(
        model,
        guide,
        x,
        make_elbo(objective, particles),
        epochs=3,
        batch_size=20,
        progress=False,
    )
    assert len(history["train_elbo"]) == 3
    assert torch.isfinite(torch.tensor(history["train_elbo"])).all()
    result = importance_sample(model, guide, x, num_samples=7, batch_size=20, chunk_size=2)
    assert result.log_likelihood.shape == (40,) and torch.isfinite(result.log_likelihood).all()
    # an upper bound on log p(x) <= 0 for binary data, and the IS estimate is >= the ELBO
    assert (result.log_likelihood <= 0).all()
    assert result.log_likelihood.mean() >= result.elbo.mean()


def test_model_runs_without_observations_and_refuses_what_it_cannot_score():
    model = pixelvae()
    trace = pyro.poutine.trace(model).get_trace(None, batch_size=5)
    x = trace.nodes["x"]["value"]
    assert x.shape == (5, 9) and ((x == 0) | (x == 1)).all()
    assert torch.isfinite(trace.log_prob_sum())
    with pytest.raises(ConfigError, match="bernoulli"):
        pixelvae(likelihood="gaussian")
    with pytest.raises(ConfigError, match="image shape"):
        VAE(9, 2, (8,), decoder="pixelcnn", image_shape=(2, 4))
    with pytest.raises(ConfigError, match="unknown decoder"):
        VAE(9, 2, (8,), decoder="lstm")
    with pytest.raises(ConfigError, match="factorizes over pixels"):
        model(torch.zeros(2, 9), torch.ones(2, 9, dtype=torch.bool))
