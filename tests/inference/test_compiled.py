"""The compiled SVI step (pyrolvm.inference.compiled) for every objective of the registry, on
pairs written the way users write them: the replayed graph is bitwise equal to Pyro's eager
step; inductor (with its ``fallback_random`` setting, so that it draws from eager's streams)
equals it to float tolerance; per-step state (annealed beta, decaying-average baselines) is an
input of the graph; what cannot be traced falls back to the eager step with one line saying
why; the evaluator's graphs equal its eager chunks; compiled runs repeat and resume bitwise.

The suite runs eagerly (conftest sets ``PYROLVM_COMPILE=off``): these tests ask for their mode.
"""

import copy
import logging
import random

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from pyro.distributions import constraints
from pyro.infer import TraceEnum_ELBO
from torch import nn

from pyrolvm.errors import ConfigError
from pyrolvm.guides import AmortizedNormal
from pyrolvm.inference import ELBOS, importance_sample, make_elbo, make_optim, param_state, train
from pyrolvm.inference.compiled import (
    CompiledStep,
    compile_mode,
    has_cpp_compiler,
    resolve_mode,
)
from pyrolvm.models import VAE

needs_compiler = pytest.mark.skipif(
    not has_cpp_compiler(), reason="inductor on the CPU needs a C++ compiler (none on the PATH)"
)
needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="no CUDA device (torch.cuda.is_available() is False): the CUDA tests run on a GPU "
    "machine",
)

#: Every objective of the registry: (K, options, reparameterized guide). The score-function
#: estimators get a non-reparameterized guide; beta is annealed (beta changes every epoch).
OBJECTIVES = {
    "trace": (2, {}, True),
    "meanfield": (1, {}, True),
    "tracegraph": (2, {}, False),
    "iwae": (3, {}, True),
    "dreg": (3, {}, True),
    "stl": (2, {}, True),
    "vimco": (3, {}, False),
    "beta": (2, {"beta": 0.5, "anneal": "linear", "warmup_epochs": 2}, True),
    "freebits": (2, {"free_bits": 0.5}, True),
    "mmd": (2, {"mmd_weight": 1.0, "beta": 0.5}, True),
    "renyi": (3, {"alpha": 0.5}, True),
    "miwae": (2, {"num_groups": 2}, True),
    "piwae": (2, {"num_groups": 2}, True),
    "miwae-dreg": (2, {"num_groups": 2}, True),
    "ciwae": (3, {"beta": 0.3}, True),
}
D, L, H = 8, 2, 6


class UserVAE(nn.Module):
    """A pair as Pyro's examples/vae/vae.py writes one: bound methods ``model`` and ``guide``,
    sites "latent" and "obs", ``pyro.module``, one ``pyro.plate``; and a positive
    ``pyro.param`` of the guide (a constrained parameter of the param store). ``calls`` counts
    the model's calls (a compiled step calls it only when a shape is new)."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(D, H), nn.Softplus(), nn.Linear(H, 2 * L))
        self.decoder = nn.Sequential(nn.Linear(L, H), nn.Softplus(), nn.Linear(H, D))
        self.calls = 0

    def model(self, x):
        self.calls += 1
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            prior = dist.Normal(x.new_zeros(x.shape[0], L), x.new_ones(x.shape[0], L))
            z = pyro.sample("latent", prior.to_event(1))
            pyro.sample("obs", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        widen = pyro.param("widen", x.new_ones(L), constraint=constraints.positive)
        with pyro.plate("data", x.shape[0]):
            loc, raw = self.encoder(x).split(L, -1)
            pyro.sample("latent", dist.Normal(loc, F.softplus(raw) * widen).to_event(1))


def pair(reparameterized=True, baseline="none"):
    """The user's pair, or (score-function estimators) ours with a non-reparameterized guide."""
    if reparameterized:
        user = UserVAE()
        return user.model, user.guide, user
    model = VAE(D, L, (H,))
    guide = AmortizedNormal(D, L, (H,), reparameterized=False, baseline=baseline)
    return model, guide, None


def data(n=20):
    return torch.bernoulli(torch.full((n, D), 0.4), generator=torch.Generator().manual_seed(1))


def fallbacks(caplog):
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "pyrolvm.compile" and "runs eagerly" in r.getMessage()
    ]


def _train(name, mode, epochs=4, n=20, batch_size=8, baseline="none"):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    k, options, reparameterized = OBJECTIVES[name]
    model, guide, user = pair(reparameterized, baseline)
    history = train(
        model,
        guide,
        data(n),
        make_elbo(name, k, **options),
        make_optim(1e-2),
        epochs=epochs,
        batch_size=batch_size,
        progress=False,
        compile=mode,
    )
    return history, param_state(), user


def test_the_table_covers_the_registry():
    assert set(OBJECTIVES) == set(ELBOS)


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_the_replayed_graph_is_bitwise_equal_to_the_eager_step(name, caplog):
    # 20 rows in batches of 8: two shapes (8 and the last 4), each traced once; 4 epochs
    eager, eager_params, eager_user = _train(name, "off")
    graph, graph_params, graph_user = _train(name, "graph")
    assert not fallbacks(caplog)
    assert graph["train_elbo"] == eager["train_elbo"]
    assert graph_params.keys() == eager_params.keys()
    assert all(torch.equal(graph_params[k], eager_params[k]) for k in eager_params)
    if graph_user is not None:  # compiled: the model ran only while shapes were new
        assert eager_user.calls >= 12 and graph_user.calls < 12


@pytest.mark.parametrize("baseline", ["decaying_avg", "neural"])
def test_score_function_baselines_are_graph_state(baseline, caplog):
    # the decaying average lives in the param store, replaced every step (and reshaped when the
    # last, smaller batch comes): an output of the graph, written back, and its next input
    eager, eager_params, _ = _train("tracegraph", "off", baseline=baseline)
    graph, graph_params, _ = _train("tracegraph", "graph", baseline=baseline)
    assert not fallbacks(caplog)
    assert graph["train_elbo"] == eager["train_elbo"]
    assert all(torch.equal(graph_params[k], eager_params[k]) for k in eager_params)
    assert any(k.startswith("__baseline_avg") for k in graph_params) == (baseline == "decaying_avg")


def test_annealed_beta_is_an_input_of_one_graph():
    # beta rises 0, 1/3, 2/3, 1 over the epochs: one graph (the model runs in epoch 1 only)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    user = UserVAE()
    calls = []
    elbo = make_elbo("beta", 1, anneal="linear", warmup_epochs=3)
    history = train(
        user.model,
        user.guide,
        data(16),
        elbo,
        make_optim(1e-2),
        epochs=4,
        batch_size=8,
        progress=False,
        compile="graph",
        callback=lambda epoch, h: calls.append(user.calls),
    )
    assert elbo.beta == 1.0 and calls[0] > 0 and calls == [calls[0]] * 4
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    eager_user = UserVAE()
    elbo = make_elbo("beta", 1, anneal="linear", warmup_epochs=3)
    kw = dict(epochs=4, batch_size=8, progress=False, compile="off")
    eager = train(eager_user.model, eager_user.guide, data(16), elbo, make_optim(1e-2), **kw)
    assert history["train_elbo"] == eager["train_elbo"]


class _Recorder:
    """An optimizer that records the gradients it is given and takes a plain SGD step."""

    def __init__(self):
        self.grads = []

    def __call__(self, params):
        self.grads.append([None if p.grad is None else p.grad.clone() for p in params])
        with torch.no_grad():
            for p in params:
                if p.grad is not None:
                    p -= 0.01 * p.grad


def _steps(name, mode, steps=3):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    k, options, reparameterized = OBJECTIVES[name]
    model, guide, _ = pair(reparameterized)
    step = CompiledStep(model, guide, make_elbo(name, k, **options), mode)
    optim, x = _Recorder(), data(8)
    losses = [float(step(optim, x)) for _ in range(steps)]
    assert step.reason is None
    return losses, optim.grads


def _close(a, b):
    # float32 sums in another order: a few units in the last place of the largest value
    tol = 1e-4 if a.dtype == torch.float32 else 1e-9
    return torch.allclose(a, b, rtol=tol, atol=tol * b.abs().max().item())


@needs_compiler
@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_inductor_equals_the_eager_step_to_float_tolerance(name):
    # fallback_random: inductor draws from eager's generator, so the two steps see the same
    # noise; step 1 creates the parameters (eager), step 2 compiles, step 3 replays
    eager_losses, eager_grads = _steps(name, "off")
    import torch._inductor.config as inductor_config

    with inductor_config.patch(fallback_random=True):
        losses, grads = _steps(name, "inductor")
    assert losses == pytest.approx(eager_losses, rel=1e-5)
    for step_grads, eager_step_grads in zip(grads, eager_grads, strict=True):
        for g, e in zip(step_grads, eager_step_grads, strict=True):
            assert (g is None) == (e is None)
            assert g is None or _close(g, e)


def _user_fallback(kind):
    """A pair whose step cannot be traced, and the words its fallback line must hold."""
    user = UserVAE()
    model = user.model
    if kind == "branch":

        def model(x):
            if x.sum() > 0:  # a Python branch on the data's value
                user.model(x)

        return model, user.guide, "data-dependent control flow) at tests/inference/test_compiled"
    if kind == "python random":

        def guide(x):
            pyro.module("encoder", user.encoder)
            with pyro.plate("data", x.shape[0]):
                loc, raw = user.encoder(x).split(L, -1)
                noise = random.random()  # a draw outside torch: frozen into a graph
                pyro.sample("latent", dist.Normal(loc + noise, F.softplus(raw)).to_event(1))

        return model, guide, "does not reproduce the eager step"
    if kind == "changing setting":
        user.decoder.fraction = 0.0

        def ticking_model(x):
            user.decoder.fraction = user.calls / 100  # a float setting changed every step
            user.model(x)

        return ticking_model, user.guide, "at every step"
    # a module that changes a buffer in place every step
    user.decoder.register_buffer("seen", torch.zeros(()))

    def counting_model(x):
        user.decoder.seen.add_(1)
        user.model(x)

    return counting_model, user.guide, "in place"


@pytest.mark.parametrize("kind", ["branch", "python random", "in-place buffer", "changing setting"])
def test_a_step_that_cannot_be_traced_runs_eagerly_with_one_line_saying_why(kind, caplog):
    runs = []
    for mode in ("off", "graph"):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        random.seed(0)
        model, guide, words = _user_fallback(kind)
        with caplog.at_level(logging.WARNING, logger="pyrolvm.compile"):
            kw = dict(epochs=2, batch_size=8, progress=False, compile=mode)
            runs.append((train(model, guide, data(16), make_elbo("iwae", 2), **kw), param_state()))
    lines = fallbacks(caplog)
    assert len(lines) == 1 and words in lines[0], lines
    (eager, eager_params), (graph, graph_params) = runs
    assert graph["train_elbo"] == eager["train_elbo"]
    assert all(torch.equal(graph_params[k], eager_params[k]) for k in eager_params)


class TemperedVAE(UserVAE):
    """The user's pair with a Python setting of a module that changes the program: the
    decoder's logits divided by ``decoder.temperature`` (a float attribute)."""

    def __init__(self):
        super().__init__()
        self.decoder.temperature = 1.0

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            prior = dist.Normal(x.new_zeros(x.shape[0], L), x.new_ones(x.shape[0], L))
            z = pyro.sample("latent", prior.to_event(1))
            logits = self.decoder(z) / self.decoder.temperature
            pyro.sample("obs", dist.Bernoulli(logits=logits).to_event(1), obs=x)


def test_python_settings_of_the_modules_are_part_of_the_key():
    # a temperature annealed by a callback every epoch (training), then set by hand between
    # two evaluations: each value its own graph, equal to the eager step
    runs = []
    for mode in ("off", "graph"):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        user = TemperedVAE()

        def anneal(epoch, history, user=user):
            user.decoder.temperature = 1.0 + epoch

        kw = dict(epochs=3, batch_size=8, progress=False, compile=mode, callback=anneal)
        history = train(user.model, user.guide, data(16), make_elbo("iwae", 2), **kw)
        evaluations = []
        for temperature in (0.5, 2.0, 0.5):
            user.decoder.temperature = temperature
            with compile_mode(mode):
                pyro.set_rng_seed(1)
                evaluations.append(
                    importance_sample(user.model, user.guide, data(12), num_samples=4, batch_size=4)
                )
        runs.append((history, param_state(), evaluations))
    (eager, eager_params, eager_evals), (graph, graph_params, graph_evals) = runs
    assert graph["train_elbo"] == eager["train_elbo"]
    assert all(torch.equal(graph_params[k], eager_params[k]) for k in eager_params)
    for a, b in zip(graph_evals, eager_evals, strict=True):
        assert torch.equal(a.log_likelihood, b.log_likelihood)
    assert not torch.equal(graph_evals[0].log_likelihood, graph_evals[1].log_likelihood)


def test_enumeration_falls_back_with_its_reason(caplog):
    def model(x):
        probs = pyro.param("probs", x.new_full((2,), 0.5), constraint=constraints.simplex)
        locs = pyro.param("locs", x.new_tensor([-1.0, 1.0]))
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Categorical(probs), infer={"enumerate": "parallel"})
            pyro.sample("obs", dist.Normal(locs[c], 1.0), obs=x)

    x = torch.cat([torch.randn(8) - 1, torch.randn(8) + 1])
    with caplog.at_level(logging.WARNING, logger="pyrolvm.compile"):
        train(model, lambda x: None, x, TraceEnum_ELBO(max_plate_nesting=1), compile="graph",
              epochs=2, batch_size=8, progress=False)  # fmt: skip
    lines = fallbacks(caplog)
    assert len(lines) == 1 and "enumeration (TraceEnum_ELBO)" in lines[0]


def _evaluate(mode, n, batch_size, k, chunk):
    with compile_mode(mode):
        pyro.set_rng_seed(3)
        return importance_sample(
            user.model, user.guide, data(n), num_samples=k, batch_size=batch_size, chunk_size=chunk
        )


user = UserVAE()  # the evaluator's graphs are kept per model and guide: one pair for its tests


def test_the_evaluators_graph_is_bitwise_equal_to_its_eager_chunks(caplog):
    # 10 rows in batches of 4 (4, 4, 2) and K = 7 in chunks of 3 (3, 3, 1): several shapes
    eager = _evaluate("off", 10, 4, 7, 3)
    graph = _evaluate("graph", 10, 4, 7, 3)
    assert not [r for r in caplog.records if "evaluator runs eagerly" in r.getMessage()]
    for field in ("log_likelihood", "elbo", "ess"):
        assert torch.equal(getattr(graph, field), getattr(eager, field))


@needs_compiler
def test_the_evaluators_inductor_graph_equals_its_eager_chunks():
    import torch._inductor.config as inductor_config

    eager = _evaluate("off", 8, 4, 6, 3)  # one shape: one compile
    with inductor_config.patch(fallback_random=True):
        compiled = _evaluate("inductor", 8, 4, 6, 3)
    assert torch.allclose(compiled.log_likelihood, eager.log_likelihood, rtol=1e-5, atol=1e-4)


_REPEAT = {}


def _run_with_checkpoints(mode, resume_from=None):
    """Three epochs of IWAE on one pair of objects (so that inductor compiles once for all
    runs of a test), from the seed or from a checkpoint."""
    if mode not in _REPEAT:
        model, guide, user = pair()
        _REPEAT[mode] = (model, guide, make_elbo("iwae", 2), user, copy.deepcopy(user.state_dict()))
    model, guide, elbo, user, initial = _REPEAT[mode]
    user.load_state_dict(initial)  # the same objects, from the same initial weights
    elbo.max_plate_nesting = float("inf")  # and the objective guessing it anew, as a fresh one
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    saved = []
    history = train(
        model,
        guide,
        data(16),
        elbo,
        make_optim(1e-2),
        epochs=3,
        batch_size=8,
        progress=False,
        compile=mode,
        checkpoint=lambda s: saved.append(copy.deepcopy(s)),
        resume_from=resume_from,
    )
    return history, param_state(), saved


@pytest.mark.parametrize("mode", ["graph", pytest.param("inductor", marks=needs_compiler)])
def test_compiled_runs_repeat_from_the_seed_and_resume_bitwise(mode):
    first, first_params, saved = _run_with_checkpoints(mode)
    again, again_params, _ = _run_with_checkpoints(mode)
    resumed, resumed_params, _ = _run_with_checkpoints(mode, resume_from=saved[0])
    for history, params in ((again, again_params), (resumed, resumed_params)):
        assert history["train_elbo"] == first["train_elbo"]
        assert all(torch.equal(params[k], first_params[k]) for k in first_params)


def test_the_mode_is_chosen_by_argument_run_and_environment(monkeypatch):
    monkeypatch.delenv("PYROLVM_COMPILE", raising=False)
    assert resolve_mode("auto") == ("inductor" if has_cpp_compiler() else "graph")
    monkeypatch.setenv("PYROLVM_COMPILE", "off")
    assert resolve_mode("auto") == "off" and resolve_mode("graph") == "graph"
    with compile_mode("graph"):  # a run's --compile
        assert resolve_mode("auto") == "graph" and resolve_mode("off") == "off"
    with compile_mode("auto"):
        assert resolve_mode("auto") == "off"
    with pytest.raises(ConfigError, match="unknown compile mode 'fast': choose one of auto"):
        train(*pair()[:2], data(8), compile="fast", progress=False)
    monkeypatch.setenv("PYROLVM_COMPILE", "fast")
    with pytest.raises(ConfigError, match="unknown \\$PYROLVM_COMPILE mode 'fast'"):
        resolve_mode("auto")


@needs_cuda
@pytest.mark.parametrize("name", ["trace", "iwae", "dreg", "tracegraph"])
def test_the_compiled_step_on_cuda_equals_eager(name):
    # CUDA graphs (inductor's reduce-overhead) with the data on the device
    import torch._inductor.config as inductor_config

    def steps(mode):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        k, options, reparameterized = OBJECTIVES[name]
        model, guide, user = pair(reparameterized)
        (user or model).cuda()
        if user is None:
            guide.cuda()
        step = CompiledStep(model, guide, make_elbo(name, k, **options), mode)
        optim, x = make_optim(1e-2), data(8).cuda()
        losses = [float(step(optim, x)) for _ in range(4)]
        assert step.reason is None
        return losses, param_state()

    eager_losses, eager_params = steps("off")
    with inductor_config.patch(fallback_random=True):
        losses, params = steps("inductor")
    assert losses == pytest.approx(eager_losses, rel=1e-4)
    assert all(_close(params[k], eager_params[k]) for k in eager_params)


@needs_cuda
def test_the_evaluator_compiles_on_cuda():
    model = UserVAE().cuda()
    x = data(8).cuda()
    results = {}
    for mode in ("off", "graph", "inductor"):
        with compile_mode(mode):
            pyro.set_rng_seed(3)
            results[mode] = importance_sample(model.model, model.guide, x, num_samples=6).elbo
    assert torch.equal(results["graph"], results["off"])
    assert torch.isfinite(results["inductor"]).all()
