"""The loss as a point of intervention: beta-ELBO (with schedules), free bits, MMD, Rényi-alpha,
MIWAE / PIWAE / CIWAE. Exact reductions (bitwise equal on the same draws), unbiasedness against
the closed-form linear-Gaussian ELBO (4 standard errors, fixed seeds, as in
``test_estimators.py``), finite differences of the bound on common random numbers for the
bounds without a closed form, and the schedules under resume."""

import copy
import math

import pyro
import pytest
import torch
from test_estimators import (
    GUIDE_PARAMS,
    MODEL_PARAMS,
    B,
    D,
    Guide,
    L,
    X,
    assert_within_4se,
    draw_grads,
    exact_grad,
    make_model,
    setup,
)

from pyrolvm.errors import ConfigError
from pyrolvm.inference import (
    CIWAE,
    IWAE,
    MIWAE,
    MMDELBO,
    PIWAE,
    BetaELBO,
    BetaSchedule,
    FreeBitsELBO,
    Renyi,
    make_elbo,
    train,
)
from pyrolvm.inference.objectives import mmd, rbf_kernel

torch.set_num_threads(1)
PARAMS = GUIDE_PARAMS + MODEL_PARAMS


def loss_and_grads(elbo, model, guide, x, seed=0):
    """(loss, [grad of each param in PARAMS]) of one call on the draws of ``seed``."""
    store = pyro.get_param_store()
    for p in store.values():
        p.unconstrained().grad = None
    pyro.set_rng_seed(seed)
    loss = elbo.loss_and_grads(model, guide, x)
    grads = [store.get_param(k).unconstrained().grad.clone() for k in PARAMS]
    return loss, grads


def assert_same(a, b):
    assert a[0] == b[0], (a[0], b[0])
    for ga, gb in zip(a[1], b[1], strict=True):
        assert torch.equal(ga, gb), (ga, gb)


@pytest.fixture
def pair():
    pyro.clear_param_store()
    model, guide, x = setup(r=3)
    return model, guide, x


@pytest.mark.parametrize(
    "objective",
    [
        BetaELBO(1, beta=1.0),
        FreeBitsELBO(1, free_bits=0.0),
        MMDELBO(1, mmd_weight=0.0),
        CIWAE(1, beta=1.0),
        MIWAE(1, num_groups=1),
        Renyi(1, alpha=0.5),
    ],
    ids=["beta=1", "freebits-0", "mmd-0", "ciwae-1", "miwae-1-1", "renyi-k1"],
)
def test_reduces_exactly_to_the_elbo(pair, objective):
    # same draws, same loss and gradients, bit for bit, as the plain ELBO (IWAE with K = 1)
    model, guide, x = pair
    assert_same(
        loss_and_grads(objective, model, guide, x), loss_and_grads(IWAE(1), model, guide, x)
    )


@pytest.mark.parametrize(
    "objective",
    [Renyi(4, alpha=0.0), MIWAE(4, num_groups=1), CIWAE(4, beta=0.0)],
    ids=["renyi-0", "miwae-M1", "ciwae-0"],
)
def test_reduces_exactly_to_iwae(pair, objective):
    model, guide, x = pair
    assert_same(
        loss_and_grads(objective, model, guide, x), loss_and_grads(IWAE(4), model, guide, x)
    )


def test_multi_particle_reductions_to_the_averaged_elbo(pair):
    # MIWAE with K = 1 is the ELBO averaged over M particles, as is beta = 1 with M
    # particles, free bits at 0 and CIWAE at beta = 1
    model, guide, x = pair
    ref = loss_and_grads(BetaELBO(5, beta=1.0), model, guide, x)
    for objective in (
        MIWAE(1, num_groups=5),
        FreeBitsELBO(5, 0.0),
        CIWAE(5, beta=1.0),
        MMDELBO(5, mmd_weight=0.0),
    ):
        assert_same(loss_and_grads(objective, model, guide, x), ref)
    with torch.no_grad():
        pyro.set_rng_seed(0)
        log_w = IWAE(5).importance_weights(model, guide, x).log_w
    assert ref[0] == -log_w.mean(0).sum().item()


def test_renyi_tends_to_the_elbo_as_alpha_tends_to_one(pair):
    model, guide, x = pair
    with torch.no_grad():
        pyro.set_rng_seed(0)
        log_w = IWAE(6).importance_weights(model, guide, x).log_w
    gaps = [
        (Renyi(6, alpha=a).bound(log_w) - log_w.mean(0)).abs().max().item()
        for a in (0.9, 0.99, 0.999, 1.0)
    ]
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 1e-2 and gaps[3] == 0.0
    # alpha in [0, 1): between the ELBO and IWAE, decreasing in alpha
    b = [Renyi(6, alpha=a).bound(log_w) for a in (0.0, 0.5, 1.0)]
    assert (b[0] >= b[1]).all() and (b[1] >= b[2]).all()


def exact_beta_grad(model, x, beta):
    """Gradient of the closed-form beta-ELBO, E log p(x|z) + beta (E log p(z) + H[q])."""
    store = pyro.get_param_store()
    m = pyro.param("q_loc")
    v = pyro.param("q_log_scale").exp() ** 2
    w, b, s2 = model.weight, model.bias, model.noise_scale**2
    resid = x - b - m @ w.T
    exp_lik = (
        -0.5 * D * math.log(2 * math.pi)
        - 0.5 * D * s2.log()
        - (resid.pow(2).sum(-1) + (v @ (w**2).T).sum(-1)) / (2 * s2)
    )
    neg_kl = (
        -0.5 * L * math.log(2 * math.pi)
        - 0.5 * (m**2 + v).sum(-1)
        + 0.5 * (math.log(2 * math.pi * math.e) + v.log()).sum(-1)
    )
    r = x.shape[0] // B
    params = [store.get_param(k).unconstrained() for k in PARAMS]
    grads = torch.autograd.grad((exp_lik + beta * neg_kl).sum(), params)
    guide = torch.cat([g.reshape(r, -1) for g in grads[:2]], -1)[0]
    return guide, torch.cat([g.reshape(-1) for g in grads[2:]]) / r


@pytest.mark.parametrize("beta", [0.5, 4.0])
def test_beta_elbo_gradient_unbiased_for_closed_form(beta):
    model, guide, x = setup()
    target = exact_beta_grad(model, x, beta)
    draws = draw_grads(BetaELBO(2, beta=beta), model, guide, x, 10)
    assert_within_4se(draws[0], target[0])
    assert_within_4se(draws[1], target[1])


def test_free_bits_above_every_kl_is_the_expected_likelihood_minus_lambda():
    # with lambda far above every dimension's KL the objective is E log p(x|z) - B L lambda:
    # the KL gets no gradient (beta = 0's gradient), the loss is shifted by B L lambda per
    # replicate batch
    model, guide, x = setup()
    target = exact_beta_grad(model, x, 0.0)
    draws = draw_grads(FreeBitsELBO(2, free_bits=50.0), model, guide, x, 10)
    assert_within_4se(draws[0], target[0])
    assert_within_4se(draws[1], target[1])
    pyro.set_rng_seed(0)
    a = FreeBitsELBO(2, free_bits=50.0).loss(model, guide, x)
    pyro.set_rng_seed(0)
    b = BetaELBO(2, beta=0.0).loss(model, guide, x)
    assert a == pytest.approx(b + x.shape[0] * L * 50.0, rel=1e-6)


def test_free_bits_floors_only_the_dimensions_below_lambda():
    # two latent dimensions, one far from the prior (KL ~ 8 nats) and one at it (KL 0):
    # lambda = 1 raises the loss by B * (1 - KL_2) exactly, and only dimension 2's gradient
    # through the KL disappears
    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", pyro.distributions.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", pyro.distributions.Normal(z.sum(-1), 1.0), obs=x)

    def guide(x):
        loc = pyro.param("loc", torch.tensor([4.0, 0.0]))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", pyro.distributions.Normal(loc, 1.0).to_event(1))

    pyro.clear_param_store()
    x = torch.zeros(50)
    pyro.set_rng_seed(0)
    fb = FreeBitsELBO(3, free_bits=1.0).importance_weights(model, guide, x)
    from pyrolvm.inference import kl_per_dimension

    kl = kl_per_dimension(fb.model_trace, fb.guide_trace)["z"]
    assert kl[0] > 5 and abs(kl[1]) < 0.5
    elbo = FreeBitsELBO(3, free_bits=0.0).batch_bound(fb)
    floored = FreeBitsELBO(3, free_bits=1.0).batch_bound(fb)
    assert (elbo - floored).item() == pytest.approx(50 * (1.0 - kl[1].item()), rel=1e-5)
    per_site = FreeBitsELBO(3, free_bits=1.0, per="site").batch_bound(fb)
    assert per_site.item() == elbo.item()  # the site's total KL is above 1 nat


def crn_derivative(elbo, model, guide, x, name, index, h=1e-3, draws=5):
    """Central finite difference of the loss in one coordinate of a param, on common random
    numbers (the same seeds on both sides), averaged over ``draws`` seeds; and the mean of the
    estimator's gradient on the same seeds."""
    store = pyro.get_param_store()
    p = store.get_param(name).unconstrained()
    elbo.loss(model, guide, x)  # the ELBO guesses its plate nesting (and draws) on first use
    fd, grad = 0.0, 0.0
    for seed in range(draws):
        for sign in (1, -1):
            with torch.no_grad():
                p.view(-1)[index] += sign * h
            pyro.set_rng_seed(seed)
            with torch.no_grad():
                fd += sign * elbo.loss(model, guide, x) / (2 * h)
            with torch.no_grad():
                p.view(-1)[index] -= sign * h
        grad += (
            loss_and_grads(elbo, model, guide, x, seed)[1][PARAMS.index(name)]
            .view(-1)[index]
            .item()
        )
    return fd / draws, -grad / draws


@pytest.mark.parametrize(
    "objective",
    [
        Renyi(4, alpha=0.5),
        Renyi(4, alpha=-1.0),
        MIWAE(3, num_groups=2),
        CIWAE(4, beta=0.3),
        BetaELBO(3, beta=2.0),
        MMDELBO(3, mmd_weight=5.0),
    ],
    ids=["renyi-0.5", "renyi--1", "miwae", "ciwae", "beta", "mmd"],
)
@pytest.mark.parametrize("name", ["q_loc", "q_log_scale", "linear_gaussian$$$weight"])
def test_gradient_is_the_derivative_of_the_bound_on_common_random_numbers(objective, name):
    # the reparameterized estimator differentiates the sampled bound: a detached term, a
    # missing path or a wrong weight shows up as a mismatch with the finite difference
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        pyro.clear_param_store()
        model = make_model()
        guide = Guide(
            loc=torch.tensor([[0.4], [-0.3]], dtype=torch.float64),
            log_scale=torch.full((B, L), -0.7, dtype=torch.float64),
        )
        x = X.double()
        guide(x)
        model(x)
        fd, grad = crn_derivative(objective, model, guide, x, name, 0)
        assert grad == pytest.approx(-fd, rel=1e-4, abs=1e-6)
    finally:
        torch.set_default_dtype(previous)


def test_miwae_gradient_has_the_expectation_of_iwae_k():
    # E[MIWAE_{M,K}] = E[IWAE_K]: their gradients have the same expectation
    model, guide, x = setup()
    a = draw_grads(MIWAE(2, num_groups=3), model, guide, x, 15)
    pyro.set_rng_seed(1)
    b = draw_grads(IWAE(2), model, guide, x, 45)
    for da, db in zip(a, b, strict=True):
        se = (da.var(0) / len(da) + db.var(0) / len(db)).sqrt()
        assert ((da.mean(0) - db.mean(0)).abs() < 4 * se).all()


def test_ciwae_gradient_unbiased_for_the_combined_bound():
    # E[grad CIWAE_beta] = beta grad ELBO (closed form) + (1 - beta) E[grad IWAE_K]
    beta, k = 0.4, 3
    model, guide, x = setup()
    exact = exact_grad(model, x)
    c = draw_grads(CIWAE(k, beta=beta), model, guide, x, 15)
    pyro.set_rng_seed(1)
    i = draw_grads(IWAE(k), model, guide, x, 15)
    for dc, di, e in zip(c, i, exact, strict=True):
        diff = dc.mean(0) - (beta * e + (1 - beta) * di.mean(0))
        se = (dc.var(0) / len(dc) + (1 - beta) ** 2 * di.var(0) / len(di)).sqrt()
        assert (diff.abs() < 4 * se).all(), (diff, se)


def test_piwae_gives_the_model_iwae_mk_and_the_guide_miwae_gradients(pair):
    model, guide, x = pair
    p = loss_and_grads(PIWAE(2, num_groups=3), model, guide, x)
    i = loss_and_grads(IWAE(6), model, guide, x)
    m = loss_and_grads(MIWAE(2, num_groups=3), model, guide, x)
    assert p[0] == i[0]
    for k, name in enumerate(PARAMS):
        ref = m if name in GUIDE_PARAMS else i
        assert torch.allclose(p[1][k], ref[1][k], rtol=1e-5, atol=1e-6), name
    assert not torch.allclose(i[1][0], m[1][0], atol=1e-4)  # the two targets do differ


def test_mmd_matches_pyros_rbf_kernel_and_statistic():
    from pyro.contrib.gp.kernels import RBF

    torch.manual_seed(0)
    a, b = torch.randn(30, 3), torch.randn(20, 3) + 1.0
    kernel = RBF(3, lengthscale=torch.tensor(0.7))
    with torch.no_grad():
        assert torch.allclose(rbf_kernel(a, b, 0.7), kernel(a, b), atol=1e-6)
        ref = kernel(a).mean() + kernel(b).mean() - 2 * kernel(a, b).mean()  # Trace_MMD's
    assert mmd(a, b, 0.7).item() == pytest.approx(ref.item(), rel=1e-5)
    assert mmd(a, a, 0.7).item() == pytest.approx(0.0, abs=1e-6)


def test_mmd_penalty_pulls_the_aggregate_posterior_to_the_prior(pair):
    model, guide, x = pair
    with torch.no_grad():
        pyro.param("q_loc").add_(3.0)  # aggregate posterior far from N(0, 1)
    pyro.set_rng_seed(0)
    far = MMDELBO(2, mmd_weight=1.0).divergence(MMDELBO(2).importance_weights(model, guide, x))
    with torch.no_grad():
        pyro.param("q_loc").sub_(3.0)
    pyro.set_rng_seed(0)
    near = MMDELBO(2, mmd_weight=1.0).divergence(MMDELBO(2).importance_weights(model, guide, x))
    assert far > 5 * near > 0


def test_schedules():
    lin = BetaSchedule(2.0, "linear", warmup_epochs=4)
    assert [lin(e) for e in range(1, 8)] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.0, 2.0]
    cyc = BetaSchedule(1.0, "cyclical", warmup_epochs=2)
    assert [cyc(e) for e in range(1, 10)] == [0.0, 0.5, 1.0, 1.0, 0.0, 0.5, 1.0, 1.0, 0.0]
    assert [BetaSchedule(3.0)(e) for e in (1, 50)] == [3.0, 3.0]
    elbo = BetaELBO(1, beta=2.0, anneal="linear", warmup_epochs=4)
    assert elbo.beta == 0.0
    elbo.set_epoch(3)
    assert elbo.beta == 1.0


def test_annealed_training_resumes_bitwise():
    # a linear warm-up over 3 epochs, resumed from the end of epoch 2, ends with the
    # parameters and curves of the uninterrupted run (the schedule follows the epoch)
    def run(resume_from=None):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        model = make_model()
        guide = Guide(r=10)
        x = X.repeat(10, 1)
        saved = []
        history = train(
            model,
            guide,
            x,
            BetaELBO(2, beta=1.0, anneal="linear", warmup_epochs=3),
            epochs=4,
            batch_size=20,
            progress=False,
            checkpoint=lambda s: saved.append(copy.deepcopy(s)),
            resume_from=resume_from,
        )
        store = pyro.get_param_store()
        return history, {k: store.get_param(k).detach().clone() for k in store}, saved

    history, params, saved = run()
    resumed_history, resumed, _ = run(saved[1])
    assert history["train_elbo"] == resumed_history["train_elbo"]
    assert all(torch.equal(params[k], resumed[k]) for k in params)


def test_make_elbo_options():
    assert make_elbo("renyi", 3, alpha=0.5).alpha == 0.5
    m = make_elbo("miwae", 4, num_groups=2)
    assert (m.num_particles, m.num_groups, m.group_size) == (8, 2, 4)
    assert make_elbo("beta", 1, beta=None, anneal=None).beta == 1.0  # None: the default
    with pytest.raises(ConfigError, match="does not take alpha"):
        make_elbo("beta", 1, alpha=0.5)
    with pytest.raises(ConfigError, match="does not take"):
        make_elbo("trace", 1, beta=2.0)
    for bad in (
        dict(name="beta", beta=-1.0),
        dict(name="freebits", free_bits=-0.1),
        dict(name="ciwae", beta=1.5),
        dict(name="mmd", bandwidth=0.0),
        dict(name="miwae", num_groups=0),
        dict(name="beta", anneal="cosine"),
    ):
        with pytest.raises(ConfigError):
            make_elbo(bad.pop("name"), 2, **bad)


def test_miwae_dreg_with_one_group_is_dreg(pair):
    from pyrolvm.inference import DReG, MIWAEDReG

    model, guide, x = pair
    assert_same(
        loss_and_grads(MIWAEDReG(4, num_groups=1), model, guide, x),
        loss_and_grads(DReG(4), model, guide, x),
    )


@pytest.mark.parametrize("single_pass", [True, False])
def test_miwae_dreg_unbiased_for_the_miwae_gradient(single_pass):
    # the guide's DReG gradient has MIWAE's expectation; the model's equals MIWAE's on the
    # same draws; the loss is MIWAE's
    from pyrolvm.inference import MIWAEDReG

    model, guide, x = setup()
    d = draw_grads(MIWAEDReG(3, num_groups=2, single_pass=single_pass), model, guide, x, 15)
    pyro.set_rng_seed(1)
    m = draw_grads(MIWAE(3, num_groups=2), model, guide, x, 15)
    se = (d[0].var(0) / len(d[0]) + m[0].var(0) / len(m[0])).sqrt()
    assert ((d[0].mean(0) - m[0].mean(0)).abs() < 4 * se).all()
    pyro.clear_param_store()
    model, guide, x = setup(r=1)
    a = loss_and_grads(MIWAEDReG(3, num_groups=2, single_pass=single_pass), model, guide, x)
    b = loss_and_grads(MIWAE(3, num_groups=2), model, guide, x)
    assert a[0] == pytest.approx(b[0], rel=1e-6)
    for k, name in enumerate(PARAMS):
        if name in MODEL_PARAMS:
            assert torch.allclose(a[1][k], b[1][k], rtol=1e-5, atol=1e-6), name


@pytest.mark.parametrize("alpha", [0.5, -1.0])
def test_renyi_scales_the_bound_of_a_subsampled_batch_and_pyros_does_not(pair, alpha):
    # under a scale c (a subsampled plate) the full-data estimate is c times the batch's
    # summed per-datapoint bound: ours on the same draws; Pyro's RenyiELBO scales inside
    from pyro import poutine
    from pyro.infer import RenyiELBO
    from test_estimators import _value_and_grads

    model, guide, x = pair
    c, k = 5.0, 6
    scaled = (poutine.scale(model, c), poutine.scale(guide, c))
    plain = _value_and_grads(Renyi(k, alpha=alpha), model, guide, x, 3)
    ours = _value_and_grads(Renyi(k, alpha=alpha), *scaled, x, 3)
    assert ours[0] == pytest.approx(c * plain[0], rel=1e-6)
    assert torch.allclose(ours[1], c * plain[1], rtol=1e-5, atol=1e-5)
    pyros = RenyiELBO(alpha=alpha, num_particles=k, vectorize_particles=True)
    assert _value_and_grads(pyros, model, guide, x, 3)[0] == pytest.approx(plain[0], rel=1e-5)
    assert abs(_value_and_grads(pyros, *scaled, x, 3)[0] - c * plain[0]) > 0.1
