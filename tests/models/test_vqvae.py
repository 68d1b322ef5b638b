"""VQ-VAE: quantization picks the nearest code, the straight-through estimator hands the
decoder's gradient to the encoder unchanged, codebook usage and perplexity on a constructed
case, and the stage-1 loss as a Pyro model."""

import math

import pytest
import torch
from pyro.infer import Trace_ELBO

from pyrolvm.errors import ConfigError
from pyrolvm.guides import empty_guide
from pyrolvm.inference import train
from pyrolvm.models import VQVAE, codebook_usage, quantize


def test_quantization_picks_the_nearest_code():
    codebook = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [-3.0, -3.0]])
    z = torch.tensor([[[0.4, 0.1], [0.6, -0.2]], [[0.2, 1.2], [-1.6, -1.6]]])
    z_st, idx, z_q = quantize(z, codebook)
    assert idx.tolist() == [[0, 1], [2, 3]]
    assert torch.equal(z_q, codebook[idx])
    assert torch.allclose(z_st, z_q)
    # brute force on random points: the chosen code minimizes the Euclidean distance
    pts, book = torch.randn(200, 3), torch.randn(7, 3)
    _, idx, _ = quantize(pts, book)
    assert torch.equal(idx, torch.cdist(pts, book).argmin(-1))


def test_straight_through_passes_the_decoders_gradient_unchanged():
    codebook = torch.randn(5, 3)
    z_e = torch.randn(4, 3, requires_grad=True)
    decoder = torch.nn.Linear(3, 2)
    z_st, _, z_q = quantize(z_e, codebook)
    (grad_e,) = torch.autograd.grad(decoder(z_st).tanh().sum(), z_e)
    # the gradient the decoder sends to its input, evaluated at the quantized value
    z_in = z_q.detach().requires_grad_()
    (grad_q,) = torch.autograd.grad(decoder(z_in).tanh().sum(), z_in)
    # equal up to the last bits (float64 sums the two paths in another order)
    torch.testing.assert_close(grad_e, grad_q, rtol=1e-12, atol=1e-12)


def test_codebook_usage_on_a_constructed_case():
    indices = torch.tensor([[0, 0, 1], [1, 3, 3]])  # codes 0, 1, 3 used twice each; 2 and 4 never
    counts, perplexity = codebook_usage(indices, 5)
    assert counts.tolist() == [2, 2, 0, 2, 0]
    assert perplexity.item() == pytest.approx(3.0)  # uniform over 3 codes
    _, one = codebook_usage(torch.zeros(10, dtype=torch.long), 4)
    assert one.item() == pytest.approx(1.0)


def test_stage_one_loss_is_reconstruction_plus_codebook_and_commitment():
    model = VQVAE((8, 8), num_codes=6, code_dim=3, channels=4, downsample=1, beta=0.5)
    x = torch.bernoulli(torch.full((5, 64), 0.3))
    loss = Trace_ELBO().loss(model, empty_guide, x)
    z_e = model.encode(x)
    _, idx, z_q = quantize(z_e, model.codebook)
    vq = (1 + 0.5) * (z_e - z_q).pow(2).sum()
    expected = -model.reconstruction_log_prob(x).sum() + vq
    assert loss == pytest.approx(expected.item(), rel=1e-5)
    assert model.codes(x).shape == (5, 16) and model.decode_codes(model.codes(x)).shape == (5, 64)


def test_vqvae_trains_and_uses_the_codebook():
    model = VQVAE((8, 8), num_codes=8, code_dim=4, channels=8, downsample=1)
    x = torch.bernoulli(torch.rand(100, 64))
    before = model.codebook.detach().clone(), model.encoder[0].weight.detach().clone()
    history = train(model, empty_guide, x, epochs=3, batch_size=25, progress=False)
    assert len(history["train_elbo"]) == 3
    # the codebook loss moves the codes, the straight-through gradient moves the encoder
    assert not torch.equal(before[0], model.codebook)
    assert not torch.equal(before[1], model.encoder[0].weight)
    _, perplexity = codebook_usage(model.codes(x), 8)
    assert 1 <= perplexity.item() <= 8
    assert math.isfinite(history["train_elbo"][-1])


def test_bad_sizes():
    with pytest.raises(ConfigError, match="divisible"):
        VQVAE((28, 28), downsample=3)
