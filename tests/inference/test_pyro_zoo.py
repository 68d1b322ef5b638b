"""Pyro's own model/guide pairs through every multi-sample objective and the evaluator
(issue 27).

The pairs are copied from pyro-ppl/pyro's ``tests/infer/test_valid_models.py`` and
``tests/infer/test_gradient.py`` (tag 1.9.1, unchanged at ff6ae1c), each with its source
test named in a comment; Pyro's own parametrizations are kept as keys of ``ZOO``. Left out:
the pairs for ``TraceEnum_ELBO``/``TraceTMC_ELBO`` (enumeration and its dependency
warnings, ``markov``), ``TraceMeanField_ELBO``'s ordering warning, ``TraceTailAdaptive_ELBO``'s
unvectorized mode, ``EnergyDistance`` (``test_no_log_prob_ok``: a ``Stable`` likelihood has no
density) and ``poutine.collapse`` (needs funsor).

Every pair has one of four expected outcomes:

- ``OK``: every multi-sample objective of the registry, at K = 1, reports ``Trace_ELBO``'s
  loss on the same draws (both seeded alike) from ``loss_and_grads``; at K = 3
  ``loss_and_grads`` reports ``loss``'s value on the same draws;
- ``VIMCO``: a guide with non-reparameterized sites: each reparameterized objective refuses it
  with one ``ConfigError`` naming VIMCO; VIMCO (K = 1 without baselines) reports
  ``Trace_ELBO``'s loss, and at K = 2 minus the IWAE bound of its own log-weights;
- ``refused(regex)``: one ``ConfigError`` naming the remedy, from every objective and the
  evaluator (global latent variables: ``Trace_ELBO``; sites at different scales:
  ``make_elbo('beta')``/``batch_plate=``);
- ``pyro(regex)``: a pair Pyro itself rejects: each objective fails with Pyro's own error
  (its message matching Pyro's test), warnings counted as errors, as ``Trace_ELBO`` does.

Gradients: Pyro's exact per-draw gradients (``test_particle_gradient``) at K = 1 for every
objective, and the expectation of Pyro's subsampled-plate gradient test
(``test_subsample_gradient``: loc [0.5, -2.0], scale [2.0], times the scale) for every
objective in its ELBO setting, with the IWAE_3 gradient as the reference for DReG and VIMCO.
Stochastic checks: n independent estimates, their mean within z standard errors of the
reference, z the Student-t quantile for a familywise false-alarm rate of 0.001 (Bonferroni
over the coordinates); seeds fixed.
"""

import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.distributions.testing import fakes
from pyro.infer import Trace_ELBO, config_enumerate
from pyro.poutine.plate_messenger import block_plate
from torch.distributions import constraints

from pyrolvm.errors import ConfigError
from pyrolvm.inference import ELBOS, VIMCO, MultiSampleELBO, importance_sample, make_elbo

#: the multi-sample objectives of the registry (Pyro's own three left out)
NAMES = sorted(set(ELBOS) - {"trace", "meanfield", "tracegraph"})
#: options that make each objective the ELBO at K = 1 (``None``: the defaults already do)
ELBO_SETTING = {
    "beta": {"beta": 1.0},
    "freebits": {"free_bits": 0.0},
    "mmd": {"mmd_weight": 0.0},
    "renyi": {"alpha": 0.0},
    "ciwae": {"beta": 0.0},
}
GLOBAL = r"outside the batch plate.*Trace_ELBO.*batch_plate="
SCALES = r"the scales differ.*make_elbo\('beta'.*instead of poutine.scale.*batch_plate="


def objective(name, k, **options):
    """Objective ``name`` with K particles in its ELBO setting (``options``: constructor
    arguments such as ``max_plate_nesting``); at K = 1 VIMCO without its leave-one-out
    baselines (which need two particles)."""
    if name == "vimco" and k == 1:
        return VIMCO(1, leave_one_out=False, **options)
    return ELBOS[name](k, **ELBO_SETTING.get(name, {}), **options)


# --- the pairs ---------------------------------------------------------------------------
# Each factory returns (model, guide); they take no arguments unless noted, like Pyro's.


# test_valid_models.py::test_nonempty_model_empty_guide_ok
def nonempty_model_empty_guide_ok():
    def model():
        loc = torch.tensor([0.0, 0.0])
        scale = torch.tensor([1.0, 1.0])
        pyro.sample("x", dist.Normal(loc, scale).to_event(1), obs=loc)

    def guide():
        pass

    return model, guide


# test_valid_models.py::test_nonempty_model_empty_guide_error
def nonempty_model_empty_guide_error():
    def model():
        pyro.sample("x", dist.Normal(0, 1))

    def guide():
        pass

    return model, guide


# test_valid_models.py::test_empty_model_empty_guide_ok
def empty_model_empty_guide_ok():
    def model():
        pass

    def guide():
        pass

    return model, guide


# test_valid_models.py::test_variable_clash_in_model_error
def variable_clash_in_model_error():
    def model():
        p = torch.tensor(0.5)
        pyro.sample("x", dist.Bernoulli(p))
        pyro.sample("x", dist.Bernoulli(p))  # Should error here.

    def guide():
        p = pyro.param("p", torch.tensor(0.5, requires_grad=True))
        pyro.sample("x", dist.Bernoulli(p))

    return model, guide


# test_valid_models.py::test_model_guide_dim_mismatch_error
def model_guide_dim_mismatch_error():
    def model():
        loc = torch.zeros(2)
        scale = torch.ones(2)
        pyro.sample("x", dist.Normal(loc, scale).to_event(1))

    def guide():
        loc = pyro.param("loc", torch.zeros(2, 1, requires_grad=True))
        scale = pyro.param("scale", torch.ones(2, 1, requires_grad=True))
        pyro.sample("x", dist.Normal(loc, scale).to_event(2))

    return model, guide


# test_valid_models.py::test_model_guide_shape_mismatch_error
def model_guide_shape_mismatch_error():
    def model():
        loc = torch.zeros(1, 2)
        scale = torch.ones(1, 2)
        pyro.sample("x", dist.Normal(loc, scale).to_event(2))

    def guide():
        loc = pyro.param("loc", torch.zeros(2, 1, requires_grad=True))
        scale = pyro.param("scale", torch.ones(2, 1, requires_grad=True))
        pyro.sample("x", dist.Normal(loc, scale).to_event(2))

    return model, guide


# test_valid_models.py::test_variable_clash_in_guide_error
def variable_clash_in_guide_error():
    def model():
        p = torch.tensor(0.5)
        pyro.sample("x", dist.Bernoulli(p))

    def guide():
        p = pyro.param("p", torch.tensor(0.5, requires_grad=True))
        pyro.sample("x", dist.Bernoulli(p))
        pyro.sample("x", dist.Bernoulli(p))  # Should error here.

    return model, guide


# test_valid_models.py::test_set_has_rsample_ok
def set_has_rsample_ok(has_rsample):
    def model():
        z = pyro.sample("z", dist.Normal(0, 1))
        loc = (z * 100).clamp(min=0, max=1)  # sparse gradients
        pyro.sample("x", dist.Normal(loc, 1), obs=torch.tensor(0.0))

    def guide():
        loc = pyro.param("loc", torch.tensor(0.0))
        pyro.sample("z", dist.Normal(loc, 1).has_rsample_(has_rsample))

    return model, guide


# test_valid_models.py::test_not_has_rsample_ok
def not_has_rsample_ok():
    def model():
        z = pyro.sample("z", dist.Normal(0, 1))
        p = z.round().clamp(min=0.2, max=0.8)  # discontinuous
        pyro.sample("x", dist.Bernoulli(p), obs=torch.tensor(0.0))

    def guide():
        loc = pyro.param("loc", torch.tensor(0.0))
        pyro.sample("z", dist.Normal(loc, 1).has_rsample_(False))

    return model, guide


# test_valid_models.py::test_iplate_ok
def iplate_ok(subsample_size):
    def model():
        p = torch.tensor(0.5)
        for i in pyro.plate("plate", 4, subsample_size):
            pyro.sample(f"x_{i}", dist.Bernoulli(p))

    def guide():
        p = pyro.param("p", torch.tensor(0.5, requires_grad=True))
        for i in pyro.plate("plate", 4, subsample_size):
            pyro.sample(f"x_{i}", dist.Bernoulli(p))

    return model, guide


# test_valid_models.py::test_iplate_variable_clash_error
def iplate_variable_clash_error():
    def model():
        p = torch.tensor(0.5)
        for _i in pyro.plate("plate", 2):
            # Each loop iteration should give the sample site a different name.
            pyro.sample("x", dist.Bernoulli(p))

    def guide():
        p = pyro.param("p", torch.tensor(0.5, requires_grad=True))
        for _i in pyro.plate("plate", 2):
            # Each loop iteration should give the sample site a different name.
            pyro.sample("x", dist.Bernoulli(p))

    return model, guide


# test_valid_models.py::test_plate_ok
def plate_ok(subsample_size):
    def model():
        p = torch.tensor(0.5)
        with pyro.plate("plate", 10, subsample_size) as ind:
            pyro.sample("x", dist.Bernoulli(p).expand_by([len(ind)]))

    def guide():
        p = pyro.param("p", torch.tensor(0.5, requires_grad=True))
        with pyro.plate("plate", 10, subsample_size) as ind:
            pyro.sample("x", dist.Bernoulli(p).expand_by([len(ind)]))

    return model, guide


# test_valid_models.py::test_plate_subsample_param_ok
def plate_subsample_param_ok(subsample_size):
    def model():
        p = torch.tensor(0.5)
        with pyro.plate("plate", 10, subsample_size):
            pyro.sample("x", dist.Bernoulli(p))

    def guide():
        with pyro.plate("plate", 10, subsample_size) as ind:
            p0 = pyro.param("p0", torch.tensor(0.0), event_dim=0)
            assert p0.shape == ()
            p = pyro.param("p", 0.5 * torch.ones(10), event_dim=0)
            assert len(p) == len(ind)
            pyro.sample("x", dist.Bernoulli(p))

    return model, guide


# test_valid_models.py::test_plate_subsample_primitive_ok
def plate_subsample_primitive_ok(subsample_size):
    def model():
        p = torch.tensor(0.5)
        with pyro.plate("plate", 10, subsample_size):
            pyro.sample("x", dist.Bernoulli(p))

    def guide():
        with pyro.plate("plate", 10, subsample_size) as ind:
            p0 = torch.tensor(0.0)
            p0 = pyro.subsample(p0, event_dim=0)
            assert p0.shape == ()
            p = 0.5 * torch.ones(10)
            p = pyro.subsample(p, event_dim=0)
            assert len(p) == len(ind)
            pyro.sample("x", dist.Bernoulli(p))

    return model, guide


# test_valid_models.py::test_plate_param_size_mismatch_error
def plate_param_size_mismatch_error(subsample_size, shape):
    def model():
        p = torch.tensor(0.5)
        with pyro.plate("plate", 10, subsample_size):
            pyro.sample("x", dist.Bernoulli(p))

    def guide():
        with pyro.plate("plate", 10, subsample_size):
            pyro.param("p0", torch.ones(shape), event_dim=0)
            p = pyro.param("p", torch.ones(10), event_dim=0)
            pyro.sample("x", dist.Bernoulli(p))

    return model, guide


# test_valid_models.py::test_plate_no_size_ok
def plate_no_size_ok():
    def model():
        p = torch.tensor(0.5)
        with pyro.plate("plate"):
            pyro.sample("x", dist.Bernoulli(p).expand_by([10]))

    def guide():
        p = pyro.param("p", torch.tensor(0.5, requires_grad=True))
        with pyro.plate("plate"):
            pyro.sample("x", dist.Bernoulli(p).expand_by([10]))

    return model, guide


# test_valid_models.py::test_iplate_iplate_ok and test_iplate_iplate_swap_ok
def iplate_iplate_ok(subsample_size, swap):
    def model():
        p = torch.tensor(0.5)
        outer_iplate = pyro.plate("plate_0", 3, subsample_size)
        inner_iplate = pyro.plate("plate_1", 3, subsample_size)
        for i in outer_iplate:
            for j in inner_iplate:
                pyro.sample(f"x_{i}_{j}", dist.Bernoulli(p))

    def guide():
        p = pyro.param("p", torch.tensor(0.5, requires_grad=True))
        outer_iplate = pyro.plate("plate_0", 3, subsample_size)
        inner_iplate = pyro.plate("plate_1", 3, subsample_size)
        if swap:
            for j in inner_iplate:
                for i in outer_iplate:
                    pyro.sample(f"x_{i}_{j}", dist.Bernoulli(p))
        else:
            for i in outer_iplate:
                for j in inner_iplate:
                    pyro.sample(f"x_{i}_{j}", dist.Bernoulli(p))

    return model, guide


# test_valid_models.py::test_iplate_in_model_not_guide_ok
def iplate_in_model_not_guide_ok(subsample_size):
    def model():
        p = torch.tensor(0.5)
        for _i in pyro.plate("plate", 10, subsample_size):
            pass
        pyro.sample("x", dist.Bernoulli(p))

    def guide():
        p = pyro.param("p", torch.tensor(0.5, requires_grad=True))
        pyro.sample("x", dist.Bernoulli(p))

    return model, guide


# test_valid_models.py::test_iplate_in_guide_not_model_error
def iplate_in_guide_not_model_error(subsample_size):
    def model():
        p = torch.tensor(0.5)
        pyro.sample("x", dist.Bernoulli(p))

    def guide():
        p = pyro.param("p", torch.tensor(0.5, requires_grad=True))
        for _i in pyro.plate("plate", 10, subsample_size):
            pass
        pyro.sample("x", dist.Bernoulli(p))

    return model, guide


# test_valid_models.py::test_plate_broadcast_error
def plate_broadcast_error():
    def model():
        p = torch.tensor(0.5, requires_grad=True)
        with pyro.plate("plate", 10, 5):
            pyro.sample("x", dist.Bernoulli(p).expand_by([2]))

    return model, model


# test_valid_models.py::test_plate_iplate_ok
def plate_iplate_ok():
    def model():
        p = torch.tensor(0.5)
        with pyro.plate("plate", 3, 2) as ind:
            for i in pyro.plate("iplate", 3, 2):
                pyro.sample(f"x_{i}", dist.Bernoulli(p).expand_by([len(ind)]))

    def guide():
        p = pyro.param("p", torch.tensor(0.5, requires_grad=True))
        with pyro.plate("plate", 3, 2) as ind:
            for i in pyro.plate("iplate", 3, 2):
                pyro.sample(f"x_{i}", dist.Bernoulli(p).expand_by([len(ind)]))

    return model, guide


# test_valid_models.py::test_iplate_plate_ok
def iplate_plate_ok():
    def model():
        p = torch.tensor(0.5)
        inner_plate = pyro.plate("plate", 3, 2)
        for i in pyro.plate("iplate", 3, 2):
            with inner_plate as ind:
                pyro.sample(f"x_{i}", dist.Bernoulli(p).expand_by([len(ind)]))

    def guide():
        p = pyro.param("p", torch.tensor(0.5, requires_grad=True))
        inner_plate = pyro.plate("plate", 3, 2)
        for i in pyro.plate("iplate", 3, 2):
            with inner_plate as ind:
                pyro.sample(f"x_{i}", dist.Bernoulli(p).expand_by([len(ind)]))

    return model, guide


# test_valid_models.py::test_plate_stack_ok
def plate_stack_ok(sizes):
    def model():
        p = torch.tensor(0.5)
        with pyro.plate_stack("plate_stack", sizes):
            pyro.sample("x", dist.Bernoulli(p))

    def guide():
        p = pyro.param("p", torch.tensor(0.5, requires_grad=True))
        with pyro.plate_stack("plate_stack", sizes):
            pyro.sample("x", dist.Bernoulli(p))

    return model, guide


# test_valid_models.py::test_plate_stack_and_plate_ok
def plate_stack_and_plate_ok(sizes):
    def model():
        p = torch.tensor(0.5)
        with pyro.plate_stack("plate_stack", sizes), pyro.plate("plate", 7):
            pyro.sample("x", dist.Bernoulli(p))

    def guide():
        p = pyro.param("p", torch.tensor(0.5, requires_grad=True))
        with pyro.plate_stack("plate_stack", sizes), pyro.plate("plate", 7):
            pyro.sample("x", dist.Bernoulli(p))

    return model, guide


# test_valid_models.py::test_nested_plate_plate_ok
def nested_plate_plate_ok():
    def model():
        p = torch.tensor(0.5, requires_grad=True)
        with pyro.plate("plate_outer", 10, 5) as ind_outer:
            pyro.sample("x", dist.Bernoulli(p).expand_by([len(ind_outer)]))
            with pyro.plate("plate_inner", 11, 6) as ind_inner:
                pyro.sample("y", dist.Bernoulli(p).expand_by([len(ind_inner), len(ind_outer)]))

    return model, model


# test_valid_models.py::test_plate_reuse_ok
def plate_reuse_ok():
    def model():
        p = torch.tensor(0.5, requires_grad=True)
        plate_outer = pyro.plate("plate_outer", 10, 5, dim=-1)
        plate_inner = pyro.plate("plate_inner", 11, 6, dim=-2)
        with plate_outer as ind_outer:
            pyro.sample("x", dist.Bernoulli(p).expand_by([len(ind_outer)]))
        with plate_inner as ind_inner:
            pyro.sample("y", dist.Bernoulli(p).expand_by([len(ind_inner), 1]))
        with plate_outer as ind_outer, plate_inner as ind_inner:
            pyro.sample("z", dist.Bernoulli(p).expand_by([len(ind_inner), len(ind_outer)]))

    return model, model


# test_valid_models.py::test_nested_plate_plate_dim_error_1 .. _4 (the site marked "error")
def nested_plate_plate_dim_error(which):
    def model():
        p = torch.tensor([0.5], requires_grad=True)
        with pyro.plate("plate_outer", 10, 5) as ind_outer:
            if which == 1:
                pyro.sample("x", dist.Bernoulli(p).expand_by([len(ind_outer)]))  # error here
            else:
                pyro.sample("x", dist.Bernoulli(p).expand_by([len(ind_outer), 1]))
            with pyro.plate("plate_inner", 11, 6) as ind_inner:
                if which == 2:
                    pyro.sample("y", dist.Bernoulli(p).expand_by([len(ind_outer)]))  # error here
                else:
                    pyro.sample("y", dist.Bernoulli(p).expand_by([len(ind_inner)]))
                if which == 3:
                    pyro.sample("z", dist.Bernoulli(p).expand_by([len(ind_inner), 1]))  # error
                elif which == 4:
                    z_shape = [len(ind_outer), len(ind_outer)]  # error here
                    pyro.sample("z", dist.Bernoulli(p).expand_by(z_shape))
                else:
                    z_shape = [len(ind_outer), len(ind_inner)]
                    pyro.sample("z", dist.Bernoulli(p).expand_by(z_shape))

    return model, model


# test_valid_models.py::test_nested_plate_plate_subsample_param_ok
def nested_plate_plate_subsample_param_ok():
    def model():
        with pyro.plate("plate_outer", 10, 5):
            pyro.sample("x", dist.Bernoulli(0.2))
            with pyro.plate("plate_inner", 11, 6):
                pyro.sample("y", dist.Bernoulli(0.2))

    def guide():
        p0 = pyro.param("p0", 0.5 * torch.ones(4, 5), event_dim=2)
        assert p0.shape == (4, 5)
        with pyro.plate("plate_outer", 10, 5):
            p1 = pyro.param("p1", 0.5 * torch.ones(10, 3), event_dim=1)
            assert p1.shape == (5, 3)
            px = pyro.param("px", 0.5 * torch.ones(10), event_dim=0)
            assert px.shape == (5,)
            pyro.sample("x", dist.Bernoulli(px))
            with pyro.plate("plate_inner", 11, 6):
                py = pyro.param("py", 0.5 * torch.ones(11, 10), event_dim=0)
                assert py.shape == (6, 5)
                pyro.sample("y", dist.Bernoulli(py))

    return model, guide


# test_valid_models.py::test_nonnested_plate_plate_ok
def nonnested_plate_plate_ok():
    def model():
        p = torch.tensor(0.5, requires_grad=True)
        with pyro.plate("plate_0", 10, 5) as ind1:
            pyro.sample("x0", dist.Bernoulli(p).expand_by([len(ind1)]))
        with pyro.plate("plate_1", 11, 6) as ind2:
            pyro.sample("x1", dist.Bernoulli(p).expand_by([len(ind2)]))

    return model, model


# test_valid_models.py::test_three_indep_plate_at_different_depths_ok
def three_indep_plate_at_different_depths_ok():
    def model():
        p = torch.tensor(0.5)
        inner_plate = pyro.plate("plate2", 10, 5)
        for i in pyro.plate("plate0", 2):
            pyro.sample(f"x_{i}", dist.Bernoulli(p))
            if i == 0:
                for j in pyro.plate("plate1", 2):
                    with inner_plate as ind:
                        pyro.sample(f"y_{j}", dist.Bernoulli(p).expand_by([len(ind)]))
            elif i == 1:
                with inner_plate as ind:
                    pyro.sample("z", dist.Bernoulli(p).expand_by([len(ind)]))

    def guide():
        p = pyro.param("p", torch.tensor(0.5, requires_grad=True))
        inner_plate = pyro.plate("plate2", 10, 5)
        for i in pyro.plate("plate0", 2):
            pyro.sample(f"x_{i}", dist.Bernoulli(p))
            if i == 0:
                for j in pyro.plate("plate1", 2):
                    with inner_plate as ind:
                        pyro.sample(f"y_{j}", dist.Bernoulli(p).expand_by([len(ind)]))
            elif i == 1:
                with inner_plate as ind:
                    pyro.sample("z", dist.Bernoulli(p).expand_by([len(ind)]))

    return model, guide


# test_valid_models.py::test_plate_wrong_size_error
def plate_wrong_size_error():
    def model():
        p = torch.tensor(0.5)
        with pyro.plate("plate", 10, 5) as ind:
            pyro.sample("x", dist.Bernoulli(p).expand_by([1 + len(ind)]))

    def guide():
        p = pyro.param("p", torch.tensor(0.5, requires_grad=True))
        with pyro.plate("plate", 10, 5) as ind:
            pyro.sample("x", dist.Bernoulli(p).expand_by([1 + len(ind)]))

    return model, guide


# test_valid_models.py::test_block_plate_name_ok and test_block_plate_dim_ok (the shape
# asserts allow the vectorized particles' leading dimension)
def block_plate_ok(by_dim):
    def blocked():
        return block_plate(dim=-1) if by_dim else block_plate("plate")

    def model():
        a = pyro.sample("a", dist.Normal(0, 1))
        assert a.shape[-1:] in ((), (1,))
        with pyro.plate("plate", 2):
            b = pyro.sample("b", dist.Normal(0, 1))
            assert b.shape[-1:] == (2,)
            with blocked():
                c = pyro.sample("c", dist.Normal(0, 1))
                assert c.shape[-1:] in ((), (1,))

    def guide():
        c = pyro.sample("c", dist.Normal(0, 1))
        assert c.shape[-1:] in ((), (1,))
        with pyro.plate("plate", 2):
            b = pyro.sample("b", dist.Normal(0, 1))
            assert b.shape[-1:] == (2,)
            with blocked():
                a = pyro.sample("a", dist.Normal(0, 1))
                assert a.shape[-1:] in ((), (1,))

    return model, guide


# test_valid_models.py::test_block_plate_missing_error
def block_plate_missing_error():
    def model():
        with block_plate("plate"):
            pyro.sample("a", dist.Normal(0, 1))

    def guide():
        pyro.sample("a", dist.Normal(0, 1))

    return model, guide


# test_valid_models.py::test_enum_discrete_misuse_warning (with Trace_ELBO)
def enum_discrete_misuse(enumerate_):
    def model():
        p = torch.tensor(0.5)
        pyro.sample("x", dist.Bernoulli(p))

    def guide():
        p = pyro.param("p", torch.tensor(0.5, requires_grad=True))
        pyro.sample("x", dist.Bernoulli(p), infer={"enumerate": enumerate_})

    return model, guide


# test_valid_models.py::test_plate_shape_broadcasting
def plate_shape_broadcasting():
    data = torch.ones(1000, 2)

    def model():
        with pyro.plate("num_particles", 10, dim=-3):
            with pyro.plate("components", 2, dim=-1):
                p = pyro.sample("p", dist.Beta(torch.tensor(1.1), torch.tensor(1.1)))
                assert p.shape[-3:] == torch.Size((10, 1, 2))  # ours: (K, 10, 1, 2) at K > 1
            with pyro.plate("data", data.shape[0], dim=-2):
                pyro.sample("obs", dist.Bernoulli(p), obs=data)

    def guide():
        with pyro.plate("num_particles", 10, dim=-3), pyro.plate("components", 2, dim=-1):
            pyro.sample("p", dist.Beta(torch.tensor(1.1), torch.tensor(1.1)))

    return model, guide


# test_valid_models.py::test_dim_allocation_ok (Trace_ELBO)
def dim_allocation_ok():
    def model():
        p = torch.tensor(0.5, requires_grad=True)
        with pyro.plate("plate_outer", 10, 5, dim=-3):
            x = pyro.sample("x", dist.Bernoulli(p))
            with pyro.plate("plate_inner_1", 11, 6):
                y = pyro.sample("y", dist.Bernoulli(p))
                # allocated dim is rightmost available, i.e. -1
                with pyro.plate("plate_inner_2", 12, 7):
                    z = pyro.sample("z", dist.Bernoulli(p))
                    # allocated dim is next rightmost available, i.e. -2
                    # since dim -3 is already allocated, use dim=-4
                    with pyro.plate("plate_inner_3", 13, 8):
                        q = pyro.sample("q", dist.Bernoulli(p))

        # check shapes (ours: with the particle plate's dimension in front at K > 1)
        assert x.shape[-3:] == (5, 1, 1)
        assert y.shape[-3:] == (5, 1, 6)
        assert z.shape[-3:] == (5, 7, 6)
        assert q.shape[-4:] == (8, 5, 7, 6)

    return model, model


# test_valid_models.py::test_dim_allocation_error (Trace_ELBO)
def dim_allocation_error():
    def model():
        p = torch.tensor(0.5, requires_grad=True)
        with pyro.plate("plate_outer", 10, 5, dim=-2):
            pyro.sample("x", dist.Bernoulli(p))
            # allocated dim is rightmost available, i.e. -1
            with pyro.plate("plate_inner_1", 11, 6):
                pyro.sample("y", dist.Bernoulli(p))
                # throws an error as dim=-1 is already occupied
                with pyro.plate("plate_inner_2", 12, 7, dim=-1):
                    pyro.sample("z", dist.Bernoulli(p))

    return model, model


# test_valid_models.py::test_vectorized_num_particles (Trace_ELBO)
def vectorized_num_particles():
    data = torch.ones(1000, 2)

    def model():
        with pyro.plate("components", 2):
            p = pyro.sample("p", dist.Beta(torch.tensor(1.1), torch.tensor(1.1)))
            with pyro.plate("data", data.shape[0]):
                pyro.sample("obs", dist.Bernoulli(p), obs=data)

    def guide():
        with pyro.plate("components", 2):
            pyro.sample("p", dist.Beta(torch.tensor(1.1), torch.tensor(1.1)))

    return model, guide


# test_valid_models.py::test_factor_in_model_ok
def factor_in_model_ok():
    def model():
        pyro.factor("f", torch.tensor(0.0))

    def guide():
        pass

    return model, guide


# test_valid_models.py::test_factor_in_guide_error and test_factor_in_guide_ok
def factor_in_guide(has_rsample):
    def model():
        pass

    def guide():
        if has_rsample is None:
            pyro.factor("f", torch.tensor(0.0))
        else:
            pyro.factor("f", torch.tensor(0.0), has_rsample=has_rsample)

    return model, guide


# test_valid_models.py::test_mean_field_ok and test_mean_field_mask_ok (mask=None: _ok)
def mean_field_ok(mask):
    def masked(d):
        return d if mask is None else d.mask(mask)

    def model():
        x = pyro.sample("x", masked(dist.Normal(0.0, 1.0)))
        pyro.sample("y", dist.Normal(x, 1.0))

    def guide():
        loc = pyro.param("loc", torch.tensor(0.0))
        x = pyro.sample("x", masked(dist.Normal(loc, 1.0)))
        pyro.sample("y", dist.Normal(x, 1.0))

    return model, guide


# test_valid_models.py::test_mean_field_warn (a warning of TraceMeanField_ELBO only)
def mean_field_warn():
    def model():
        x = pyro.sample("x", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.Normal(x, 1.0))

    def guide():
        loc = pyro.param("loc", torch.tensor(0.0))
        y = pyro.sample("y", dist.Normal(loc, 1.0))
        pyro.sample("x", dist.Normal(y, 1.0))

    return model, guide


# test_valid_models.py::test_tail_adaptive_ok and test_tail_adaptive_error
def tail_adaptive(which):
    def plateless_model():
        pyro.sample("x", dist.Normal(0.0, 1.0))

    def plate_model():
        x = pyro.sample("x", dist.Normal(0.0, 1.0))
        with pyro.plate("observe_data"):
            pyro.sample("obs", dist.Normal(x, 1.0), obs=torch.arange(5).type_as(x))

    def rep_guide():
        pyro.sample("x", dist.Normal(0.0, 2.0))

    def nonrep_guide():
        pyro.sample("x", fakes.NonreparameterizedNormal(0.0, 2.0))

    return {
        "plateless": (plateless_model, rep_guide),
        "plate": (plate_model, rep_guide),
        "nonrep": (plateless_model, nonrep_guide),
    }[which]


# test_valid_models.py::test_reparam_mask_ok (mask=True: test_reparam_ok's pair)
def reparam_mask_ok(mask):
    def model():
        x = pyro.sample("x", dist.Normal(0.0, 1.0))
        with poutine.mask(mask=mask):
            pyro.sample("y", dist.Normal(x, 1.0), obs=torch.tensor(0.0))

    def guide():
        loc = pyro.param("loc", torch.tensor(0.0))
        pyro.sample("x", dist.Normal(loc, 1.0))

    return model, guide


# test_valid_models.py::test_reparam_mask_plate_ok and test_reparam_scale_plate_ok
def reparam_plate(mask=True, scale=1.0):
    data = torch.randn(2, 3).exp()
    data /= data.sum(-1, keepdim=True)

    def model():
        c = pyro.sample("c", dist.LogNormal(0.0, 1.0).expand([3]).to_event(1))
        with pyro.plate("data", len(data)), poutine.mask(mask=mask), poutine.scale(scale=scale):
            pyro.sample("obs", dist.Dirichlet(c), obs=data)

    def guide():
        loc = pyro.param("loc", torch.zeros(3))
        scale = pyro.param("scale", torch.ones(3), constraint=constraints.positive)
        pyro.sample("c", dist.LogNormal(loc, scale).to_event(1))

    return model, guide


# test_valid_models.py::test_obs_mask_ok and test_obs_mask_multivariate_ok
def obs_mask(multivariate, mask):
    if multivariate:
        data = torch.full((4, 3), 7.0)

        def prior(loc, cov):
            return dist.MultivariateNormal(loc, cov)

        shape, eye = (3,), torch.eye(3)
    else:
        data = torch.tensor([7.0, 7.0, 7.0])

        def prior(loc, scale):
            return dist.Normal(loc, scale)

        shape, eye = (), torch.tensor(1.0)

    def model():
        x = pyro.sample("x", prior(torch.zeros(shape), eye))
        with pyro.plate("plate", len(data)):
            pyro.sample("y", prior(x, eye), obs=data, obs_mask=mask)

    def guide():
        loc = pyro.param("loc", torch.zeros(shape))
        x = pyro.sample("x", prior(loc, eye))
        with pyro.plate("plate", len(data)), poutine.mask(mask=~mask):
            pyro.sample("y_unobserved", prior(x, eye))

    return model, guide


# test_valid_models.py::test_reparam_scale_ok
def reparam_scale_ok(scale):
    def model():
        x = pyro.sample("x", dist.Normal(0.0, 1.0))
        with poutine.scale(scale=scale):
            pyro.sample("y", dist.Normal(x, 1.0), obs=torch.tensor(0.0))

    def guide():
        loc = pyro.param("loc", torch.tensor(0.0))
        pyro.sample("x", dist.Normal(loc, 1.0))

    return model, guide


# test_valid_models.py::test_reparam_stable
def reparam_stable():
    from pyro.infer.reparam import LatentStableReparam

    @poutine.reparam(config={"z": LatentStableReparam()})
    def model():
        stability = pyro.sample("stability", dist.Uniform(0.0, 2.0))
        skew = pyro.sample("skew", dist.Uniform(-1.0, 1.0))
        y = pyro.sample("z", dist.Stable(stability, skew))
        pyro.sample("x", dist.Poisson(y.abs()), obs=torch.tensor(1.0))

    def guide():
        pyro.sample("stability", dist.Delta(torch.tensor(1.5)))
        pyro.sample("skew", dist.Delta(torch.tensor(0.0)))
        pyro.sample("z_uniform", dist.Delta(torch.tensor(0.1)))
        pyro.sample("z_exponential", dist.Delta(torch.tensor(1.0)))

    return model, guide


# test_valid_models.py::test_ordered_logistic_plate
def ordered_logistic_plate():
    N = 5  # num data points/batch size
    K = 4  # num categories
    data = (K * torch.rand(N)).long().float()

    def model():
        predictor = pyro.sample("predictor", dist.Normal(0.0, 1.0).expand([N]).to_event(1))
        cutpoints = pyro.sample("cutpoints", dist.Normal(0.0, 1.0).expand([K - 1]).to_event(1))
        cutpoints = torch.sort(cutpoints, dim=-1).values
        with pyro.plate("obs_plate", N):
            pyro.sample("obs", dist.OrderedLogistic(predictor, cutpoints), obs=data)

    def guide():
        pred_mu = pyro.param("pred_mu", torch.zeros(N))
        pred_std = pyro.param("pred_std", torch.ones(N))
        cp_mu = pyro.param("cp_mu", torch.zeros(K - 1))
        cp_std = pyro.param("cp_std", torch.ones(K - 1))
        pyro.sample("predictor", dist.Normal(pred_mu, pred_std).to_event(1))
        pyro.sample("cutpoints", dist.Normal(cp_mu, cp_std).to_event(1))

    return model, guide


DATA = torch.tensor([-0.5, 2.0])


def normal_pair(reparameterized=True, has_rsample=None, subsample_size=None):
    """test_gradient.py::test_particle_gradient and test_subsample_gradient: z ~ N(0, 1),
    x | z ~ N(z, 1) per datapoint, guide N(loc_n, scale); ``model(subsample)`` and
    ``guide(subsample)`` take the subsample indices (``None``: the plate draws them)."""
    Normal = dist.Normal if reparameterized else fakes.NonreparameterizedNormal
    size = len(DATA) if subsample_size is None else subsample_size

    def model(subsample=None):
        with pyro.plate("data", len(DATA), size, subsample) as ind:
            x = DATA[ind]
            z = pyro.sample("z", Normal(0, 1))
            pyro.sample("x", Normal(z, 1), obs=x)

    def guide(subsample=None):
        scale = pyro.param("scale", lambda: torch.tensor([1.0]))
        with pyro.plate("data", len(DATA), size, subsample):
            loc = pyro.param("loc", lambda: torch.zeros(len(DATA)), event_dim=0)
            z_dist = Normal(loc, scale)
            if has_rsample is not None:
                z_dist.has_rsample_(has_rsample)
            pyro.sample("z", z_dist)

    return model, guide


# test_gradient.py::test_subsample_gradient_sequential
def subsample_gradient_sequential(reparameterized):
    Normal = dist.Normal if reparameterized else fakes.NonreparameterizedNormal

    def model():
        with pyro.plate("data", len(DATA), 1) as ind:
            x = DATA[ind]
            z = pyro.sample("z", Normal(0, 1).expand_by(x.shape))
            pyro.sample("x", Normal(z, 1), obs=x)

    def guide():
        loc = pyro.param("loc", lambda: torch.zeros(len(DATA), requires_grad=True))
        scale = pyro.param("scale", lambda: torch.tensor([1.0], requires_grad=True))
        with pyro.plate("data", len(DATA), 1) as ind:
            pyro.sample("z", Normal(loc[ind], scale))

    return model, guide


# test_gradient.py::test_plate_elbo_vectorized_particles (reparameterized)
def plate_elbo_vectorized_particles():
    def model():
        data_plate = pyro.plate("data", len(DATA))

        pyro.sample("nuisance_a", dist.Normal(0, 1))
        with data_plate:
            z = pyro.sample("z", dist.Normal(0, 1))
        pyro.sample("nuisance_b", dist.Normal(2, 3))
        with data_plate:
            pyro.sample("x", dist.Normal(z, 1), obs=DATA)
        pyro.sample("nuisance_c", dist.Normal(4, 5))

    def guide():
        loc = pyro.param("loc", torch.zeros(len(DATA)))
        scale = pyro.param("scale", torch.tensor([1.0]))

        pyro.sample("nuisance_c", dist.Normal(4, 5))
        with pyro.plate("data", len(DATA)):
            pyro.sample("z", dist.Normal(loc, scale))
        pyro.sample("nuisance_b", dist.Normal(2, 3))
        pyro.sample("nuisance_a", dist.Normal(0, 1))

    return model, guide


# test_gradient.py::test_plate (reparameterized; its particles plate 10 wide, not 200000)
def plate_with_particles_plate():
    num_particles = 10

    def model():
        particles_plate = pyro.plate("particles", num_particles, dim=-2)
        data_plate = pyro.plate("data", len(DATA), dim=-1)

        pyro.sample("nuisance_a", dist.Normal(0, 1))
        with particles_plate, data_plate:
            z = pyro.sample("z", dist.Normal(0, 1))
        pyro.sample("nuisance_b", dist.Normal(2, 3))
        with data_plate, particles_plate:
            pyro.sample("x", dist.Normal(z, 1), obs=DATA)
        pyro.sample("nuisance_c", dist.Normal(4, 5))

    def guide():
        loc = pyro.param("loc", torch.zeros(len(DATA)))
        scale = pyro.param("scale", torch.tensor([1.0]))

        pyro.sample("nuisance_c", dist.Normal(4, 5))
        with pyro.plate("particles", num_particles, dim=-2), pyro.plate("data", len(DATA), dim=-1):
            pyro.sample("z", dist.Normal(loc, scale))
        pyro.sample("nuisance_b", dist.Normal(2, 3))
        pyro.sample("nuisance_a", dist.Normal(0, 1))

    return model, guide


OK, VIMCO_ONLY = "ok", "vimco"


def refused(pattern):
    return ("refused", pattern)


def pyro_error(pattern):
    return ("pyro", pattern)


#: id -> (factory, arguments, expected outcome)
ZOO = {
    "nonempty_model_empty_guide_ok": (nonempty_model_empty_guide_ok, (), OK),
    "nonempty_model_empty_guide_error": (
        nonempty_model_empty_guide_error,
        (),
        pyro_error("Found vars in model but not guide"),
    ),
    "empty_model_empty_guide_ok": (empty_model_empty_guide_ok, (), OK),
    "variable_clash_in_model_error": (
        variable_clash_in_model_error,
        (),
        pyro_error("Multiple sample sites named"),
    ),
    "model_guide_dim_mismatch_error": (
        model_guide_dim_mismatch_error,
        (),
        pyro_error("invalid log_prob shape|Model and guide event_dims disagree"),
    ),
    "model_guide_shape_mismatch_error": (
        model_guide_shape_mismatch_error,
        (),
        pyro_error("Model and guide shapes disagree"),
    ),
    "variable_clash_in_guide_error": (
        variable_clash_in_guide_error,
        (),
        pyro_error("Multiple sample sites named"),
    ),
    "set_has_rsample_ok-True": (set_has_rsample_ok, (True,), OK),
    "set_has_rsample_ok-False": (set_has_rsample_ok, (False,), VIMCO_ONLY),
    "not_has_rsample_ok": (not_has_rsample_ok, (), VIMCO_ONLY),
    "iplate_ok-full": (iplate_ok, (None,), VIMCO_ONLY),
    "iplate_ok-subsample": (iplate_ok, (2,), VIMCO_ONLY),
    "iplate_variable_clash_error": (
        iplate_variable_clash_error,
        (),
        pyro_error("Multiple sample sites named"),
    ),
    "plate_ok-full": (plate_ok, (None,), VIMCO_ONLY),
    "plate_ok-subsample": (plate_ok, (5,), VIMCO_ONLY),
    "plate_subsample_param_ok-full": (plate_subsample_param_ok, (None,), VIMCO_ONLY),
    "plate_subsample_param_ok-subsample": (plate_subsample_param_ok, (5,), VIMCO_ONLY),
    "plate_subsample_primitive_ok-full": (plate_subsample_primitive_ok, (None,), VIMCO_ONLY),
    "plate_subsample_primitive_ok-subsample": (plate_subsample_primitive_ok, (5,), VIMCO_ONLY),
    # (a param of shape (3, 10) or (3, 1), also valid in Pyro, collides with the vectorized
    # particles' dimension: Pyro's ELBOs with vectorize_particles=True refuse it alike)
    "plate_param_size_mismatch_error-(10,)-ok": (
        plate_param_size_mismatch_error,
        (5, (10,)),
        VIMCO_ONLY,
    ),
    "plate_param_size_mismatch_error-(3, 5)": (
        plate_param_size_mismatch_error,
        (5, (3, 5)),
        pyro_error("invalid shape of pyro.param"),
    ),
    "plate_no_size_ok": (plate_no_size_ok, (), VIMCO_ONLY),
    "iplate_iplate_ok-subsample": (iplate_iplate_ok, (2, False), VIMCO_ONLY),
    "iplate_iplate_swap_ok-subsample": (iplate_iplate_ok, (2, True), VIMCO_ONLY),
    "iplate_in_model_not_guide_ok": (iplate_in_model_not_guide_ok, (5,), VIMCO_ONLY),
    "iplate_in_guide_not_model_error": (
        iplate_in_guide_not_model_error,
        (5,),
        pyro_error("Found plate statements in guide but not model"),
    ),
    "plate_broadcast_error": (plate_broadcast_error, (), pyro_error("Shape mismatch inside plate")),
    "plate_iplate_ok": (plate_iplate_ok, (), VIMCO_ONLY),
    "iplate_plate_ok": (iplate_plate_ok, (), VIMCO_ONLY),
    "plate_stack_ok-(3, 4, 5)": (plate_stack_ok, ((3, 4, 5),), VIMCO_ONLY),
    "plate_stack_and_plate_ok-(3, 4)": (plate_stack_and_plate_ok, ((3, 4),), VIMCO_ONLY),
    # subsampled nested plates: the sites carry different scales (N / B of their plates)
    "nested_plate_plate_ok": (nested_plate_plate_ok, (), refused(SCALES)),
    "plate_reuse_ok": (plate_reuse_ok, (), refused(SCALES)),
    "nested_plate_plate_dim_error_1": (
        nested_plate_plate_dim_error,
        (1,),
        pyro_error("invalid log_prob shape"),
    ),
    "nested_plate_plate_dim_error_2": (
        nested_plate_plate_dim_error,
        (2,),
        pyro_error("Shape mismatch inside plate"),
    ),
    "nested_plate_plate_dim_error_3": (
        nested_plate_plate_dim_error,
        (3,),
        pyro_error("invalid log_prob shape|shape mismatch"),
    ),
    "nested_plate_plate_dim_error_4": (
        nested_plate_plate_dim_error,
        (4,),
        pyro_error("hape mismatch inside plate"),
    ),
    "nested_plate_plate_subsample_param_ok": (
        nested_plate_plate_subsample_param_ok,
        (),
        refused(SCALES),
    ),
    "nonnested_plate_plate_ok": (nonnested_plate_plate_ok, (), refused(SCALES)),
    "three_indep_plate_at_different_depths_ok": (
        three_indep_plate_at_different_depths_ok,
        (),
        refused(SCALES),
    ),
    "plate_wrong_size_error": (
        plate_wrong_size_error,
        (),
        pyro_error("Shape mismatch inside plate"),
    ),
    "block_plate_name_ok": (block_plate_ok, (False,), OK),
    "block_plate_dim_ok": (block_plate_ok, (True,), OK),
    "block_plate_missing_error": (
        block_plate_missing_error,
        (),
        pyro_error("block_plate matched 0 messengers"),
    ),
    "enum_discrete_misuse_warning-None": (enum_discrete_misuse, (None,), VIMCO_ONLY),
    "enum_discrete_misuse_warning-sequential": (
        enum_discrete_misuse,
        ("sequential",),
        refused("configured for enumeration.*TraceEnum_ELBO"),
    ),
    "enum_discrete_misuse_warning-parallel": (
        enum_discrete_misuse,
        ("parallel",),
        refused("configured for enumeration.*TraceEnum_ELBO"),
    ),
    "plate_shape_broadcasting": (plate_shape_broadcasting, (), OK),
    "dim_allocation_ok": (dim_allocation_ok, (), refused(SCALES)),
    "dim_allocation_error": (dim_allocation_error, (), pyro_error("collide at dim=")),
    "vectorized_num_particles": (vectorized_num_particles, (), OK),
    "factor_in_model_ok": (factor_in_model_ok, (), OK),
    "factor_in_guide_error": (
        factor_in_guide,
        (None,),
        pyro_error("missing specification of has_rsample"),
    ),
    "factor_in_guide_ok-True": (factor_in_guide, (True,), OK),
    "factor_in_guide_ok-False": (factor_in_guide, (False,), VIMCO_ONLY),
    "mean_field_ok": (mean_field_ok, (None,), OK),
    "mean_field_mask_ok-True": (mean_field_ok, (True,), OK),
    "mean_field_mask_ok-False": (mean_field_ok, (False,), OK),
    "mean_field_warn": (mean_field_warn, (), OK),
    "tail_adaptive_ok-plateless": (tail_adaptive, ("plateless",), OK),
    "tail_adaptive_ok-plate": (tail_adaptive, ("plate",), refused(GLOBAL)),
    "tail_adaptive_error-nonrep": (tail_adaptive, ("nonrep",), VIMCO_ONLY),
    "reparam_ok": (reparam_mask_ok, (True,), OK),
    "reparam_mask_ok-False": (reparam_mask_ok, (False,), OK),
    "reparam_mask_ok-tensor(True)": (reparam_mask_ok, (torch.tensor(True),), OK),
    "reparam_mask_plate_ok": (reparam_plate, (torch.tensor([False, True]),), refused(GLOBAL)),
    "reparam_scale_plate_ok": (reparam_plate, (True, torch.tensor([0.1, 0.9])), refused(GLOBAL)),
    "obs_mask_ok": (obs_mask, (False, torch.tensor([False, True, False])), refused(GLOBAL)),
    "obs_mask_multivariate_ok": (
        obs_mask,
        (True, torch.tensor([False, True, True, False])),
        refused(GLOBAL),
    ),
    "obs_mask_multivariate_error": (
        obs_mask,
        (True, torch.tensor([[False, False], [False, True], [True, False]])),
        pyro_error("Invalid obs_mask shape"),
    ),
    "reparam_scale_ok-1": (reparam_scale_ok, (1,), OK),
    "reparam_scale_ok-0.1": (reparam_scale_ok, (0.1,), refused(SCALES)),
    "reparam_scale_ok-tensor(0.5)": (reparam_scale_ok, (torch.tensor(0.5),), refused(SCALES)),
    "reparam_stable": (reparam_stable, (), OK),
    "ordered_logistic_plate": (ordered_logistic_plate, (), refused(GLOBAL)),
    # test_gradient.py
    "particle_gradient-reparam": (normal_pair, (), OK),
    "particle_gradient-nonreparam": (normal_pair, (False,), VIMCO_ONLY),
    "particle_gradient-reparam-False": (normal_pair, (True, False), VIMCO_ONLY),
    "subsample_gradient-subsample": (normal_pair, (True, None, 1), OK),
    "subsample_gradient_sequential-reparam": (subsample_gradient_sequential, (True,), OK),
    "subsample_gradient_sequential-nonreparam": (
        subsample_gradient_sequential,
        (False,),
        VIMCO_ONLY,
    ),
    # global "nuisance" sites beside the data plate
    "plate_elbo_vectorized_particles": (plate_elbo_vectorized_particles, (), refused(GLOBAL)),
    "plate": (plate_with_particles_plate, (), refused(GLOBAL)),
}


def pair(key):
    factory, args, expected = ZOO[key]
    model, guide = factory(*args)
    return model, guide, expected


def keys(*outcomes):
    return [k for k, (_, _, e) in ZOO.items() if (e if isinstance(e, str) else e[0]) in outcomes]


def same_draws(elbo, reference, model, guide, method="loss", seed=0):
    """(elbo's value, reference's loss) on the same draws: each runs once first (guessing
    its plate nesting, which draws), then both from the same seed."""
    out = []
    for e, m in ((elbo, method), (reference, "loss")):
        getattr(e, m)(model, guide)
        pyro.set_rng_seed(seed)
        out.append(getattr(e, m)(model, guide))
    return out


@pytest.fixture(autouse=True)
def warnings_are_errors():
    """Pyro's UserWarnings (model/guide mismatches, enumeration misuse) count as errors, as in
    Pyro's own suite: no pair may pass with only a warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        yield


@pytest.mark.parametrize("key", keys(OK))
def test_at_one_particle_every_objective_is_trace_elbo_on_the_same_draws(key):
    # (loss_and_grads' value; loss reports the same on the same draws: the next test)
    for name in NAMES:
        model, guide, _ = pair(key)
        pyro.clear_param_store()
        got, expected = same_draws(objective(name, 1), Trace_ELBO(), model, guide, "loss_and_grads")
        assert got == pytest.approx(expected, rel=1e-5, abs=1e-4), name


@pytest.mark.parametrize("key", keys(OK))
def test_with_three_particles_every_objective_runs_and_reports_its_loss(key):
    # loss_and_grads reports loss's value on the same draws (default options: free bits
    # 0 nats, MMD weight 1, CIWAE beta 0.5, ...), finite, for every plate structure
    for name in NAMES:
        model, guide, _ = pair(key)
        pyro.clear_param_store()
        elbo = make_elbo(name, 3)
        a, b = same_draws(elbo, elbo, model, guide, "loss_and_grads")
        assert math.isfinite(a) and a == pytest.approx(b, rel=1e-5, abs=1e-4), name


@pytest.mark.parametrize("key", keys(VIMCO_ONLY))
def test_non_reparameterized_guides_get_vimco_and_one_error_elsewhere(key):
    for name in NAMES:
        model, guide, _ = pair(key)
        pyro.clear_param_store()
        if name == "vimco":
            got, expected = same_draws(objective(name, 1), Trace_ELBO(), model, guide)
            assert got == pytest.approx(expected, rel=1e-5, abs=1e-4)
            # two particles, leave-one-out baselines: minus the IWAE bound of its own draws
            vimco, weights = make_elbo("vimco", 2), MultiSampleELBO(2)
            got, _ = same_draws(vimco, vimco, model, guide, "loss_and_grads")
            weights.guess_plate_nesting(model, guide)
            pyro.set_rng_seed(0)
            w = weights.importance_weights(model, guide, check_rsample=False)
            bound = (w.log_w.logsumexp(0) - math.log(2)).sum().item()
            assert got == pytest.approx(-w.scale * bound, rel=1e-5, abs=1e-4)
        else:
            with pytest.raises(ConfigError, match="use VIMCO"):
                objective(name, 2).loss_and_grads(model, guide)


@pytest.mark.parametrize("key", keys("refused"))
def test_what_a_per_datapoint_bound_cannot_take_is_refused_naming_the_remedy(key):
    for name in NAMES:
        model, guide, (_, pattern) = pair(key)
        pyro.clear_param_store()
        with pytest.raises(ConfigError, match=pattern):
            objective(name, 2).loss_and_grads(model, guide)


@pytest.mark.parametrize("key", keys("pyro"))
def test_pairs_pyro_rejects_fail_with_pyros_error(key):
    model, guide, (_, pattern) = pair(key)
    with pytest.raises((UserWarning, ValueError, RuntimeError, KeyError), match=pattern):
        Trace_ELBO().loss(model, guide)  # as in Pyro's own test
    for name in NAMES:
        model, guide, _ = pair(key)
        pyro.clear_param_store()
        with pytest.raises((UserWarning, ValueError, RuntimeError, KeyError), match=pattern):
            objective(name, 2).loss_and_grads(model, guide)


def test_every_pair_has_a_known_outcome():
    assert set(keys(OK, VIMCO_ONLY, "refused", "pyro")) == set(ZOO)
    assert len(keys(OK)) >= 20 and len(keys("pyro")) >= 15


# --- gradients ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reparameterized, has_rsample",
    [(True, None), (True, False), (True, True), (False, None)],
    ids=["reparam", "reparam-False", "reparam-True", "nonreparam"],
)
def test_particle_gradient_on_the_same_draws(reparameterized, has_rsample):
    # test_gradient.py::test_particle_gradient: one particle, the gradient written out for
    # the draw z: pathwise (every reparameterized objective), its path part alone (STL and
    # DReG, which drop the score term d log q / d phi at fixed z), or the score function
    # (VIMCO without baselines); a non-reparameterized guide is refused by the others.
    pathwise = reparameterized and has_rsample is not False
    for name in NAMES:
        pyro.clear_param_store()
        model, guide = normal_pair(reparameterized, has_rsample)
        elbo = objective(name, 1, max_plate_nesting=1)
        if not pathwise and name != "vimco":
            with pytest.raises(ConfigError, match="use VIMCO"):
                elbo.loss_and_grads(model, guide)
            continue
        pyro.set_rng_seed(0)
        elbo.loss_and_grads(model, guide)
        params = dict(pyro.get_param_store().named_parameters())
        actual = {k: p.grad.detach() for k, p in params.items()}
        pyro.set_rng_seed(0)
        guide_tr = poutine.trace(guide).get_trace()
        model_tr = poutine.trace(poutine.replay(model, guide_tr)).get_trace()
        guide_tr.compute_log_prob()
        model_tr.compute_log_prob()
        for k, v in particle_gradient(name, pathwise, model_tr, guide_tr).items():
            torch.testing.assert_close(actual[k], v, atol=1e-4, rtol=1e-4, msg=name)


def particle_gradient(name, pathwise, model_tr, guide_tr):
    """The loss's gradient for the one draw of ``guide_tr``, by hand (Pyro's formulas)."""
    x, z = DATA, guide_tr.nodes["z"]["value"].detach()
    loc, scale = pyro.param("loc").detach(), pyro.param("scale").detach()
    if pathwise:
        dlogp_dz = -z + (x - z)
        if name in ("stl", "dreg", "miwae-dreg"):
            dlogp_dz = dlogp_dz + (z - loc) / scale**2  # - d log q(z) / dz, params fixed
            entropy = 0.0
        else:
            entropy = 1.0  # d/dscale of -log q(loc + scale eps) = 1 / scale
        return {
            "scale": -(dlogp_dz * (z - loc) + entropy).sum(0, keepdim=True) / scale,
            "loc": -dlogp_dz,
        }
    elbo = (
        model_tr.nodes["x"]["log_prob"]
        + model_tr.nodes["z"]["log_prob"]
        - guide_tr.nodes["z"]["log_prob"]
    ).detach()
    dlogq_dloc = (z - loc) / scale**2
    dlogq_dscale = (z - loc) ** 2 / scale**3 - 1 / scale
    # VIMCO's surrogate keeps the bound's own -d log q / d phi (mean zero): Pyro's
    # TraceEnum_ELBO branch of the same test
    return {
        "scale": -(dlogq_dscale * elbo - dlogq_dscale).sum(0, keepdim=True),
        "loc": -(dlogq_dloc * elbo - dlogq_dloc),
    }


def t_threshold(n, m, alpha=1e-3):
    """Student-t quantile for n - 1 degrees of freedom, Bonferroni over m coordinates."""
    from scipy.stats import t

    return float(t.ppf(1 - alpha / (2 * m), n - 1))


def mean_grads(elbo, model, guide, calls, subsample_size):
    """(calls, 3): the loss's gradient (loc_1, loc_2, scale) of each call; with a subsample
    of one, Pyro's protocol: one call per datapoint, summed and halved."""
    store = pyro.get_param_store()
    out = []
    for _ in range(calls):
        for p in store.values():
            p.unconstrained().grad = None
        if subsample_size == 1:
            elbo.loss_and_grads(model, guide, subsample=torch.tensor([0]))
            elbo.loss_and_grads(model, guide, subsample=torch.tensor([1]))
            norm = 2
        else:
            elbo.loss_and_grads(model, guide, subsample=torch.tensor([0, 1]))
            norm = 1
        grads = [store.get_param(k).unconstrained().grad.reshape(-1) for k in ("loc", "scale")]
        out.append(torch.cat(grads) / norm)
    return torch.stack(out)


#: each objective as an estimator of the ELBO's gradient: K vectorized particles averaged
#: (the mean of log w over the particles), or M groups of one particle (MIWAE family)
ELBO_GRADIENT = {
    "beta": lambda: ELBOS["beta"](2000, beta=1.0, max_plate_nesting=1),
    "ciwae": lambda: ELBOS["ciwae"](2000, beta=1.0, max_plate_nesting=1),
    "freebits": lambda: ELBOS["freebits"](2000, max_plate_nesting=1),
    "mmd": lambda: ELBOS["mmd"](2000, mmd_weight=0.0, max_plate_nesting=1),
    "renyi": lambda: ELBOS["renyi"](2000, alpha=1.0, max_plate_nesting=1),
    "stl": lambda: ELBOS["stl"](2000, max_plate_nesting=1),
    "iwae": lambda: ELBOS["miwae"](1, num_groups=2000, max_plate_nesting=1),
    "miwae": lambda: ELBOS["miwae"](1, num_groups=2000, max_plate_nesting=1),
    "piwae": lambda: ELBOS["piwae"](1, num_groups=2000, max_plate_nesting=1),
    "dreg": lambda: ELBOS["miwae-dreg"](1, num_groups=2000, max_plate_nesting=1),
    "miwae-dreg": lambda: ELBOS["miwae-dreg"](1, num_groups=2000, max_plate_nesting=1),
}


@pytest.mark.parametrize(
    "subsample_size, scale", [(2, 1.0), (1, 2.0)], ids=["full-unscaled", "subsample-scaled"]
)
def test_subsample_gradient_expectation(subsample_size, scale):
    # test_gradient.py::test_subsample_gradient: E[gradient of the loss] = scale * (0.5, -2.0)
    # for loc and scale * 2.0 for scale (the exact ELBO gradient at loc = 0, scale = 1);
    # under a subsample of one the scale N / B = 2 multiplies each datapoint's bound.
    # 8 calls of 2000 particles per objective; Student-t threshold over 3 coordinates.
    target = scale * torch.tensor([0.5, -2.0, 2.0])
    for name in NAMES:
        if name == "vimco":
            continue  # its expectation is the IWAE gradient: test_vimco_and_dreg_...
        model, guide = normal_pair(True, None, subsample_size)
        if scale != 1.0:
            model = poutine.scale(model, scale=scale)
            guide = poutine.scale(guide, scale=scale)
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        g = mean_grads(ELBO_GRADIENT[name](), model, guide, 8, subsample_size)
        se = g.std(0) / math.sqrt(len(g))
        z = ((g.mean(0) - target).abs() / se).max().item()
        assert z < t_threshold(len(g), 3), (name, g.mean(0), se)


def test_vimco_and_dreg_have_the_iwae_gradient_expectation_on_pyros_pair():
    # the same pair (test_gradient.py::test_subsample_gradient, full batch), three
    # particles: the IWAE_3 gradient's expectation is the MIWAE(K = 3, M) gradient's, M
    # groups in one call; DReG_3 is checked as MIWAE-DReG(3, M), VIMCO_3 (with the pair's
    # non-reparameterized twin, test_gradient.py's "nonreparam") call by call.
    def grads(elbo, reparameterized, calls):
        model, guide = normal_pair(reparameterized)
        pyro.clear_param_store()
        return mean_grads(elbo, model, guide, calls, 2)

    pyro.set_rng_seed(1)
    reference = grads(ELBOS["miwae"](3, num_groups=4000, max_plate_nesting=1), True, 8)
    pyro.set_rng_seed(2)
    dreg = grads(ELBOS["miwae-dreg"](3, num_groups=4000, max_plate_nesting=1), True, 8)
    pyro.set_rng_seed(3)
    vimco = grads(VIMCO(3, max_plate_nesting=1), False, 400)
    for g in (dreg, vimco):
        diff = (g.mean(0) - reference.mean(0)).abs()
        se = (g.var(0) / len(g) + reference.var(0) / len(reference)).sqrt()
        assert (diff / se).max() < t_threshold(8, 3), (g.mean(0), reference.mean(0), se)


# --- the evaluator -------------------------------------------------------------------------


def evaluator_pair(posterior):
    """test_gradient.py::test_particle_gradient's pair, adapted: the data passed as the
    argument (the evaluator's rows); the guide N(loc, scale) at loc = 0, scale = 1 as in
    Pyro, or at the exact posterior p(z | x) = N(x / 2, 1 / 2)."""

    def model(data):
        with pyro.plate("data", len(data)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=data)

    def guide(data):
        loc, scale = (data / 2, math.sqrt(0.5)) if posterior else (0.0 * data, 1.0)
        with pyro.plate("data", len(data)):
            pyro.sample("z", dist.Normal(loc, scale))

    return model, guide


def test_the_evaluator_gets_the_exact_log_likelihood_of_pyros_pair():
    # log p(x) = log N(x; 0, 2): every weight is p(x) under the exact posterior; under Pyro's
    # guide the estimate lies within 4 standard errors (delta method from the ESS:
    # se = sqrt(1 / ESS - 1 / K)) at K = 4000
    data = torch.tensor([-0.5, 2.0, 0.7, -1.3])
    exact = dist.Normal(0.0, math.sqrt(2.0)).log_prob(data).double()
    model, guide = evaluator_pair(posterior=True)
    result = importance_sample(model, guide, data, num_samples=5)
    torch.testing.assert_close(result.log_likelihood, exact, atol=1e-5, rtol=0)
    model, guide = evaluator_pair(posterior=False)
    k = 4000
    result = importance_sample(model, guide, data, num_samples=k)
    se = (1 / result.ess - 1 / k).sqrt()
    assert ((result.log_likelihood - exact).abs() < 4 * se).all(), (result, exact, se)


@pytest.mark.parametrize("where", ["global", "scaled"])
def test_the_evaluator_refuses_with_the_remedy(where):
    # test_valid_models.py::test_tail_adaptive_ok's plate_model (a global latent beside the
    # data plate) and test_reparam_scale_ok (a scaled likelihood), data as the argument
    def model(data):
        loc = pyro.sample("loc", dist.Normal(0.0, 1.0)) if where == "global" else 0.0
        with pyro.plate("data", len(data)):
            z = pyro.sample("z", dist.Normal(loc, 1.0))
            with poutine.scale(scale=0.1 if where == "scaled" else 1.0):
                pyro.sample("x", dist.Normal(z, 1.0), obs=data)

    def guide(data):
        if where == "global":
            pyro.sample("loc", dist.Normal(0.0, 2.0))
        with pyro.plate("data", len(data)):
            pyro.sample("z", dist.Normal(0.0, 1.0))

    with pytest.raises(ConfigError, match=GLOBAL if where == "global" else SCALES):
        importance_sample(model, guide, torch.tensor([0.5, -1.0]), num_samples=3)


def test_config_enumerate_guides_are_sampled_by_the_evaluator():
    # the evaluator samples a site its guide marks for enumeration (an importance sampler
    # may draw it), while the objectives refuse it (they would not enumerate it)
    data = torch.tensor([0.5, -1.0, 2.0])

    def model(data):
        with pyro.plate("data", len(data)):
            c = pyro.sample("c", dist.Bernoulli(0.5))
            pyro.sample("x", dist.Normal(2 * c - 1, 1.0), obs=data)

    @config_enumerate
    def guide(data):
        with pyro.plate("data", len(data)):
            pyro.sample("c", dist.Bernoulli(0.5))

    exact = (
        torch.stack([dist.Normal(v, 1.0).log_prob(data) for v in (-1.0, 1.0)]).logsumexp(0)
        - math.log(2)
    ).double()
    result = importance_sample(model, guide, data, num_samples=4000)
    se = (1 / result.ess - 1 / 4000).sqrt()
    assert ((result.log_likelihood - exact).abs() < 4 * se).all()
    with pytest.raises(ConfigError, match="configured for enumeration"):
        make_elbo("vimco", 2).loss_and_grads(model, guide, data)
