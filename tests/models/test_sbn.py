import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO, TraceGraph_ELBO

from pyrolvm.data import load
from pyrolvm.errors import ConfigError
from pyrolvm.guides import AmortizedBernoulli, AmortizedCategorical
from pyrolvm.inference import VIMCO, log_likelihood, mean_and_stderr
from pyrolvm.models import SigmoidBeliefNet

torch.set_num_threads(1)


def per_datapoint_log_joint(model, x, z):
    """log p(x, z) per datapoint from the model's own trace with z conditioned, shape (B,)."""
    tr = poutine.trace(poutine.condition(model, data={"z": z})).get_trace(x)
    tr.compute_log_prob()
    return tr.nodes["z"]["log_prob"] + tr.nodes["x"]["log_prob"]


@pytest.mark.parametrize(
    "latent, kw, shape",
    [
        ("bernoulli", {}, (5,)),
        ("categorical", {"num_categories": 3}, (2, 3)),
    ],
)
def test_shapes_and_exact_log_marginal(latent, kw, shape):
    model = SigmoidBeliefNet(6, shape[0], latent, hidden=(4,), **kw)
    with torch.no_grad():
        model.prior_logits.normal_()
    x = torch.bernoulli(torch.rand(7, 6))
    tr = poutine.trace(model).get_trace(x)
    assert tr.nodes["z"]["value"].shape == (7,) + shape
    assert tr.nodes["z"]["fn"].event_shape == shape
    assert tr.nodes["x"]["fn"].event_shape == (6,)
    assert model.sample(3).shape == (3, 6)
    # log_marginal sums p(x, z) over all states; check it against the model's own trace
    states = model.enumerate_latents()
    assert len(states) == (2**5 if latent == "bernoulli" else 3**2)
    if latent == "categorical":
        assert (states.sum(-1) == 1).all()
    joint = torch.stack([per_datapoint_log_joint(model, x, s.expand((7,) + shape)) for s in states])
    assert torch.allclose(model.log_marginal(x), torch.logsumexp(joint, 0), atol=1e-5)
    # ... and the prior sums to one
    assert torch.allclose(model.prior().log_prob(states).logsumexp(0), torch.tensor(0.0), atol=1e-5)


def test_importance_sampled_log_likelihood_matches_enumeration():
    # the foundation's estimator with the discrete guide as proposal: its mean over 20
    # datapoints agrees with the exact value within 4 standard errors + the (small) Jensen
    # bias of K = 2000 samples
    model = SigmoidBeliefNet(6, 4, hidden=())
    guide = AmortizedBernoulli(6, 4)
    x = torch.bernoulli(torch.rand(20, 6))
    est = log_likelihood(model, guide, x, num_samples=2000)
    diff, se = mean_and_stderr(est - model.log_marginal(x).double())
    assert abs(diff) < 4 * se + 0.01


def test_errors():
    with pytest.raises(ConfigError, match="latent type"):
        SigmoidBeliefNet(4, 2, "gaussian")
    with pytest.raises(ConfigError, match="num_categories"):
        SigmoidBeliefNet(4, 2, "categorical", num_categories=1)
    with pytest.raises(ConfigError, match="temperature"):
        SigmoidBeliefNet(4, 2, temperature=0.0)
    with pytest.raises(ConfigError, match="exceed max_states"):
        SigmoidBeliefNet(4, 200).log_marginal(torch.zeros(1, 4))


@pytest.fixture(scope="module")
def digits():
    return load("digits", binarize="static").train[:300]


@pytest.mark.parametrize(
    "latent, guide_cls, relaxation, elbo, baseline, lr, steps, gain",
    [
        ("bernoulli", AmortizedBernoulli, "none", VIMCO(5), "none", 3e-2, 150, 1.0),
        (
            "bernoulli",
            AmortizedBernoulli,
            "none",
            TraceGraph_ELBO(),
            "decaying_avg",
            3e-2,
            200,
            1.0,
        ),
        # the straight-through estimator is biased and learns slowly here (measured +1.1 nats in
        # 300 steps at temperature 1); asserted: a clear gain
        ("bernoulli", AmortizedBernoulli, "straight_through", Trace_ELBO(), "none", 1e-2, 300, 0.5),
        ("categorical", AmortizedCategorical, "none", VIMCO(5), "none", 3e-2, 150, 1.0),
        ("categorical", AmortizedCategorical, "concrete", Trace_ELBO(), "none", 3e-2, 150, 1.0),
    ],
    ids=["bern-vimco", "bern-score-avg", "bern-st", "cat-vimco", "cat-concrete"],
)
def test_short_training_improves_exact_log_likelihood(
    request, digits, latent, guide_cls, relaxation, elbo, baseline, lr, steps, gain
):
    # a short run on 300 digits; the exact (enumerated) log p(x) of the training data rises
    # by at least `gain` nats (about half the gain measured with seed 0)
    kw = {"num_categories": 4} if latent == "categorical" else {}
    dim = 8 if latent == "bernoulli" else 4
    temperature = 1.0 if relaxation == "straight_through" else 0.5
    model = SigmoidBeliefNet(64, dim, latent, hidden=(), data_mean=digits.mean(0), **kw)
    guide = guide_cls(
        64, dim, hidden=(), relaxation=relaxation, temperature=temperature, baseline=baseline, **kw
    )
    before = model.log_marginal(digits).mean().item()
    if relaxation == "concrete":
        model.temperature = temperature  # the relaxed objective of Maddison et al.
    svi = SVI(model, guide, pyro.optim.Adam({"lr": lr}), elbo)
    for _ in range(steps):
        svi.step(digits[torch.randint(0, 300, (50,))])
    model.temperature = None
    after = model.log_marginal(digits).mean().item()
    assert after > before + gain, (before, after)
    # Pinned: the exact log-likelihood after training, measured with seeds 0-3 (bern-vimco)
    # or 0-2 (the others); tolerance about 4 seed-to-seed sds.
    pins = {  # case: (centre, tolerance)  measured values
        "bern-vimco": (-23.72, 0.25),  # -23.73, -23.74, -23.65, -23.77 (sd 0.05)
        "bern-score-avg": (-24.97, 0.5),  # -24.98, -24.84, -25.10 (sd 0.13)
        "bern-st": (-26.32, 0.45),  # -26.36, -26.41, -26.19 (sd 0.11)
        "cat-vimco": (-22.86, 0.25),  # -22.81, -22.89, -22.89 (sd 0.05)
        "cat-concrete": (-25.0, 0.6),  # -24.83, -25.08, -25.12 (sd 0.16)
    }
    centre, tol = pins[request.node.callspec.id]
    assert after == pytest.approx(centre, abs=tol)
    # the untrained model (prior logits 0, output bias at the mean image): -27.41 ... -27.54
    assert before == pytest.approx(-27.4, abs=0.3)
