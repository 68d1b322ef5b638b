"""Burda et al. (2016)'s learning-rate schedule: 8 stages of 3^i epochs at 1e-3 * 10^(-i/7)."""

import copy

import pyro
import pytest
import torch

from pyrolvm.errors import ConfigError
from pyrolvm.guides import AmortizedNormal
from pyrolvm.inference import (
    BURDA_EPOCHS,
    burda_lr_factor,
    burda_stage_ends,
    make_elbo,
    make_scheduled_optim,
    train,
)
from pyrolvm.models import VAE


def test_full_budget_has_the_papers_stages_and_rates():
    assert BURDA_EPOCHS == 3280
    ends = burda_stage_ends(3280)
    lengths = [b - a for a, b in zip([0] + ends[:-1], ends, strict=True)]
    assert lengths == [3**i for i in range(8)]
    factor = burda_lr_factor(3280)
    for i, end in enumerate(ends):  # the last epoch of stage i (0-based epoch end - 1)
        assert factor(end - 1) == pytest.approx(10 ** (-i / 7), rel=1e-15)
    assert factor(0) == 1.0 and factor(3279) == pytest.approx(0.1)


def test_a_fraction_keeps_the_proportions_and_ends_at_the_last_rate():
    ends = burda_stage_ends(33)  # about 1% of the budget
    assert ends[-1] == 33 and ends == sorted(ends)
    assert burda_lr_factor(33)(32) == pytest.approx(0.1)
    assert burda_lr_factor(1)(0) == pytest.approx(0.1)  # one epoch: the last stage only
    with pytest.raises(ConfigError, match="epochs must be >= 1"):
        burda_stage_ends(0)
    with pytest.raises(ConfigError, match="unknown lr schedule"):
        make_scheduled_optim(1e-3, (0.9, 0.999), 1e-4, "cosine", 10)


def _run(epochs, resume_from=None):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    model, guide = VAE(4, 1, (3,)), AmortizedNormal(4, 1, (3,))
    x = torch.bernoulli(torch.full((12, 4), 0.4), generator=torch.Generator().manual_seed(0))
    optim = make_scheduled_optim(1e-2, (0.9, 0.999), 1e-4, "burda", epochs)
    saved, rates = [], []

    def record(epoch, history):
        rates.append(optim.optimizer.param_groups[0]["lr"])  # the rate the next step uses

    history = train(
        model,
        guide,
        x,
        make_elbo("trace"),
        optim,
        epochs=epochs,
        batch_size=4,
        progress=False,
        callback=record,
        checkpoint=lambda s: saved.append(copy.deepcopy(s)),
        resume_from=resume_from,
    )
    store = pyro.get_param_store()
    return history, {k: store.get_param(k).detach().clone() for k in store}, saved, rates


def test_training_follows_the_schedule_and_resumes_bitwise():
    epochs = 13  # stages end at epochs 0, 0, 0, 0, 0, 2, 4, 13
    history, params, saved, rates = _run(epochs)
    factor = burda_lr_factor(epochs)
    # train steps the scheduler at the end of each epoch, before the callbacks: the callback
    # of epoch e (1-based) sees the rate of the next epoch, factor(e) (0-based)
    assert rates == pytest.approx([1e-2 * factor(e) for e in range(1, epochs + 1)])
    resumed_history, resumed, _, _ = _run(epochs, saved[5])
    assert history["train_elbo"] == resumed_history["train_elbo"]
    assert all(torch.equal(params[k], resumed[k]) for k in params)
