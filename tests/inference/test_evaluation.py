"""Importance-sampled log-likelihood against the exact log p(x) of a linear-Gaussian model."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from helpers import exact_guide, linear_gaussian, shifted_guide
from pyro import poutine
from pyro.infer import Trace_ELBO

from pyrolvm.errors import ConfigError
from pyrolvm.inference import IWAE, importance_sample, log_likelihood, mean_and_stderr


def test_exact_posterior_guide_gives_exact_elbo_and_log_likelihood():
    model, x = linear_gaussian()
    exact = model.log_marginal(x).detach().double()
    result = importance_sample(model, exact_guide(model), x, num_samples=7, batch_size=6)
    # With q = p(z | x) every weight p(x, z) / q(z | x) equals p(x): no Monte Carlo error,
    # only float32 rounding of the log-densities (|log p| ~ 10 nats, eps 1.2e-7).
    assert result.log_likelihood.shape == (20,)
    torch.testing.assert_close(result.elbo, exact, atol=1e-4, rtol=0)
    torch.testing.assert_close(result.log_likelihood, exact, atol=1e-4, rtol=0)
    torch.testing.assert_close(
        result.ess, torch.full((20,), 7.0, dtype=torch.float64), atol=1e-3, rtol=0
    )
    loss = IWAE(num_particles=3).loss(model, exact_guide(model), x)
    assert loss == pytest.approx(-exact.sum().item(), abs=1e-3)


def test_importance_sampling_agrees_with_exact_log_likelihood():
    model, x = linear_gaussian()
    exact = model.log_marginal(x).detach().double()
    k = 2000
    result = importance_sample(model, shifted_guide(model), x, num_samples=k, chunk_size=300)
    # Delta method: the standard error of log((1/K) sum w) is sqrt(Var(w) / K) / E[w], and
    # Var(w) / E[w]^2 is estimated by K / ESS - 1. Its bias, -Var(w) / (2 K E[w]^2), is far
    # smaller. Allow 4 standard errors per datapoint.
    stderr = ((k / result.ess - 1) / k).sqrt()
    assert (stderr > 0).all()
    assert ((result.log_likelihood - exact).abs() < 4 * stderr + 1e-4).all()
    # The shifted guide is genuinely poor: its ELBO is well below log p(x).
    assert (result.elbo < exact - 0.1).all()
    # Chunking over particles does not change the estimate's distribution; a different chunk
    # size with the same seed gives a different but equally accurate answer.
    pyro.set_rng_seed(3)
    again = log_likelihood(model, shifted_guide(model), x, num_samples=k, chunk_size=k)
    assert ((again - exact).abs() < 4 * stderr + 1e-4).all()


def test_elbo_below_importance_sampling_below_exact():
    model, x = linear_gaussian()
    exact = model.log_marginal(x).detach().double()
    result = importance_sample(model, shifted_guide(model, 1.0, 2.0), x, num_samples=500)
    k = result.num_samples
    stderr = ((k / result.ess - 1) / k).sqrt()
    assert (result.elbo < result.log_likelihood).all()
    assert (result.log_likelihood < exact + 4 * stderr).all()


def test_iwae_bound_non_decreasing_in_k():
    model, x = linear_gaussian()
    guide = shifted_guide(model, 1.0, 2.0)
    reps = 200
    data = x.repeat(reps, 1)  # every row an independent draw of the K-sample bound
    exact = model.log_marginal(x).sum().item()
    means, errs = [], []
    for k in (1, 5, 50):
        pyro.set_rng_seed(k)
        draws = importance_sample(model, guide, data, num_samples=k, batch_size=1000)
        per_set = draws.log_likelihood.reshape(reps, -1).sum(-1)  # L_K summed over the 20 points
        mean, err = mean_and_stderr(per_set)
        means.append(mean)
        errs.append(err)
    # Burda et al. (2016), Theorem 1: L_1 <= L_5 <= L_50 <= log p(x). Each gap must exceed
    # 4 standard errors of the difference of two independent means.
    for i in range(2):
        assert means[i + 1] - means[i] > 4 * math.hypot(errs[i], errs[i + 1])
    assert means[-1] < exact + 4 * errs[-1]


def test_iwae_with_one_particle_is_trace_elbo():
    model, x = linear_gaussian()
    guide = shifted_guide(model)
    pyro.set_rng_seed(5)  # max_plate_nesting given: no guessing run consumes random numbers
    iwae = IWAE(num_particles=1, max_plate_nesting=1).loss(model, guide, x)
    pyro.set_rng_seed(5)
    trace = Trace_ELBO().loss(model, guide, x)
    assert iwae == pytest.approx(trace, rel=1e-5)


def test_iwae_loss_scales_with_poutine_scale():
    model, x = linear_gaussian()
    guide = exact_guide(model)
    loss = IWAE(num_particles=4).loss(model, guide, x)
    scaled = IWAE(num_particles=4).loss(
        poutine.scale(model, scale=3.0), poutine.scale(guide, scale=3.0), x
    )
    assert scaled == pytest.approx(3 * loss, rel=1e-5)


def test_iwae_gradient_matches_autograd_of_exact_bound():
    # With the exact posterior as guide the bound is log p(x) for every K, so its gradient with
    # respect to the model's parameters is the gradient of the closed-form log-marginal.
    model, x = linear_gaussian()
    guide = exact_guide(model)
    loss = IWAE(num_particles=5).differentiable_loss(model, guide, x)
    (grad_w,) = torch.autograd.grad(loss, [model.weight])
    (ref_w,) = torch.autograd.grad(-model.log_marginal(x).sum(), [model.weight])
    torch.testing.assert_close(grad_w, ref_w, atol=1e-3, rtol=1e-3)


def test_prior_proposal_is_naive_monte_carlo():
    model, x = linear_gaussian()
    exact = model.log_marginal(x).detach().double()
    result = importance_sample(model, None, x, num_samples=20000, proposal="prior")
    k = result.num_samples
    stderr = ((k / result.ess - 1) / k).sqrt()
    assert ((result.log_likelihood - exact).abs() < 4 * stderr + 1e-4).all()
    # Under the prior the log-weights are log p(x | z): the ELBO estimate is E_p(z)[log p(x|z)].
    assert (result.ess < 0.5 * k).all()


def test_bad_arguments():
    model, x = linear_gaussian()
    with pytest.raises(ConfigError, match="num_samples"):
        importance_sample(model, exact_guide(model), x, num_samples=0)
    with pytest.raises(ConfigError, match="proposal"):
        importance_sample(model, exact_guide(model), x, proposal="posterior")
    with pytest.raises(ConfigError, match="num_particles"):
        IWAE(num_particles=0)


def test_particles_are_chunked_so_memory_stays_within_the_budget(monkeypatch):
    from pyrolvm.inference import MultiSampleELBO, evaluation

    model, x = linear_gaussian()
    calls = []
    real = MultiSampleELBO.importance_weights

    def spy(self, model, guide, *args, **kwargs):
        calls.append((args[0].shape[0], self.num_particles))
        return real(self, model, guide, *args, **kwargs)

    measured = []
    real_measure = evaluation.bytes_per_particle
    monkeypatch.setattr(
        evaluation,
        "bytes_per_particle",
        lambda call: measured.append(real_measure(call)) or measured[-1],
    )
    monkeypatch.setattr(evaluation, "CPU_MEMORY_BUDGET", 2**20)  # 1 MiB
    monkeypatch.setattr(MultiSampleELBO, "importance_weights", spy)
    importance_sample(model, exact_guide(model), x, num_samples=5000, batch_size=8)
    # one probe of 2 particles on the first batch, then chunks of as many particles as fit the
    # budget by the memory measured, and every datapoint gets all K = 5000 samples
    assert calls[0] == (8, 2)
    chunk = evaluation.chunk_size_for(5000, measured[0], 2**20)
    assert 1 < chunk < 5000 and chunk * measured[0] <= 2**20 < (chunk + 1) * measured[0]
    assert max(k for _, k in calls[1:]) == chunk
    assert sum(k for b, k in calls[1:] if b == 8) == 2 * 5000
    assert sum(k for b, k in calls[1:] if b == 4) == 5000


def test_chunk_size_arithmetic():
    from pyrolvm.inference.evaluation import chunk_size_for

    assert chunk_size_for(5000, 1000.0, 10**6) == 1000  # 1000 fit
    assert chunk_size_for(5000, 1000.0, 10**6 - 1) == 999
    assert chunk_size_for(5000, 1000.0, 10**6, power_of_two=True) == 512  # (CUDA's chunks)
    assert chunk_size_for(5000, 1000.0, 1024 * 1000, power_of_two=True) == 1024
    assert chunk_size_for(5000, 1000.0, 10**9) == 5000  # all fit: one chunk of K
    assert chunk_size_for(5000, 1000.0, 10, power_of_two=True) == 1  # not even one fits
    assert chunk_size_for(1, 0.0, 0) == 1


def test_a_chunk_takes_no_more_memory_than_its_budget(monkeypatch):
    """The peak of the tensors alive during a chunk (every allocation of torch's operators, seen
    below the function level that bytes_per_particle measures) stays within the budget, for a
    model whose particles share little (a categorical likelihood: 256 logits per pixel) and one
    whose share most (the Bernoulli VAE's encoder runs once per batch)."""
    import weakref

    from torch.utils._python_dispatch import TorchDispatchMode

    from pyrolvm.inference import MultiSampleELBO, evaluation
    from pyrolvm.runs import VAEConfig
    from pyrolvm.runs.vae import build

    class PeakBytes(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.live = self.peak = 0
            self.sizes = {}

        def free(self, key):
            self.live -= self.sizes.pop(key)

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor) and id(t.untyped_storage()) not in self.sizes:
                    storage = t.untyped_storage()
                    self.sizes[id(storage)] = storage.nbytes()
                    weakref.finalize(storage, self.free, id(storage))
                    self.live += storage.nbytes()
                    self.peak = max(self.peak, self.live)
            return out

    peaks, real = [], MultiSampleELBO.importance_weights

    def measured(self, *args, **kwargs):
        with PeakBytes() as probe:
            out = real(self, *args, **kwargs)
            log_w = out.log_w
            del out
        peaks.append((self.num_particles, probe.peak))
        return type("Weights", (), {"log_w": log_w})

    monkeypatch.setattr(MultiSampleELBO, "importance_weights", measured)
    categorical = dict(likelihood="categorical", levels=256, binarize="none")
    for options, budget in ((categorical, 64 * 2**20), (dict(), 2**20)):
        monkeypatch.setattr(evaluation, "CPU_MEMORY_BUDGET", budget)
        cfg = VAEConfig(dataset="digits", latent_dim=2, hidden=(16,), **options).resolved()
        x = torch.rand(20, 64) if options else torch.bernoulli(torch.full((20, 64), 0.3))
        x = (255 * x).round() / 255 if options else x
        model, guide = build(cfg, 64, x.mean(0).clamp(0.01, 0.99), None, image_shape=(8, 8))
        peaks.clear()
        importance_sample(model, guide, x, num_samples=200, batch_size=20)
        chunks = [k for k, _ in peaks[1:]]
        assert 2 < max(chunks) < 200  # (chunks that the budget sized)
        assert max(peak for _, peak in peaks[1:]) <= budget, (options, peaks)


def _recording_guide(model, shift=0.5, inflate=1.5):
    """``shifted_guide`` that also records every draw z as shape (k, B, L). The first two calls
    are the evaluator's check of the pair (:func:`pyrolvm.inference.check_pair`) and its
    structure-guessing run (Pyro's plate-nesting guess), not chunks: they are dropped; a chunk
    of one particle has no particle dimension (Pyro vectorizes K > 1 only)."""
    draws, calls = [], [0]

    def guide(x):
        post = model.posterior(x)
        scale = post.covariance_matrix.diagonal(dim1=-2, dim2=-1).sqrt() * inflate
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(post.loc + shift, scale).to_event(1))
        calls[0] += 1
        if calls[0] > 2:
            draws.append((x, z if z.dim() == 3 else z.unsqueeze(0), post.loc + shift, scale))

    return guide, draws


@pytest.mark.parametrize(
    "num_samples, chunk_size, batch_size",
    [
        (10, 3, 6),  # chunks of 3, 3, 3, 1: the last chunk smaller than the others
        (10, 10, 20),  # one chunk, one batch
        (7, 2, 8),  # last batch of 4 rows, last chunk of 1 particle
    ],
)
def test_every_figure_equals_its_formula_on_the_same_draws(num_samples, chunk_size, batch_size):
    # The guide records the z's it drew; the log-weights log p(x, z) - log q(z | x) are then
    # recomputed here with torch.distributions, and the three figures from their definitions
    # over all K of them: log (1/K) sum_k w_k, (1/K) sum_k log w_k, (sum w)^2 / sum w^2.
    # Same draws, so the comparison is exact up to float32 rounding of the log-densities.
    model, x = linear_gaussian()
    guide, draws = _recording_guide(model)
    result = importance_sample(
        model, guide, x, num_samples=num_samples, chunk_size=chunk_size, batch_size=batch_size
    )
    rows = {}
    with torch.no_grad():
        for xb, z, loc, scale in draws:
            log_p = dist.Normal(0.0, 1.0).log_prob(z).sum(-1) + dist.Normal(
                z @ model.weight.T + model.bias, model.noise_scale
            ).log_prob(xb).sum(-1)
            log_q = dist.Normal(loc, scale).log_prob(z).sum(-1)
            key = tuple(xb[:, 0].tolist())
            rows.setdefault(key, []).append((log_p - log_q).double())  # (k, B)
    assert sum(len(v) for v in rows.values()) == len(draws)
    log_w = torch.cat([torch.cat(chunks, 0) for chunks in rows.values()], 1)  # (K, N)
    assert log_w.shape == (num_samples, 20)
    k = num_samples
    torch.testing.assert_close(
        result.log_likelihood, log_w.logsumexp(0) - math.log(k), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(result.elbo, log_w.mean(0), atol=1e-5, rtol=0)
    w = (log_w - log_w.max(0).values).exp()
    torch.testing.assert_close(result.ess, w.sum(0) ** 2 / (w**2).sum(0), atol=1e-5, rtol=1e-5)
    assert result.num_samples == k


def test_chunked_elbo_matches_the_closed_form_elbo():
    # The ELBO of a diagonal Gaussian q under the linear-Gaussian model in closed form:
    # E_q[log N(x; W z + b, s^2 I)] + E_q[log N(z; 0, I)] + H(q). The estimate with
    # K = 2000 in chunks of 300 (the last of 200) is within 4 standard errors
    # sd(log w) / sqrt(K) per datapoint; a mean divided by the wrong K would be 10x off.
    model, x = linear_gaussian()
    guide, draws = _recording_guide(model)
    k = 2000
    result = importance_sample(model, guide, x, num_samples=k, chunk_size=300)
    with torch.no_grad():
        m = draws[0][2].double()
        v = draws[0][3].double() ** 2
        w, b = model.weight.double(), model.bias.double()
        s2 = model.noise_scale.double() ** 2
        d, latent = w.shape
        resid = x.double() - b - m @ w.T
        exp_lik = -0.5 * d * torch.log(2 * math.pi * s2) - (
            resid.pow(2).sum(-1) + (v @ (w**2).T).sum(-1)
        ) / (2 * s2)
        exp_prior = -0.5 * latent * math.log(2 * math.pi) - 0.5 * (m**2 + v).sum(-1)
        entropy = 0.5 * (math.log(2 * math.pi * math.e) + v.log()).sum(-1)
        exact = exp_lik + exp_prior + entropy
        # sd of log w per datapoint, from the draws themselves (a fresh, independent
        # recomputation would do as well: the tolerance only needs its order of magnitude)
        z = torch.cat([dr[1] for dr in draws], 0).double()
        log_w = (
            dist.Normal(0.0, 1.0).log_prob(z).sum(-1)
            + dist.Normal(z @ w.T + b, s2.sqrt()).log_prob(x.double()).sum(-1)
            - dist.Normal(m, v.sqrt()).log_prob(z).sum(-1)
        )
    stderr = log_w.std(0) / math.sqrt(k)
    assert (stderr > 0).all()
    assert ((result.elbo - exact).abs() < 4 * stderr).all()
    # The guide is poor, so the ELBO sits clearly below log p(x): the bound is not trivial.
    assert (exact < model.log_marginal(x).detach().double() - 0.1).all()


def test_mean_and_stderr_is_the_mean_and_the_standard_error_of_the_mean():
    values = torch.tensor([1.0, 2.0, 4.0, 7.0])
    mean, stderr = mean_and_stderr(values)
    # mean 3.5; sample variance ((2.5^2 + 1.5^2 + 0.5^2 + 3.5^2) / 3) = 7, stderr sqrt(7 / 4)
    assert mean == pytest.approx(3.5, abs=1e-12)
    assert stderr == pytest.approx(math.sqrt(7 / 4), abs=1e-12)
    assert mean_and_stderr(torch.tensor([2.5])) == (2.5, 0.0)
    assert mean_and_stderr([1.0, 3.0]) == (2.0, pytest.approx(1.0, abs=1e-12))  # sd sqrt(2)
