"""The amortization gap of any model/guide pair (:func:`pyrolvm.fitting.amortization_gap`),
its latent sites read from the traces: zero for the exact posterior as the guide, the exact
approximation gap of the mean-field family on the linear-Gaussian model, the same figures
whatever the sites are called, several sites, and one clear error for a pair whose sites do
not match."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from user_pairs import LinearGaussian, TutorialVAE, TwoLatentVAE, binary_data

from pyrolvm.errors import ConfigError
from pyrolvm.fitting import amortization_gap
from pyrolvm.inference import train


@pytest.fixture(autouse=True)
def fresh_store():
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


def mean_field_kl(pair):
    """KL(q* || p(z | x)) of the best diagonal Gaussian q* to the posterior N(m, S):
    q* has precisions diag(S^-1), and the KL is 0.5 (sum log diag(S^-1) - log det S^-1)."""
    _, cov = pair.posterior(pair.sample_data(1))
    precision = torch.linalg.inv(cov.double())
    return 0.5 * (precision.diagonal().log().sum() - torch.logdet(precision)).item(), precision


def test_exact_posterior_guide_has_no_gap():
    # the exact (full-covariance) posterior: every log-weight is log p(x), and the mean-field
    # q* is worse by KL = 0.11 nats per point, seven Monte Carlo standard errors of its ELBO
    # estimate at K = 1000 (sd of log w ~ 0.47): no point switches to q*
    pair = LinearGaussian(3, 2, noise=0.3, seed=1)
    x = pair.sample_data(20, seed=3)
    kl, _ = mean_field_kl(pair)
    assert kl > 0.1
    pyro.set_rng_seed(0)
    gap = amortization_gap(pair.model, pair.exact_guide, x, steps=100, lr=0.05)
    exact = pair.log_marginal(x).double()
    assert torch.allclose(gap.elbo_amortized, exact, atol=1e-4)
    assert torch.equal(gap.elbo_refined, gap.elbo_amortized)
    s = gap.summary()
    assert s["amortization_gap"] == 0.0 and abs(s["inference_gap"]) < 1e-4


def test_refined_mean_field_reaches_the_exact_approximation_gap():
    # an untrained linear encoder: refinement reaches the best diagonal Gaussian of each
    # point, whose ELBO is log p(x) - KL(q* || posterior), the same KL for every point
    pair = LinearGaussian(3, 2, noise=0.3, seed=1)
    x = pair.sample_data(20, seed=3)
    kl, precision = mean_field_kl(pair)
    pyro.set_rng_seed(0)
    gap = amortization_gap(pair.model, pair.amortized_guide, x, steps=600, lr=0.1, num_particles=20)
    loc, _ = pair.posterior(x)
    assert torch.allclose(gap.loc["latent"].double(), loc.double(), atol=0.03)
    sd = precision.diagonal().rsqrt().expand(len(x), 2)
    # the scales converge more slowly than the means (SVI noise; 2 % here at two seeds)
    ratio = gap.scale["latent"].double() / sd
    assert (ratio - 1).abs().max() < 0.15 and (ratio.mean() - 1).abs() < 0.05, ratio
    exact = pair.log_marginal(x).double()
    # ELBO* per point: K = 1000 draws, sd of log w about 0.47: stderr 0.015; SVI's own
    # shortfall from the optimum is of the same order
    assert (gap.elbo_refined - (exact - kl)).abs().max() < 0.06
    s = gap.summary()
    assert s["approximation_gap"] == pytest.approx(kl, abs=0.02)
    assert s["amortization_gap"] > 0.5  # the untrained encoder is far from every posterior
    assert s["inference_gap"] == pytest.approx(s["approximation_gap"] + s["amortization_gap"])
    assert not [k for k in pyro.get_param_store() if k.startswith("amortization_gap")]


class RenamedVAE(TutorialVAE):
    """The tutorial pair with its latent site called "z": the same networks and draws."""

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior_dist(x))
            pyro.sample("obs", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            loc, scale = self.encoder(x)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))


def test_the_gap_does_not_depend_on_the_sites_names():
    # the tutorial's site "latent" once got 8-11 nats from a guide built for "z" (the model
    # drew "latent" from its prior); now both names give the same figures, bit for bit
    torch.manual_seed(0)
    x = binary_data(60)
    vae = TutorialVAE()
    pyro.set_rng_seed(0)
    train(vae.model, vae.guide, x, epochs=20, batch_size=20, progress=False)
    renamed = RenamedVAE()
    renamed.load_state_dict(vae.state_dict())
    figures = []
    for pair in (vae, renamed):
        pyro.set_rng_seed(1)
        figures.append(
            amortization_gap(pair.model, pair.guide, x[:12], steps=60, lr=0.05, eval_samples=200)
        )
    assert set(figures[0].loc) == {"latent"} and set(figures[1].loc) == {"z"}
    assert figures[0].summary() == figures[1].summary()
    s = figures[0].summary()
    assert 0 <= s["amortization_gap"] < 1.0 and s["approximation_gap"] > -0.05


@pytest.mark.parametrize("hierarchical", [False, True])
def test_two_latent_sites(hierarchical):
    torch.manual_seed(0)
    pair, x = TwoLatentVAE(hierarchical=hierarchical), binary_data(8)
    pyro.set_rng_seed(0)
    gap = amortization_gap(pair.model, pair.guide, x, steps=30, lr=0.05, eval_samples=100)
    assert set(gap.loc) == {"z1", "z2"}
    assert gap.loc["z1"].shape == gap.scale["z2"].shape == (8, 2)
    assert (gap.elbo_refined >= gap.elbo_amortized).all()
    s = gap.summary()
    assert s["inference_gap"] == pytest.approx(s["approximation_gap"] + s["amortization_gap"])


def test_a_guide_whose_sites_do_not_match_the_model_is_refused():
    vae, x = TutorialVAE(), binary_data(6)
    renamed = RenamedVAE()
    with pytest.raises(ConfigError, match=r"\['z'\].*\['latent'\]"):
        amortization_gap(vae.model, renamed.guide, x, steps=1)
    with pytest.raises(ConfigError, match="steps >= 0"):
        amortization_gap(vae.model, vae.guide, x, steps=-1)


def test_tensors_are_made_where_the_data_lies():
    from test_devices import assert_on_cpu, stray_tensors_on_meta

    vae, x = TutorialVAE(), binary_data(6)
    with stray_tensors_on_meta():
        gap = amortization_gap(vae.model, vae.guide, x, steps=3, eval_samples=10)
    assert_on_cpu(gap.elbo_refined, gap.loc["latent"], gap.scale["latent"])
