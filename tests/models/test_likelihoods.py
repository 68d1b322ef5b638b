"""Image likelihoods: the continuous Bernoulli's normalizing constant, the categorical over
grey levels, bits per dimension and what each scores."""

import math

import pytest
import torch

from pyrolvm.models import VAE, bits_per_dim, scored_on
from pyrolvm.models.likelihoods import likelihood_dist


@pytest.mark.parametrize("lam", [0.01, 0.2, 0.4999, 0.5, 0.7, 0.99])
def test_continuous_bernoulli_normalizing_constant_against_numerical_integration(lam):
    """p(x) = C(lam) lam^x (1 - lam)^(1 - x) on [0, 1]: C(lam) from the library's log_prob
    equals 1 / integral of lam^x (1 - lam)^(1 - x) dx by Simpson's rule (error < 1e-10)."""
    logit = torch.tensor([math.log(lam) - math.log1p(-lam)], dtype=torch.float64)
    d = likelihood_dist("continuous-bernoulli", logit)
    x = torch.linspace(0, 1, 2001, dtype=torch.float64)
    kernel = lam**x * (1 - lam) ** (1 - x)
    w = torch.ones_like(x)
    w[1:-1:2], w[2:-1:2] = 4, 2
    integral = (w * kernel).sum() / (3 * (len(x) - 1))
    log_c = d.log_prob(x[:, None]) - kernel.log()
    assert torch.allclose(log_c, -integral.log().expand_as(log_c), atol=1e-9)
    # and the density integrates to one
    assert (w * d.log_prob(x[:, None]).exp()).sum() / (3 * (len(x) - 1)) == pytest.approx(1.0)


def test_categorical_likelihood_scores_the_grey_level():
    torch.manual_seed(0)
    levels, d_pix = 5, 4
    model = VAE(d_pix, 2, (8,), likelihood="categorical", levels=levels)
    z = torch.randn(3, 2)
    x = torch.randint(0, levels, (3, d_pix)).double() / (levels - 1)
    logits = model.decoder(z).reshape(3, d_pix, levels).log_softmax(-1)
    expected = logits.gather(-1, (x * (levels - 1)).round().long()[..., None]).sum((-1, -2))
    assert torch.allclose(model.likelihood_dist(z).log_prob((x * (levels - 1)).round()), expected)
    mean = model.decode(z)
    grid = torch.arange(levels) / (levels - 1)
    assert torch.allclose(mean, (logits.exp() * grid).sum(-1), atol=1e-6)
    assert ((model.decode(z, mean=False) * (levels - 1)) % 1 == 0).all()


def test_bits_per_dim_and_what_is_scored():
    assert bits_per_dim(784 * math.log(2), 784) == pytest.approx(1.0)
    assert scored_on("bernoulli", "dynamic") == "binarized"
    assert scored_on("categorical", levels=256) == "8-bit"
    assert scored_on("categorical", levels=17) == "17-level"
    assert "density" in scored_on("continuous-bernoulli")
