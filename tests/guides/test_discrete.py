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


N_DRAWS = 4000


def _draws(guide, x):
    """N_DRAWS values of the guide's z site for the one datapoint x (1, D)."""
    return poutine.trace(guide).get_trace(x.expand(N_DRAWS, -1)).nodes["z"]["value"].detach()


@pytest.mark.parametrize("relaxation", ["none", "concrete", "straight_through"])
def test_bernoulli_guide_draws_ones_at_the_sigmoid_of_its_logits(relaxation):
    # P(z_j = 1) = sigmoid(logit_j) for the Bernoulli; for the binary Concrete
    # P(z_j > 1/2) = sigmoid(logit_j) exactly at any temperature (Maddison et al. 2017,
    # prop. 1(c)), and straight-through rounds that same draw. 4 binomial standard errors.
    torch.manual_seed(0)
    guide = AmortizedBernoulli(6, 5, hidden=(4,), relaxation=relaxation, temperature=0.3)
    x = torch.rand(1, 6) * 4 - 2
    p = torch.sigmoid(guide.logits(x)).detach()[0]
    assert ((p > 0.05) & (p < 0.95)).all()
    freq = (_draws(guide, x) > 0.5).double().mean(0)
    se = (p * (1 - p) / N_DRAWS).sqrt()
    assert ((freq - p).abs() < 4 * se).all(), (freq, p)


@pytest.mark.parametrize("relaxation", ["none", "concrete", "straight_through"])
def test_categorical_guide_draws_classes_at_the_softmax_of_its_logits(relaxation):
    # argmax of a Gumbel-softmax draw is Categorical(softmax(logits)) at any temperature
    # (Jang et al. 2017, section 2); 4 multinomial standard errors per class.
    torch.manual_seed(0)
    guide = AmortizedCategorical(6, 2, 4, hidden=(), relaxation=relaxation, temperature=0.3)
    x = torch.rand(1, 6) * 4 - 2
    p = torch.softmax(guide.logits(x), -1).detach()[0]  # (2, 4)
    z = _draws(guide, x)
    freq = torch.nn.functional.one_hot(z.argmax(-1), 4).double().mean(0)
    se = (p * (1 - p) / N_DRAWS).sqrt()
    assert ((freq - p).abs() < 4 * se).all(), (freq, p)


@pytest.mark.parametrize(
    "guide_cls, kw", [(AmortizedBernoulli, {}), (AmortizedCategorical, {"num_categories": 3})]
)
def test_straight_through_is_hard_forward_with_the_relaxed_gradient(guide_cls, kw):
    # Same noise (same seed) through the guide's straight-through posterior and through the
    # plain relaxed distribution with the same logits: the forward value is the relaxed draw
    # rounded (z > 1/2, or the one-hot argmax), and the gradient of sum(c * z) with respect
    # to the logits is the relaxed draw's.
    import pyro.distributions as dist

    torch.manual_seed(1)
    guide = guide_cls(6, 4, hidden=(), relaxation="straight_through", temperature=0.7, **kw)
    x = torch.rand(5, 6)
    logits = guide.logits(x).detach().requires_grad_()
    t = torch.tensor(0.7)
    if guide_cls is AmortizedBernoulli:
        st, soft = (
            dist.RelaxedBernoulliStraightThrough(t, logits=logits),
            dist.RelaxedBernoulli(t, logits=logits),
        )
    else:
        st, soft = (
            dist.RelaxedOneHotCategoricalStraightThrough(t, logits=logits),
            dist.RelaxedOneHotCategorical(t, logits=logits),
        )
    # the guide's posterior is that straight-through distribution
    post = guide.posterior(x)
    assert type(post.base_dist) is type(st)
    torch.testing.assert_close(post.base_dist.probs, st.probs.detach())
    torch.manual_seed(2)
    guide_z = post.rsample()
    torch.manual_seed(2)
    z_st = st.rsample()
    torch.manual_seed(2)
    z_soft = soft.rsample()
    torch.testing.assert_close(guide_z.detach(), z_st.detach())
    if guide_cls is AmortizedBernoulli:
        hard = (z_soft > 0.5).to(z_soft.dtype)
    else:
        hard = torch.nn.functional.one_hot(z_soft.argmax(-1), 3).to(z_soft.dtype)
    assert torch.equal(z_st.detach(), hard.detach())
    assert not torch.equal(z_soft.detach(), hard.detach())  # the relaxed draw is not hard
    c = torch.randn(z_st.shape)
    (g_st,) = torch.autograd.grad((c * z_st).sum(), [logits])
    (g_soft,) = torch.autograd.grad((c * z_soft).sum(), [logits])
    torch.testing.assert_close(g_st, g_soft)
    assert g_st.abs().sum() > 0
    # and the gradient reaches the encoder through the guide's own draw
    (c * guide_z).sum().backward()
    assert next(guide.encoder.parameters()).grad.abs().sum() > 0
