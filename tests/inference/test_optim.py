"""One Adam over every parameter (pyrolvm.inference.optim.Adam, behind make_optim): the update
of Pyro's per-tensor optimizers (Adam, ClippedAdam's options, LambdaLR's schedule), only the
parameters asked for stepped, checkpoints that round-trip bitwise and Pyro's old optimizer
states read back."""

import copy
import io

import pyro
import pyro.optim
import pytest
import torch
from pyro.infer import SVI

from pyrolvm.errors import ConfigError
from pyrolvm.guides import AmortizedNormal
from pyrolvm.inference import make_elbo, make_optim, param_state, svi_step
from pyrolvm.inference.optim import STATE_FORMAT, Adam
from pyrolvm.models import VAE


def _fit(optim, steps=5, step_fn=None, pair=None):
    """``steps`` SVI steps of a small VAE (``pair``: its model and guide, made anew by default)
    from a fixed seed; returns the parameters."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    model, guide = pair or (VAE(6, 2, (5,)), AmortizedNormal(6, 2, (5,)))
    x = torch.bernoulli(torch.full((10, 6), 0.4), generator=torch.Generator().manual_seed(0))
    elbo = make_elbo("iwae", 2)
    for _ in range(steps):
        (step_fn or svi_step)(model, guide, elbo, optim, x)
    return param_state()


def _svi(model, guide, elbo, optim, x):  # Pyro's own SVI loop, for Pyro's optimizers
    SVI(model, guide, optim, elbo).step(x)


def _close(a, b, rtol=1e-5):
    return all(torch.allclose(a[k], b[k], rtol=rtol, atol=rtol * b[k].abs().max()) for k in b)


def test_the_update_is_pyros_adam_one_optimizer_for_all():
    ours = _fit(make_optim(0.05, (0.8, 0.99), 1e-6))
    pyros = _fit(pyro.optim.Adam({"lr": 0.05, "betas": (0.8, 0.99), "eps": 1e-6}), step_fn=_svi)
    assert ours.keys() == pyros.keys() and _close(ours, pyros)
    optim = make_optim()
    _fit(optim, steps=1)
    assert optim.optimizer is not None and len(optim.optimizer.param_groups) == 1
    assert len(optim.optimizer.param_groups[0]["params"]) == len(ours)


def test_clipped_adams_options_and_lambda_lrs_schedule_are_pyros():
    # clip_norm small enough to clip, lrd < 1: as ClippedAdam (which puts eps after the bias
    # correction of the second moment, a difference of order eps: tolerance 1e-4)
    ours = _fit(make_optim(0.05, clip_norm=0.5, lrd=0.9))
    clipped = pyro.optim.ClippedAdam({"lr": 0.05, "clip_norm": 0.5, "lrd": 0.9})
    assert _close(ours, _fit(clipped, step_fn=_svi), rtol=1e-4)
    # LambdaLR: the rate of epoch e is lr * factor(e); step() advances the epoch
    factor = [1.0, 0.5, 0.25].__getitem__
    optim = make_optim(0.05, lr_lambda=factor)
    _fit(optim, steps=1)
    assert optim.optimizer is not None
    rates = [optim.optimizer.param_groups[0]["lr"]]
    for _ in range(2):
        optim.step()
        rates.append(optim.optimizer.param_groups[0]["lr"])
    assert rates == [0.05, 0.025, 0.0125]


def test_only_the_parameters_asked_for_are_stepped_and_the_others_keep_their_gradients():
    a, b = torch.zeros(3, requires_grad=True), torch.zeros(2, requires_grad=True)
    optim = Adam(0.1)
    a.grad, b.grad = torch.ones(3), torch.ones(2)
    optim([a, b])
    assert torch.allclose(a, torch.full((3,), -0.1)) and torch.allclose(b, torch.full((2,), -0.1))
    a.grad, b.grad = torch.ones(3), torch.full((2,), 7.0)
    optim([a])
    assert torch.allclose(b, torch.full((2,), -0.1)) and torch.equal(b.grad, torch.full((2,), 7.0))
    assert optim.optimizer is not None
    assert optim.optimizer.state[a]["step"].item() == 2 and optim.optimizer.state[b]["step"] == 1
    c = torch.zeros(1, requires_grad=True)  # a parameter seen later (another objective's)
    c.grad = torch.ones(1)
    optim([c])
    assert torch.allclose(c, torch.full((1,), -0.1)) and optim.optimizer.state[c]["step"] == 1


def _saved(optim):
    buffer = io.BytesIO()
    torch.save(optim.get_state(), buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_a_saved_state_continues_bitwise():
    optim = make_optim(0.05, lr_lambda=lambda e: 0.5**e, lrd=0.99)
    model, guide = VAE(6, 2, (5,)), AmortizedNormal(6, 2, (5,))
    _fit(optim, steps=3, pair=(model, guide))
    optim.step()  # one epoch of the schedule
    state, params = _saved(optim), param_state()
    assert state["format"] == STATE_FORMAT and state["epoch"] == 1 and state["steps"] == 3
    x = torch.bernoulli(torch.full((10, 6), 0.4), generator=torch.Generator().manual_seed(1))

    def more(optim):
        pyro.set_rng_seed(1)
        elbo = make_elbo("iwae", 2)  # (a fresh one guesses the plate nesting, with draws)
        for _ in range(3):
            svi_step(model, guide, elbo, optim, x)
        return param_state()

    continued = more(optim)
    # a new optimizer (a resumed run) from the saved state, on the same parameter values
    store = pyro.get_param_store()
    for name, value in params.items():
        store._params[name].data.copy_(value)
    resumed_optim = make_optim(0.05, lr_lambda=lambda e: 0.5**e, lrd=0.99)
    resumed_optim.set_state(state)
    resumed = more(resumed_optim)
    assert all(torch.equal(continued[k], resumed[k]) for k in continued)


@pytest.mark.parametrize("kind", ["adam", "lambda_lr"])
def test_a_run_of_pyros_per_tensor_optimizers_continues_from_its_state(kind):
    # a checkpoint written before this optimizer (Pyro's Adam, or LambdaLR around torch's
    # Adam, two epochs stepped): its moments, step counts and epoch carry over, so the next
    # steps are those Pyro's optimizer would take (to float tolerance: another Adam kernel)
    def old_optim():
        if kind == "adam":
            return pyro.optim.Adam({"lr": 0.05})
        lambda_lr = pyro.optim.LambdaLR  # pyright: ignore[reportAttributeAccessIssue]
        options = {"lr": 0.05}
        return lambda_lr({"optimizer": torch.optim.Adam, "optim_args": options, "lr_lambda": half})

    def half(epoch):
        return 0.5**epoch

    old = old_optim()
    model, guide = VAE(6, 2, (5,)), AmortizedNormal(6, 2, (5,))
    _fit(old, steps=3, step_fn=_svi, pair=(model, guide))
    if kind == "lambda_lr":
        old.step()
        old.step()
    state, params = copy.deepcopy(old.get_state()), param_state()  # (as saved to a file)
    x = torch.bernoulli(torch.full((10, 6), 0.4), generator=torch.Generator().manual_seed(1))
    store = pyro.get_param_store()

    def more(optim, step_fn):
        for name, value in params.items():
            store._params[name].data.copy_(value)
            store._params[name].grad = None
        pyro.set_rng_seed(1)
        elbo = make_elbo("iwae", 2)
        for _ in range(2):
            step_fn(model, guide, elbo, optim, x)
        return param_state()

    pyros = more(old, _svi)
    ours = make_optim(0.05, lr_lambda=half if kind == "lambda_lr" else None)
    ours.set_state(state)
    assert ours.epoch == (2 if kind == "lambda_lr" else 0)
    continued = more(ours, svi_step)
    assert _close(continued, pyros)
    assert ours.optimizer is not None
    assert all(s["step"].item() == 5 for s in ours.optimizer.state.values())


def test_bad_settings_and_unreadable_states_get_one_clear_error():
    for kwargs, words in [
        ({"lr": 0.0}, "the learning rate must be positive, got 0.0"),
        ({"clip_norm": -1.0}, "clip_norm must be >= 0"),
        ({"lrd": 1.5}, "lrd must lie in \\(0, 1\\]"),
    ]:
        with pytest.raises(ConfigError, match=words):
            make_optim(**kwargs)
    with pytest.raises(ConfigError, match="neither pyrolvm's Adam nor Pyro's"):
        make_optim().set_state({"encoder.weight": {"momentum_buffer": torch.zeros(2)}})
