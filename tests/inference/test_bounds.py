"""Honest names: :func:`pyrolvm.inference.bound_name` names the bound each objective reports,
``train`` records it beside ``train_elbo`` for every epoch, and VIMCO on a reparameterized
guide is IWAE draw for draw (as its docstring and the README say)."""

import pyro
import pyro.optim
import pytest
import torch
from pyro.infer import RenyiELBO, Trace_ELBO
from user_pairs import TutorialVAE, binary_data

from pyrolvm.inference import IWAE, VIMCO, bound_name, is_elbo, make_elbo, train


@pytest.mark.parametrize(
    "name, k, options, expected",
    [
        ("trace", 5, {}, "ELBO"),
        ("tracegraph", 1, {}, "ELBO"),
        ("stl", 5, {}, "ELBO"),
        ("iwae", 1, {}, "ELBO"),
        ("iwae", 20, {}, "IWAE-20 bound"),
        ("dreg", 5, {}, "IWAE-5 bound"),
        ("vimco", 5, {}, "IWAE-5 bound"),
        ("renyi", 5, {"alpha": 0.5}, "Rényi-0.5 bound (K=5)"),
        ("renyi", 5, {"alpha": 1.0}, "ELBO"),
        ("renyi", 5, {}, "IWAE-5 bound"),  # alpha = 0
        ("miwae", 5, {"num_groups": 3}, "MIWAE-3x5 bound"),
        ("miwae-dreg", 5, {"num_groups": 1}, "IWAE-5 bound"),
        ("piwae", 5, {"num_groups": 2}, "IWAE-10 bound"),  # reports the bound of all M K
        ("ciwae", 5, {"beta": 0.3}, "CIWAE-5 bound (β=0.3)"),
        ("beta", 1, {"beta": 4.0}, "β-ELBO (β=4)"),
        ("beta", 1, {}, "ELBO"),
        ("freebits", 1, {"free_bits": 0.5}, "free-bits objective (λ=0.5 per dimension)"),
        ("freebits", 1, {}, "ELBO"),
        ("mmd", 1, {"mmd_weight": 10.0}, "MMD objective (weight 10, β=1)"),
    ],
)
def test_each_objective_names_its_bound(name, k, options, expected):
    assert bound_name(make_elbo(name, k, **options)) == expected
    assert is_elbo(expected) == (expected == "ELBO")


def test_pyro_objectives_and_unknown_ones():
    assert bound_name(Trace_ELBO()) == "ELBO"
    assert bound_name(RenyiELBO(alpha=0.5, num_particles=3)) == "Rényi-0.5 bound (K=3)"

    class MyBound(pyro.infer.ELBO):
        def _get_trace(self, model, guide, args, kwargs):
            raise NotImplementedError

    assert bound_name(MyBound()) == "MyBound bound"


def test_train_records_the_bound_of_every_epoch():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    vae, x = TutorialVAE(), binary_data(40)
    history = train(vae.model, vae.guide, x, IWAE(4), epochs=2, batch_size=40, progress=False)
    assert history["bound_name"] == ["IWAE-4 bound", "IWAE-4 bound"]
    # an annealed beta-ELBO names each epoch's beta: the curve is not one bound throughout
    pyro.clear_param_store()
    annealed = make_elbo("beta", 1, beta=1.0, anneal="linear", warmup_epochs=2)
    history = train(vae.model, vae.guide, x, annealed, epochs=3, batch_size=40, progress=False)
    assert history["bound_name"] == ["β-ELBO (β=0)", "β-ELBO (β=0.5)", "ELBO"]


def test_vimco_on_a_reparameterized_guide_is_iwae_draw_for_draw():
    pyro.clear_param_store()
    vae, x = TutorialVAE(), binary_data(20)
    grads = []
    for objective in (VIMCO(4), IWAE(4)):
        pyro.set_rng_seed(3)
        with pyro.poutine.trace(param_only=True) as capture:
            loss = objective.loss_and_grads(vae.model, vae.guide, x)
        params = [s["value"].unconstrained() for s in capture.trace.nodes.values()]
        grads.append((loss, [p.grad.clone() for p in params]))
        for p in params:
            p.grad = None
    (loss_v, g_v), (loss_i, g_i) = grads
    assert loss_v == pytest.approx(loss_i, rel=1e-6)
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-7) for a, b in zip(g_v, g_i, strict=True))
