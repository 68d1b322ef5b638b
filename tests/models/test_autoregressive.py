"""MADE and PixelCNN: the masks and convolutions never look ahead (Jacobian / gradient
checks), the likelihood is normalized (exact sums over all 2^D images), and the evaluator
returns the exact log-likelihood of a model without latent variables."""

import itertools
import math

import pyro
import pytest
import torch

from pyrolvm.errors import ConfigError, DataError
from pyrolvm.guides import empty_guide
from pyrolvm.inference import importance_sample, train
from pyrolvm.models import MADE, PixelCNN, bits_per_dim

ALL_8 = torch.tensor(list(itertools.product([0.0, 1.0], repeat=8)))


@pytest.mark.parametrize("num_masks", [1, 4])
def test_made_output_depends_only_on_earlier_inputs(num_masks):
    model = MADE(8, (16, 12), num_masks=num_masks, seed=3)
    for m in range(num_masks):
        x = torch.rand(8, dtype=torch.float64)
        jac = torch.autograd.functional.jacobian(lambda z, m=m: model.double().logits(z, m), x)
        order = model.orders[m]
        allowed = order.unsqueeze(1) > order.unsqueeze(0)  # output d sees input e before it
        assert (jac[~allowed] == 0).all()
        # the masks are not trivially empty: most allowed connections are used
        assert (jac[allowed] != 0).float().mean() > 0.5
    if num_masks > 1:  # order-agnostic: the orderings differ
        assert not torch.equal(model.orders[0], model.orders[1])


@pytest.mark.parametrize("num_masks,mode", [(1, "train"), (3, "train"), (3, "eval")])
def test_made_likelihood_sums_to_one_over_all_images(num_masks, mode):
    model = MADE(8, (20,), num_masks=num_masks, data_mean=torch.full((8,), 0.3))
    getattr(model, mode)()
    with torch.no_grad():  # random weights, so that the check is not about the init
        for layer in model.layers:
            layer.weight.normal_()
    result = importance_sample(model, empty_guide, ALL_8, num_samples=1, batch_size=256)
    # exact: K = 1 and no guide term, so the ELBO equals the log-likelihood
    assert torch.equal(result.log_likelihood, result.elbo)
    assert torch.logsumexp(result.log_likelihood, 0).item() == pytest.approx(0.0, abs=1e-5)


def test_made_ensemble_is_the_mixture_of_its_masks():
    model = MADE(8, (20,), num_masks=3).eval()
    x = ALL_8[:10]
    per_mask = torch.stack(
        [
            pyro.distributions.Bernoulli(logits=model.logits(x, m)).to_event(1).log_prob(x)
            for m in range(3)
        ]
    )
    expected = torch.logsumexp(per_mask, 0) - math.log(3)
    got = importance_sample(model, empty_guide, x, num_samples=1).log_likelihood
    assert torch.allclose(got.to(expected.dtype), expected, atol=1e-5)


def test_made_trains_and_samples():
    data = torch.bernoulli(torch.full((200, 8), 0.2))
    model = MADE(8, (16,), num_masks=2)
    history = train(model, empty_guide, data, epochs=3, batch_size=50, progress=False)
    assert len(history["train_elbo"]) == 3 and history["train_elbo"][-1] < 0
    samples = model.sample(5, m=1)
    assert samples.shape == (5, 8) and set(samples.unique().tolist()) <= {0.0, 1.0}


def test_made_bad_settings():
    with pytest.raises(ConfigError):
        MADE(8, ())
    with pytest.raises(ConfigError):
        MADE(8, (4,), num_masks=0)
    with pytest.raises(DataError, match="not binary"), pyro.validation_enabled():
        MADE(8, (4,))(torch.full((2, 8), 0.5))


@pytest.mark.parametrize("levels", [2, 256])
def test_pixelcnn_receptive_field_is_causal(levels):
    # raster order on a 6x6 image: d(i, j) = 6 i + j
    model = PixelCNN((6, 6), levels=levels, channels=8, num_layers=4, kernel_size=5).double()
    x = torch.randint(levels, (1, 36)).double().requires_grad_()
    depends = {}
    for d in range(36):
        out = model.logits(x)[0, d]
        (grad,) = torch.autograd.grad(out.sum(), x)
        depends[d] = (grad[0] != 0).nonzero().flatten().tolist()
        assert all(e < d for e in depends[d]), (d, depends[d])
    # no blind spot (the two stacks' point, van den Oord et al. 2016, figure 1): pixel (3, 2)
    # sees every pixel before it, the up-right ones (2, 3..5) included
    assert depends[20] == list(range(20))
    assert depends[35] == list(range(35))


def test_pixelcnn_likelihood_sums_to_one_on_a_tiny_grid():
    model = PixelCNN((2, 4), channels=4, num_layers=2, kernel_size=3)
    result = importance_sample(model, empty_guide, ALL_8, num_samples=1, batch_size=256)
    assert torch.logsumexp(result.log_likelihood, 0).item() == pytest.approx(0.0, abs=1e-5)
    cat = PixelCNN((1, 2), levels=3, channels=4, num_layers=1, kernel_size=3, input="onehot")
    grid = torch.tensor(list(itertools.product([0.0, 1.0, 2.0], repeat=2)))
    ll = importance_sample(cat, empty_guide, grid, num_samples=1).log_likelihood
    assert torch.logsumexp(ll, 0).item() == pytest.approx(0.0, abs=1e-5)


def test_pixelcnn_trains_samples_and_rejects_bad_levels():
    model = PixelCNN((4, 4), levels=4, channels=4, num_layers=2, kernel_size=3)
    data = torch.randint(4, (40, 16)).float()
    history = train(model, empty_guide, data, epochs=2, batch_size=20, progress=False)
    assert len(history["train_elbo"]) == 2
    assert model.sample(3).shape == (3, 16)
    with pytest.raises(DataError, match="integers 0..3"), pyro.validation_enabled():
        model(torch.full((2, 16), 0.5))
    with pytest.raises(ConfigError):
        PixelCNN((4, 4), kernel_size=4)


def test_bits_per_dim():
    assert bits_per_dim(784 * math.log(2), 784) == pytest.approx(1.0)
