"""Gradient estimators against exact answers.

Stochastic checks draw N independent gradient estimates with a fixed seed and compare their
mean with the exact value within 4 standard errors of the Monte Carlo mean (stderr = sample
std / sqrt(N), per coordinate); two independent Monte Carlo means are compared within
4 * sqrt(se_1^2 + se_2^2). A false failure at 4 standard errors has probability ~6e-5 per
coordinate, and the seed is fixed anyway.
"""

import itertools
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import RenyiELBO, Trace_ELBO, TraceGraph_ELBO

from pyrolvm.errors import ConfigError
from pyrolvm.guides.amortized import non_reparameterized
from pyrolvm.guides.baselines import Baseline
from pyrolvm.inference import ELBOS, IWAE, STL, VIMCO, DReG, make_elbo
from pyrolvm.models import LinearGaussian

torch.set_num_threads(1)

D, L, B = 3, 1, 2
X = torch.tensor([[1.0, -0.5, 2.0], [0.3, 0.8, -1.2]])


def make_model():
    torch.manual_seed(1)
    return LinearGaussian(torch.randn(D, L), torch.randn(D) * 0.3, noise_scale=0.8)


class Guide:
    """Per-datapoint Gaussian guide q(z_n) = N(m_n, exp(s_n)^2) with free params (r * B, L),
    for r replicates of the batch."""

    def __init__(self, reparameterized=True, baseline="none", loc=None, log_scale=None, r=1):
        self.reparameterized = reparameterized
        self.baseline = Baseline(baseline, D, beta=0.9, hidden=(4,))
        loc = torch.tensor([[0.4], [-0.3]]) if loc is None else loc
        log_scale = torch.full((B, L), -0.7) if log_scale is None else log_scale
        self.loc0 = loc.detach().repeat(r, 1)
        self.log_scale0 = log_scale.detach().repeat(r, 1)

    def __call__(self, x):
        loc = pyro.param("q_loc", self.loc0.clone())
        scale = pyro.param("q_log_scale", self.log_scale0.clone()).exp()
        q = dist.Normal(loc, scale)
        if not self.reparameterized:
            q = non_reparameterized(q)
        infer = self.baseline.infer("z", x)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", q.to_event(1), infer=infer)
        self.baseline.match("z", infer, z.shape[:-1])
        return z


def exact_elbo(model, x):
    """Closed-form ELBO of the LinearGaussian model under the diagonal Gaussian guide, summed
    over the batch, as a differentiable function of the model's and the guide's params."""
    m = pyro.param("q_loc")
    v = pyro.param("q_log_scale").exp() ** 2
    w, b, s2 = model.weight, model.bias, model.noise_scale**2
    resid = x - b - m @ w.T
    exp_lik = (
        -0.5 * D * math.log(2 * math.pi)
        - 0.5 * D * s2.log()
        - (resid.pow(2).sum(-1) + (v @ (w**2).T).sum(-1)) / (2 * s2)
    )
    exp_prior = -0.5 * L * math.log(2 * math.pi) - 0.5 * (m**2 + v).sum(-1)
    entropy = 0.5 * (math.log(2 * math.pi * math.e) + v.log()).sum(-1)
    return (exp_lik + exp_prior + entropy).sum()


GUIDE_PARAMS = ["q_loc", "q_log_scale"]
MODEL_PARAMS = [
    "linear_gaussian$$$weight",
    "linear_gaussian$$$bias",
    "linear_gaussian$$$log_noise_scale",
]


def param_names():
    return GUIDE_PARAMS + MODEL_PARAMS


def _grads(store, names):
    return [-store.get_param(k).unconstrained().grad for k in names]


def draw_grads(elbo, model, guide, x, n, guide_params=GUIDE_PARAMS, model_params=MODEL_PARAMS):
    """Gradient estimates of the *bound* (minus the loss's gradient) from ``n`` calls.

    The batch ``x`` holds R replicates of B datapoints, each with its own guide params, so one
    call gives R independent draws of the gradient of each datapoint's guide params, but
    only their sum for the shared model params. Returns (guide draws (n * R, B * P_guide),
    model draws (n, P_model)), the model draws being averages over R replicates, scaled by
    R so that their expectation is the gradient for one replicate of the batch.
    """
    store = pyro.get_param_store()
    gs, ms = [], []
    for _ in range(n):
        for p in store.values():
            p.unconstrained().grad = None
        elbo.loss_and_grads(model, guide, x)
        g = _grads(store, guide_params)
        r = g[0].shape[0] // B
        gs.append(torch.cat([t.reshape(r, -1) for t in g], -1))
        ms.append(torch.cat([t.reshape(-1) for t in _grads(store, model_params)]) / r)
    return torch.cat(gs), torch.stack(ms)


def exact_grad(model, x):
    """(guide grads (B * P_guide,), model grads (P_model,)) of the closed-form ELBO of one
    replicate of the batch."""
    store = pyro.get_param_store()
    gp = [store.get_param(k).unconstrained() for k in GUIDE_PARAMS]
    mp = [store.get_param(k).unconstrained() for k in MODEL_PARAMS]
    grads = torch.autograd.grad(exact_elbo(model, x), gp + mp)
    r = x.shape[0] // B
    guide = torch.cat([g.reshape(r, -1) for g in grads[: len(gp)]], -1)[0]
    model_ = torch.cat([g.reshape(-1) for g in grads[len(gp) :]]) / r
    return guide, model_


def assert_within_4se(samples, target):
    mean = samples.mean(0)
    se = samples.std(0) / math.sqrt(samples.shape[0])
    z = (mean - target).abs() / se.clamp_min(1e-12)
    assert (z < 4).all(), f"mean {mean}\ntarget {target}\nz-scores {z}"


R = 100  # replicates of the batch per call


def setup(reparameterized=True, baseline="none", r=R):
    model = make_model()
    guide = Guide(reparameterized, baseline, r=r)
    x = X.repeat(r, 1)
    guide(x)
    model(x)  # registers the model's params in the param store
    return model, guide, x


@pytest.mark.parametrize(
    "elbo, reparameterized, baseline, n",
    [
        (Trace_ELBO(), True, "none", 10),
        (STL(num_particles=1), True, "none", 10),
        (TraceGraph_ELBO(), False, "none", 40),
        (TraceGraph_ELBO(), False, "decaying_avg", 40),
        (TraceGraph_ELBO(), False, "neural", 40),
    ],
    ids=["pathwise", "stl", "score", "score-decaying-avg", "score-neural"],
)
def test_unbiased_for_closed_form_elbo_gradient(elbo, reparameterized, baseline, n):
    model, guide, x = setup(reparameterized, baseline)
    target_guide, target_model = exact_grad(model, x)
    draws_guide, draws_model = draw_grads(elbo, model, guide, x, n)
    assert_within_4se(draws_guide, target_guide)
    assert_within_4se(draws_model, target_model)


def test_stl_and_dreg_have_zero_guide_gradient_at_exact_posterior():
    # With q = p(z|x) exactly, log w = log p(x) for every z: the path derivative vanishes
    # (Roeder et al. 2017, section 4), while the ordinary estimator keeps the score term.
    model = make_model()
    post = model.posterior(X)
    guide = Guide(
        loc=post.loc, log_scale=post.covariance_matrix.diagonal().sqrt().log().expand(B, L)
    )
    guide(X)
    model(X)
    for elbo in (STL(num_particles=3), DReG(num_particles=3)):
        g, _ = draw_grads(elbo, model, guide, X, 3)
        assert g.abs().max() < 1e-4
    g, _ = draw_grads(Trace_ELBO(), model, guide, X, 3)
    assert g.abs().max() > 1e-2


def test_dreg_guide_gradient_has_iwae_expectation():
    k, n = 5, 20
    model, guide, x = setup()
    dreg, _ = draw_grads(DReG(num_particles=k), model, guide, x, n)
    pyro.set_rng_seed(1)  # independent draws for the comparison
    iwae, _ = draw_grads(IWAE(num_particles=k), model, guide, x, n)
    diff = dreg.mean(0) - iwae.mean(0)
    se = (dreg.var(0) / len(dreg) + iwae.var(0) / len(iwae)).sqrt()
    assert (diff.abs() < 4 * se).all(), (diff, se)


def test_dreg_model_gradient_is_iwae_model_gradient():
    # the model parameters get the ordinary IWAE gradient: identical on the same draws,
    # while the guide's gradients differ
    model, guide, x = setup(r=1)
    pyro.set_rng_seed(3)
    a = draw_grads(DReG(num_particles=4), model, guide, x, 3)
    pyro.set_rng_seed(3)
    b = draw_grads(IWAE(num_particles=4), model, guide, x, 3)
    assert torch.allclose(a[1], b[1], atol=1e-5)
    assert not torch.allclose(a[0], b[0], atol=1e-3)


def test_variance_of_pathwise_and_score_function_gradients_of_x_squared():
    # d/dmu E[x^2], x ~ N(mu, sigma^2): pathwise 2x has variance 4 sigma^2; the score function
    # x^2 (x - mu) / sigma^2 has variance mu^4/sigma^2 + 14 mu^2 + 15 sigma^2. N independent
    # draws come from N copies of mu in a plate (one gradient coordinate each). Tolerance:
    # 4 standard errors of the sample variance, se = sqrt((m4 - s^4) / N).
    mu, sigma, n = 1.0, 0.5, 200_000

    def estimate(reparameterized):
        pyro.clear_param_store()
        store = pyro.get_param_store()

        value = []

        def model():
            with pyro.plate("draws", n):
                if reparameterized:
                    # no model site for x: ELBO = E[f(x) - log q(x)], and the total
                    # derivative of log q(mu + sigma eps; mu) in mu is 0, so the
                    # pathwise gradient is exactly f'(x) = 2x
                    x = value[0]
                else:
                    # log p(x) = log q(x) with q's params held fixed: log w = f(x) exactly,
                    # so TraceGraph_ELBO's gradient is f(x) d/dmu log q(x)
                    x = pyro.sample("x", dist.Normal(store.get_param("mu").detach(), sigma))
                pyro.factor("f", x**2)

        def traced_guide():
            with pyro.plate("draws", n):
                loc = pyro.param("mu", torch.full((n,), mu))
                q = dist.Normal(loc, sigma)
                if not reparameterized:
                    q = non_reparameterized(q)
                value[:] = [
                    pyro.sample("x", q, infer={"is_auxiliary": True} if reparameterized else {})
                ]

        elbo = Trace_ELBO() if reparameterized else TraceGraph_ELBO()
        elbo.loss_and_grads(model, traced_guide)
        return -store.get_param("mu").unconstrained().grad

    for reparameterized, expected in (
        (True, 4 * sigma**2),
        (False, mu**4 / sigma**2 + 14 * mu**2 + 15 * sigma**2),
    ):
        g = estimate(reparameterized).double()
        assert abs(g.mean().item() - 2 * mu) < 4 * g.std().item() / math.sqrt(n)
        var = g.var().item()
        c = g - g.mean()
        se_var = math.sqrt(((c**4).mean().item() - var**2) / n)
        assert abs(var - expected) < 4 * se_var, (reparameterized, var, expected, se_var)


def _value_and_grads(elbo, model, guide, x, seed):
    pyro.set_rng_seed(seed)
    value = elbo.loss(model, guide, x)
    pyro.set_rng_seed(seed)
    for p in pyro.get_param_store().values():
        p.unconstrained().grad = None
    elbo.loss_and_grads(model, guide, x)
    grads = torch.cat(
        [
            pyro.get_param_store().get_param(n).unconstrained().grad.reshape(-1)
            for n in param_names()
        ]
    )
    return value, grads


def test_iwae_agrees_with_renyi_alpha_0_on_a_full_batch():
    # Pyro's RenyiELBO keeps plate dimensions out of its log-sum-exp (Pyro PR #2321), so on a
    # plain batch of several datapoints it is the same per-datapoint bound: equal draw by draw.
    model, guide = make_model(), Guide()
    guide(X)
    model(X)
    for k in (1, 7):
        ours = _value_and_grads(IWAE(num_particles=k), model, guide, X, 11)
        theirs = _value_and_grads(
            RenyiELBO(alpha=0, num_particles=k, vectorize_particles=True), model, guide, X, 11
        )
        assert ours[0] == pytest.approx(theirs[0], rel=1e-6)
        assert torch.allclose(ours[1], theirs[1], atol=1e-5)


def test_iwae_scales_the_bound_of_a_subsampled_batch_and_renyi_does_not():
    # Under a scale c (a subsampled plate of B of c * B datapoints, or poutine.scale) the
    # unbiased estimate of the full-data bound is c times the batch's summed per-datapoint
    # bound: IWAE's loss is exactly that on the same draws; RenyiELBO scales the log-weights
    # inside the log-sum-exp, which gives another number for K > 1.
    model, guide = make_model(), Guide()
    guide(X)
    model(X)
    c, k = 5.0, 7
    scaled_model, scaled_guide = poutine.scale(model, c), poutine.scale(guide, c)
    plain = _value_and_grads(IWAE(num_particles=k), model, guide, X, 3)
    scaled = _value_and_grads(IWAE(num_particles=k), scaled_model, scaled_guide, X, 3)
    assert scaled[0] == pytest.approx(c * plain[0], rel=1e-6)
    assert torch.allclose(scaled[1], c * plain[1], rtol=1e-5, atol=1e-5)
    renyi = RenyiELBO(alpha=0, num_particles=k, vectorize_particles=True)
    renyi_plain = _value_and_grads(renyi, model, guide, X, 3)
    renyi_scaled = _value_and_grads(renyi, scaled_model, scaled_guide, X, 3)
    assert renyi_plain[0] == pytest.approx(plain[0], rel=1e-6)
    assert abs(renyi_scaled[0] - c * plain[0]) > 0.1


def test_iwae_bound_increases_with_k_towards_log_marginal():
    # E[L_K] from R independent replicates of each datapoint (the bound is per datapoint, so
    # replicates in the batch are independent draws); consecutive K compared within 4 se.
    model = make_model()
    r = 4000
    x = X.repeat(r, 1)
    guide = Guide(
        loc=torch.tensor([[0.4], [-0.3]]).repeat(r, 1), log_scale=torch.full((B * r, L), -1.5)
    )
    pyro.clear_param_store()
    means, ses = [], []
    for k in (1, 2, 5, 20):
        elbo = IWAE(num_particles=k)
        with torch.no_grad():
            log_w = elbo.importance_weights(model, guide, x).log_w
            bound = (torch.logsumexp(log_w, 0) - math.log(k)).reshape(r, B).sum(-1).double()
        means.append(bound.mean().item())
        ses.append(bound.std().item() / math.sqrt(r))
    for i in range(len(means) - 1):
        assert means[i + 1] - means[i] > 4 * math.hypot(ses[i], ses[i + 1]), (means, ses)
    log_px = model.log_marginal(X).sum().item()
    assert means[-1] < log_px + 4 * ses[-1]


# --- a small discrete model whose multi-sample bound is computed exactly by enumeration ---

XD = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
STATES = torch.tensor(list(itertools.product([0.0, 1.0], repeat=2)))  # (4, 2)


def discrete_model(x):
    prior = pyro.param("prior_logits", torch.tensor([0.3, -0.4]))
    w = pyro.param("w", torch.tensor([[1.0, -1.0], [0.5, 0.7], [-0.8, 0.2]]))
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Bernoulli(logits=prior).to_event(1))
        pyro.sample("x", dist.Bernoulli(logits=z @ w.T - 0.2).to_event(1), obs=x)


def discrete_guide(x, baseline=None):
    r = x.shape[0] // XD.shape[0]
    logits = pyro.param("q_logits", torch.tensor([[0.5, -0.2], [-0.6, 0.1]]).repeat(r, 1))
    infer = baseline.infer("z", x) if baseline is not None else {}
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Bernoulli(logits=logits).to_event(1), infer=infer)
    if baseline is not None:
        baseline.match("z", infer, z.shape[:-1])


DISCRETE_PARAMS = ["prior_logits", "w", "q_logits"]


def exact_bound(k):
    """Sum over the batch of L_K = E[log (1/K) sum_k w_k], by enumerating all K-tuples of the
    4 latent states per datapoint."""
    store = pyro.get_param_store()
    prior, w, q_logits = (store.get_param(n) for n in DISCRETE_PARAMS)
    log_p = (
        dist.Bernoulli(logits=prior).log_prob(STATES).sum(-1)[:, None]
        + dist.Bernoulli(logits=STATES @ w.T - 0.2)
        .log_prob(XD[:, None, None, :])
        .sum(-1)
        .squeeze(1)
        .T
    )  # (4, B)
    log_q = dist.Bernoulli(logits=q_logits[:B]).log_prob(STATES[:, None]).sum(-1)  # (4, B)
    log_w = log_p - log_q
    total = 0.0
    for tup in itertools.product(range(4), repeat=k):
        idx = torch.tensor(tup)
        total = (
            total + (log_q[idx].sum(0).exp() * (torch.logsumexp(log_w[idx], 0) - math.log(k))).sum()
        )
    return total


def discrete_grads(elbo, guide, n, r=R):
    """(guide draws (n * r, B * 2), model draws (n, 4)) as in :func:`draw_grads`, from the
    batch XD replicated r times."""
    return draw_grads(
        elbo,
        discrete_model,
        guide,
        XD.repeat(r, 1),
        n,
        guide_params=["q_logits"],
        model_params=["prior_logits", "w"],
    )


def discrete_target(k, r=R):
    """Exact gradient of L_K for one replicate: (guide (B * 2,), model (4,))."""
    discrete_guide(XD.repeat(r, 1))
    discrete_model(XD)
    store = pyro.get_param_store()
    params = [store.get_param(n).unconstrained() for n in DISCRETE_PARAMS]
    grads = torch.autograd.grad(exact_bound(k), params)
    return grads[2][:B].reshape(-1), torch.cat([grads[0], grads[1].reshape(-1)])


@pytest.mark.parametrize("k, leave_one_out", [(2, True), (3, True), (2, False), (3, False)])
def test_vimco_unbiased_for_enumerated_multisample_bound(k, leave_one_out):
    # leave_one_out=False is the plain multi-sample score-function estimator of L_K
    target = discrete_target(k)
    elbo = VIMCO(num_particles=k, leave_one_out=leave_one_out)
    # the reported loss is the negative bound summed over the replicated batch: its mean
    # over calls matches R times the exact bound
    losses = torch.tensor(
        [elbo.loss(discrete_model, discrete_guide, XD.repeat(R, 1)) for _ in range(20)]
    )
    assert abs(-losses.mean() / R - exact_bound(k).item()) < 4 * losses.std() / R / math.sqrt(20)
    draws_guide, draws_model = discrete_grads(elbo, discrete_guide, 30)
    assert_within_4se(draws_guide, target[0])
    assert_within_4se(draws_model, target[1])


@pytest.mark.parametrize("baseline", ["none", "decaying_avg", "neural"])
def test_score_function_unbiased_for_enumerated_elbo(baseline):
    # K = 1: the multi-sample bound is the ELBO
    target = discrete_target(1)
    b = Baseline(baseline, data_dim=3, hidden=(4,))
    guide = lambda x: discrete_guide(x, b)  # noqa: E731
    draws_guide, draws_model = discrete_grads(TraceGraph_ELBO(), guide, 30)
    assert_within_4se(draws_guide, target[0])
    assert_within_4se(draws_model, target[1])


def test_registry_and_errors():
    for name in ("dreg", "stl", "vimco"):
        assert name in ELBOS
    assert isinstance(make_elbo("dreg", 5), DReG)
    assert isinstance(make_elbo("vimco", 5), VIMCO)
    with pytest.raises(ConfigError, match="num_particles >= 2"):
        make_elbo("vimco", 1)
    # pathwise estimators refuse a discrete guide with a clear error
    with pytest.raises(ConfigError, match="rsample"):
        DReG(3).loss_and_grads(discrete_model, discrete_guide, XD)
    with pytest.raises(ConfigError, match="rsample"):
        STL(3).loss(discrete_model, discrete_guide, XD)


def test_dreg_one_pass_equals_two_passes():
    # the single-backward hook path and the general two-pass path give the same gradients
    # on the same draws (a guide with one latent site takes the hook path)
    model, guide, x = setup(r=3)
    out = []
    for two_pass in (False, True):
        elbo = DReG(num_particles=4, single_pass=not two_pass)
        pyro.set_rng_seed(5)
        out.append(draw_grads(elbo, model, guide, x, 2))
    assert torch.allclose(out[0][0], out[1][0], atol=1e-5)
    assert torch.allclose(out[0][1], out[1][1], atol=1e-5)
