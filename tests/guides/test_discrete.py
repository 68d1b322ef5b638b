import pytest
import torch
from pyro import poutine

from pyrolvm.errors import ConfigError
from pyrolvm.guides import AmortizedBernoulli, AmortizedCategorical, AmortizedNormal
from pyrolvm.inference import IWAE
from pyrolvm.models import VAE


@pytest.mark.parametrize("relaxation", ["none", "concrete", "straight_through"])
def test_bernoulli_guide_values_and_gradients(relaxation):
    guide = AmortizedBernoulli(6, 5, hidden=(4,), relaxation=relaxation, temperature=0.3)
    x = torch.rand(3, 6)
    tr = poutine.trace(guide).get_trace(x)
    site = tr.nodes["z"]
    z = site["value"]
    assert z.shape == (3, 5) and site["fn"].event_shape == (5,)
    assert ((z >= 0) & (z <= 1)).all()
    hard = ((z == 0) | (z == 1)).all()
    assert bool(hard) == (relaxation != "concrete")
    # reparameterized (pathwise gradient into the encoder) exactly when relaxed
    assert site["fn"].has_rsample == (relaxation != "none")
    assert z.requires_grad == (relaxation != "none")
    if relaxation != "none":
        z.sum().backward()
        assert guide.encoder[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("relaxation", ["none", "concrete", "straight_through"])
def test_categorical_guide_values(relaxation):
    guide = AmortizedCategorical(6, 2, 4, hidden=(), relaxation=relaxation, temperature=0.3)
    z = poutine.trace(guide).get_trace(torch.rand(3, 6)).nodes["z"]["value"]
    assert z.shape == (3, 2, 4)
    assert torch.allclose(z.sum(-1), torch.ones(3, 2), atol=1e-5)  # on the simplex
    assert bool(((z == 0) | (z == 1)).all()) == (relaxation != "concrete")


def test_non_reparameterized_normal_guide():
    guide = AmortizedNormal(6, 2, (4,), reparameterized=False)
    site = poutine.trace(guide).get_trace(torch.rand(3, 6)).nodes["z"]
    assert not site["fn"].has_rsample and not site["value"].requires_grad
    with pytest.raises(ConfigError, match="rsample"):
        IWAE(2).loss(VAE(6, 2, (4,)), guide, torch.bernoulli(torch.rand(3, 6)))


def test_errors():
    with pytest.raises(ConfigError, match="relaxation"):
        AmortizedBernoulli(4, 2, relaxation="gumbel")
    with pytest.raises(ConfigError, match="temperature"):
        AmortizedBernoulli(4, 2, temperature=0)
    with pytest.raises(ConfigError, match="baseline"):
        AmortizedCategorical(4, 2, 3, baseline="average")
    with pytest.raises(ConfigError, match="num_categories"):
        AmortizedCategorical(4, 2, 1)


def test_encode_gives_posterior_means_for_reconstructions():
    from pyrolvm.models import SigmoidBeliefNet

    x = torch.rand(3, 6)
    guide = AmortizedCategorical(6, 2, 3, hidden=(), relaxation="straight_through")
    probs = guide.encode(x)[0]
    assert probs.shape == (3, 2, 3)
    assert torch.allclose(probs, guide.logits(x).softmax(-1))
    assert guide.relaxation == "straight_through"  # restored
    model = SigmoidBeliefNet(6, 2, "categorical", num_categories=3)
    assert model.decode(probs).shape == (3, 6)
    guide = AmortizedBernoulli(6, 4, hidden=())
    assert torch.allclose(guide.encode(x)[0], guide.logits(x).sigmoid())
