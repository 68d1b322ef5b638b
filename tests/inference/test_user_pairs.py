"""Model/guide pairs written as users write them (tests/user_pairs.py) through `train` with
every objective of the registry and through the evaluator, against exact (linear-Gaussian)
or full-batch references; and each misuse of issue 27 that used to give a silently wrong
number (site names that do not match, a plate that subsamples, a model without a plate, stale
parameters, a non-amortized guide on shuffled rows, a joint autoguide) refused with one
clear error that says what to do.

Every test here turns Pyro's UserWarnings into errors: where Pyro only warns, our check
must speak first."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO
from user_pairs import (
    GaussianScaleVAE,
    IndexedLinearGaussian,
    LinearGaussian,
    SubsampledLinearGaussian,
    TutorialVAE,
    TwoLatentVAE,
    UnplatedLinearGaussian,
    autoguide_pair,
    autonormal_pair,
    binary_data,
)

from pyrolvm.errors import ConfigError
from pyrolvm.inference import (
    ELBOS,
    check_pair,
    check_pair_traces,
    importance_sample,
    make_elbo,
    make_optim,
    trace_pair,
    train,
)

pytestmark = pytest.mark.filterwarnings("error::UserWarning")

N = 20


def _pairs():
    """name -> () -> (model, guide, data, train keyword arguments): one user pair each."""

    def vae(cls, **options):
        def make():
            net = cls(**options)
            return net.model, net.guide, binary_data(N), {}

        return make

    def linear(dtype=None):
        def make():
            pair = LinearGaussian(dtype=dtype)
            return pair.model, pair.amortized_guide, pair.sample_data(N), {}

        return make

    def subsampled():
        pair = SubsampledLinearGaussian()  # the pair takes all N rows; its plate takes 5
        return pair.model, pair.exact_guide, pair.sample_data(N), {"batch_size": N}

    def indexed():
        pair = IndexedLinearGaussian(num_data=N)
        return pair.model, pair.amortized_guide, (pair.sample_data(N), torch.arange(N)), {}

    def auto(make_pair):
        def make():
            model, guide, x, _ = make_pair(N)
            return model, guide, x, {"batch_size": N, "shuffle": False}

        return make

    return {
        "tutorial": vae(TutorialVAE),
        "laplace_prior": vae(TutorialVAE, prior="laplace"),
        "gaussian_scale": vae(GaussianScaleVAE),
        "two_latent_flat": vae(TwoLatentVAE),
        "two_latent_hierarchical": vae(TwoLatentVAE, hierarchical=True),
        "linear_gaussian": linear(),
        "linear_gaussian_float64": linear(torch.float64),
        "subsampled": subsampled,
        "indexed": indexed,
        "auto_diagonal_normal": auto(autoguide_pair),
        "auto_normal": auto(autonormal_pair),
    }


PAIRS = _pairs()

#: Multi-sample objectives (per-datapoint importance weights): AutoDiagonalNormal draws all
#: datapoints' latents as one vector, which they cannot split.
MULTI_SAMPLE = sorted(set(ELBOS) - {"trace", "meanfield", "tracegraph"})
REFUSED = {
    **{("auto_diagonal_normal", name): "jointly" for name in MULTI_SAMPLE},
    # q(z2 | z1) is not mean-field: TraceMeanField_ELBO's analytic KL would be biased
    ("two_latent_hierarchical", "meanfield"): "mean-field guide",
}


@pytest.mark.parametrize("objective", sorted(ELBOS))
@pytest.mark.parametrize("pair_name", sorted(PAIRS))
def test_every_user_pair_trains_with_every_objective_or_is_refused_clearly(pair_name, objective):
    model, guide, data, options = PAIRS[pair_name]()
    options = {"batch_size": 10, **options}  # two steps, or one for the full-batch pairs
    loss = make_elbo(objective, 2)
    if (pair_name, objective) in REFUSED:
        with pytest.raises(ConfigError, match=REFUSED[pair_name, objective]):
            train(model, guide, data, loss, epochs=1, progress=False, **options)
        return
    trace_pair(model, guide, *(data if isinstance(data, tuple) else (data,)))  # creates them
    before = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
    history = train(model, guide, data, loss, make_optim(1e-2), progress=False, **options)
    assert len(history["train_elbo"]) == 1 and math.isfinite(history["train_elbo"][0])
    after = dict(pyro.get_param_store().items())
    assert after.keys() == before.keys()
    if before:  # the pair trains (the subsampled pair's exact guide has no parameters)
        assert any(not torch.equal(before[k], after[k]) for k in before)


# ---- item 1: site names ----------------------------------------------------------------


@pytest.mark.parametrize("objective", ["trace", "iwae", "dreg", "vimco", "renyi"])
def test_a_guide_whose_site_names_differ_from_the_model_is_refused_by_train(objective):
    # The guide samples "z" while the model samples "latent": Pyro only warns (once per
    # process) and the model then draws "latent" from its prior.
    pair = LinearGaussian()
    x = pair.sample_data(N)
    with pytest.raises(ConfigError, match=r"model's latent sites are 'latent'.*guide's.*'z'"):
        train(pair.model, pair.misnamed_guide, x, make_elbo(objective, 2), progress=False)


def test_a_guide_whose_site_names_differ_from_the_model_is_refused_by_the_evaluator():
    pair = LinearGaussian()
    x = pair.sample_data(N)
    for _ in range(2):  # every time, not once per process as Pyro's warning
        with pytest.raises(ConfigError, match=r"'latent' \(event shape \(2,\)\).*'z'"):
            importance_sample(pair.model, pair.misnamed_guide, x, num_samples=10)


def test_check_pair_names_both_sets_of_sites_and_shapes_and_allows_auxiliary_sites():
    pair = LinearGaussian()
    x = pair.sample_data(N)
    model_trace, guide_trace = check_pair(pair.model, pair.exact_guide, x)
    assert "latent" in guide_trace.nodes and model_trace.nodes["obs"]["is_observed"]
    check_pair(pair.model, pair.auxiliary_guide, x, per_datapoint=True)  # allowed, as by Pyro

    def wide_guide(x):  # event shape (3,) where the model's is (2,)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("latent", dist.Normal(x.new_zeros(x.shape[0], 3), 1.0).to_event(1))

    with pytest.raises(ConfigError, match=r"shapes disagree.*'latent' \(event shape \(3,\)\)"):
        check_pair(pair.model, wide_guide, x)
    # on traces a user made (the diagnostics' way in)
    traces = trace_pair(pair.model, pair.misnamed_guide, x)
    with pytest.raises(ConfigError, match="guide but not model"):
        check_pair_traces(traces.model_trace, traces.guide_trace)


def test_an_auxiliary_guide_site_gives_the_exact_log_likelihood():
    # u ~ p(z | x) at an auxiliary site, latent = u by a Delta: every weight is log p(x).
    pair = LinearGaussian()
    x = pair.sample_data(N)
    result = importance_sample(pair.model, pair.auxiliary_guide, x, num_samples=20, batch_size=7)
    torch.testing.assert_close(
        result.log_likelihood, pair.log_marginal(x).double(), atol=1e-4, rtol=0
    )


# ---- item 2: subsampled plates -----------------------------------------------------------


@pytest.mark.parametrize("batch_size, chunk_size", [(N, None), (7, 3), (1, 4)])
def test_the_evaluator_gives_each_row_its_own_exact_value(batch_size, chunk_size):
    # The exact posterior as guide: every importance weight equals log p(x_n), so any
    # misalignment of rows across batches or particle chunks shows as a wrong value.
    pair = LinearGaussian()
    x = pair.sample_data(N)
    exact = pair.log_marginal(x).double()
    result = importance_sample(
        pair.model,
        pair.exact_guide,
        x,
        num_samples=10,
        batch_size=batch_size,
        chunk_size=chunk_size,
    )
    torch.testing.assert_close(result.log_likelihood, exact, atol=1e-4, rtol=0)
    # a plate given the rows' indices (subsample=idx): the same values, in the same order
    indexed = IndexedLinearGaussian(num_data=N)
    result = importance_sample(
        indexed.model,
        indexed.exact_guide,
        (x, torch.arange(N)),
        num_samples=10,
        batch_size=batch_size,
        chunk_size=chunk_size,
    )
    torch.testing.assert_close(result.log_likelihood, exact, atol=1e-4, rtol=0)


def test_a_plate_that_subsamples_at_random_is_refused_by_the_evaluator_with_the_remedy():
    pair = SubsampledLinearGaussian(subsample_size=5)
    x = pair.sample_data(N)
    with pytest.raises(ConfigError, match=r"random subsample of 5 of its 20 rows.*subsample=idx"):
        importance_sample(pair.model, pair.exact_guide, x, num_samples=10)


@pytest.mark.parametrize("objective", ["trace", "iwae", "renyi", "stl"])
def test_train_reports_per_datapoint_values_under_a_subsample_plate(objective):
    # subsample=idx over minibatches of 7, 7, 6 rows: Pyro scales each loss by N / B. With the
    # exact guide every bound equals log p(x) exactly, so the epoch's value is the mean of the
    # exact log p(x_n) (before this fix: N / B times it).
    pair = IndexedLinearGaussian(num_data=N)
    x = pair.sample_data(N)
    exact = pair.log_marginal(x).mean().item()
    history = train(
        pair.model,
        pair.exact_guide,
        (x, torch.arange(N)),
        make_elbo(objective, 2),
        epochs=2,
        batch_size=7,
        progress=False,
    )
    assert history["train_elbo"] == pytest.approx([exact, exact], abs=1e-4)


def test_train_reports_per_datapoint_values_under_a_random_subsample_plate():
    # The pair takes all N rows and its plate draws 5 at random (scale N / 5): each epoch's
    # value is the mean exact log p(x_n) over 5 random rows. Over E epochs the mean of those
    # is within 4 standard errors (sd of log p(x_n) / sqrt(5 E); sampling without
    # replacement only makes it smaller) of the mean over all N rows.
    pair = SubsampledLinearGaussian(subsample_size=5)
    x = pair.sample_data(N)
    log_p = pair.log_marginal(x)
    epochs = 40
    history = train(pair.model, pair.exact_guide, x, epochs=epochs, batch_size=N, progress=False)
    values = torch.tensor(history["train_elbo"])
    stderr = log_p.std().item() / math.sqrt(5 * epochs)
    assert abs(values.mean().item() - log_p.mean().item()) < 4 * stderr
    assert values.min() >= log_p.min() - 1e-4 and values.max() <= log_p.max() + 1e-4


# ---- item 12: one estimate per row ---------------------------------------------------------


def test_a_model_without_a_plate_over_the_rows_is_refused_by_the_evaluator():
    pair = UnplatedLinearGaussian()
    x = pair.sample_data(7)
    with pytest.raises(ConfigError, match=r"one importance weight per row.*pyro.plate"):
        importance_sample(pair.model, pair.exact_guide, x, num_samples=10, batch_size=3)


# ---- item 4: stale parameters -------------------------------------------------------------


def test_a_second_pair_without_clear_param_store_is_refused_naming_the_fix():
    x = binary_data(N)
    first = TutorialVAE()
    train(first.model, first.guide, x, epochs=1, batch_size=10, progress=False)
    second = TutorialVAE()  # fresh networks, the same names in pyro.module
    with pytest.raises(ConfigError, match=r"'encoder\$\$\$fc1.weight'.*pyro.clear_param_store"):
        train(second.model, second.guide, x, epochs=1, batch_size=10, progress=False)
    # the README's pattern: clear the store, then the second pair trains
    pyro.clear_param_store()
    weight = second.encoder.fc1.weight.detach().clone()
    train(second.model, second.guide, x, epochs=1, batch_size=10, progress=False)
    assert not torch.equal(weight, second.encoder.fc1.weight)
    # and the same pair trained again continues, as before
    train(second.model, second.guide, x, epochs=1, batch_size=10, progress=False)


def test_a_module_that_takes_the_stored_values_is_not_stale():
    # pyro.module(..., update_module_params=True) loads the store's tensors into the network
    # (e.g. a param store loaded from disk): it trains them.
    x = binary_data(N)
    first = TutorialVAE()
    train(first.model, first.guide, x, epochs=1, batch_size=10, progress=False)
    second = TutorialVAE()

    def guide(x):
        pyro.module("encoder", second.encoder, update_module_params=True)
        first.guide(x)

    train(first.model, guide, x, epochs=1, batch_size=10, progress=False)
    assert second.encoder.fc1.weight is pyro.param("encoder$$$fc1.weight")


# ---- item 5 and item 9: shuffling, non-amortized guides ------------------------------------


def test_train_keeps_the_row_order_when_shuffle_is_false():
    seen = []
    pair = LinearGaussian()

    def model(x, index):
        seen.append(index.clone())
        pair.model(x)

    x = pair.sample_data(N)
    train(
        model,
        lambda x, index: pair.amortized_guide(x),
        (x, torch.arange(N)),
        epochs=2,
        batch_size=6,
        shuffle=False,
        progress=False,
    )
    order = torch.cat(seen[1:])  # the first call is the check of the pair
    assert order.tolist() == list(range(N)) * 2


def test_a_per_datapoint_autoguide_on_shuffled_rows_or_minibatches_is_refused():
    model, guide, x, _ = autoguide_pair(N)
    with pytest.raises(ConfigError, match=r"per datapoint.*batch_size=20, shuffle=False"):
        train(model, guide, x, batch_size=N, progress=False)  # shuffle=True by default
    with pytest.raises(ConfigError, match=r"per datapoint.*shuffle=False"):
        train(model, guide, x, batch_size=5, shuffle=False, progress=False)


def _mean_field_kl(pair, x, guide):
    """Exact KL(q || p(z | x)) summed over the rows, for a diagonal Gaussian guide whose
    per-datapoint (loc, scale) are ``guide.median`` / ``guide.quantiles``; and the least such
    KL any diagonal Gaussian reaches (q's variances the inverse of the posterior precision's
    diagonal, its means the posterior's), in nats."""
    loc_post, cov = pair.posterior(x)
    post = dist.MultivariateNormal(loc_post, cov)
    with torch.no_grad():
        loc = guide.median(x)["latent"]
        q84 = guide.quantiles([0.8413447460685429], x)["latent"][0]
        q = dist.MultivariateNormal(loc, torch.diag_embed((q84 - loc) ** 2))
        kl = torch.distributions.kl_divergence(q, post).sum().item()
    precision = torch.linalg.inv(cov)
    best = 0.5 * (precision.diagonal().log().sum() - torch.logdet(precision)).item() * len(x)
    return kl, best


@pytest.mark.parametrize("make_pair", [autoguide_pair, autonormal_pair])
def test_a_per_datapoint_autoguide_trains_on_rows_in_order(make_pair):
    # The classic non-amortized SVI setting, Pyro's autoguide over model(x): trained with
    # shuffle=False on all rows, the guide reaches the best diagonal Gaussian of each row's
    # posterior. Converged here means an exact KL(q || p(z | x)) within 0.05 nats per
    # datapoint of the best possible (an optimization tolerance: 300 Adam steps of 32
    # particles leave 0.012-0.017 per datapoint at seeds 0-3, as plain pyro.infer.SVI does);
    # the same parameters matched to the wrong rows are nats away.
    pair = LinearGaussian()
    x = pair.sample_data(N)
    model, guide, _, _ = make_pair(N)
    train(
        model,
        guide,
        x,
        make_elbo("trace", 32),
        make_optim(0.05),
        epochs=300,
        batch_size=N,
        shuffle=False,
        progress=False,
    )
    kl, best = _mean_field_kl(pair, x, guide)
    assert best <= kl + 1e-4 and kl - best < 0.05 * N
    misaligned, _ = _mean_field_kl(pair, x.roll(1, 0), guide)
    assert misaligned - best > 0.5 * N


def test_auto_diagonal_normal_is_refused_by_the_evaluator_naming_auto_normal():
    model, guide, x, _ = autoguide_pair(N)
    train(model, guide, x, epochs=2, batch_size=N, shuffle=False, progress=False)
    with pytest.raises(ConfigError, match=r"jointly.*AutoNormal") as info:
        importance_sample(model, guide, x, num_samples=10)
    assert "global latent" not in str(info.value)


def test_auto_normal_gives_the_exact_log_likelihood_within_standard_errors():
    # Trained on the rows in order, AutoNormal is a diagonal Gaussian per datapoint, close to
    # the posterior: importance sampling with K = 2000 recovers log p(x_n) of every row within
    # 5 of its standard errors, sqrt((K / ESS - 1) / K) by the delta method.
    model, guide, x, exact = autonormal_pair(N)
    train(
        model,
        guide,
        x,
        epochs=300,
        batch_size=N,
        shuffle=False,
        optim=make_optim(0.05),
        progress=False,
    )
    k = 2000
    result = importance_sample(model, guide, x, num_samples=k, batch_size=N)
    stderr = ((k / result.ess - 1).clamp(min=0) / k).sqrt()
    error = (result.log_likelihood - exact.double()).abs()
    assert (error < 5 * stderr + 1e-6).all(), (error / stderr).max()
    # in smaller batches its parameters (one per row of all N) cannot be matched: refused
    with pytest.raises(ConfigError, match=r"shapes disagree.*batch_size=N"):
        importance_sample(model, guide, x, num_samples=10, batch_size=7)


# ---- the evaluator on the zoo, against a full-batch reference --------------------------------


@pytest.mark.parametrize(
    "pair_name",
    [
        "tutorial",
        "laplace_prior",
        "gaussian_scale",
        "two_latent_flat",
        "two_latent_hierarchical",
        "linear_gaussian",
        "linear_gaussian_float64",
    ],
)
def test_the_evaluator_matches_its_full_batch_reference_row_by_row(pair_name):
    # One batch of all N rows (the reference) against batches of 3 rows and particle chunks
    # of 7: per row, the two estimates differ by less than 5 combined standard errors
    # (sqrt((K / ESS - 1) / K) each, delta method). Rows misaligned across batches or chunks
    # would mix different datapoints.
    model, guide, data, options = PAIRS[pair_name]()
    train(
        model,
        guide,
        data,
        loss=Trace_ELBO(),
        epochs=20,
        optim=make_optim(1e-2),
        progress=False,
        **{"batch_size": 10, **options},
    )
    k = 400
    pyro.set_rng_seed(1)
    reference = importance_sample(model, guide, data, num_samples=k, batch_size=N)
    pyro.set_rng_seed(2)
    chunked = importance_sample(model, guide, data, num_samples=k, batch_size=3, chunk_size=7)
    assert chunked.log_likelihood.shape == (N,)

    def stderr(r):
        return (k / r.ess - 1).clamp(min=0) / k

    combined = (stderr(reference) + stderr(chunked)).sqrt()
    difference = (reference.log_likelihood - chunked.log_likelihood).abs()
    assert (difference < 5 * combined + 1e-6).all(), (difference / combined).max()
