"""Latent diagnostics of any model/guide pair (:func:`pyrolvm.inference.latent_diagnostics`),
on pairs written as users write them (tests/user_pairs.py), against exact answers: the
closed-form KL of a diagonal Gaussian to N(0, I) and to a Laplace prior, the joint Gaussian KL
of a two-site chain whose guide samples z2 given z1, the linear-Gaussian model's mutual
information and log p(x). Monte Carlo figures are checked within 4 of their own standard
errors (a two-sided normal tail of 6e-5 per check, at fixed seeds)."""

import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from user_pairs import LinearGaussian, TutorialVAE, TwoLatentVAE, binary_data

from pyrolvm.errors import ConfigError
from pyrolvm.inference import latent_diagnostics, latent_summary


def encoder_outputs(vae, x):
    with torch.no_grad():
        return vae.encoder(x)


@pytest.fixture(autouse=True)
def fresh_store():
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


def test_closed_form_rate_of_the_tutorial_pair_is_the_normal_normal_kl():
    torch.manual_seed(0)
    vae, x = TutorialVAE(), binary_data(120)
    d = latent_diagnostics(vae.model, vae.guide, x, num_samples=10, seed=0)
    loc, scale = encoder_outputs(vae, x)
    exact = (0.5 * (loc.pow(2) + scale.pow(2) - 1) - scale.log()).double()  # (N, L)
    site = d.sites["latent"]  # the site's own name, not "z"
    assert site.closed_form and d.rate_stderr == 0.0
    assert torch.allclose(site.kl_per_dim, exact.mean(0), rtol=1e-5, atol=1e-7)
    assert d.rate == pytest.approx(exact.sum(-1).mean().item(), rel=1e-5)
    # the activity is the variance over x of the guide's mean, as the tensor function has it
    old = latent_summary(loc, scale)
    assert torch.allclose(site.activity, torch.tensor(old["activity"]).double(), rtol=1e-4)
    assert d.active_units == old["active_units"]
    s = d.summary()
    assert s["rate_method"] == "closed form" and s["latent_sites"]["latent"]["dims"] == 4


def laplace_kl(loc, scale):
    """KL(N(m, s^2) || Laplace(0, 1)) per element: -H[q] + log 2 + E_q|z|, with the folded
    normal's mean E|z| = s sqrt(2/pi) exp(-m^2 / 2s^2) + m erf(m / (s sqrt 2))."""
    loc, scale = loc.double(), scale.double()
    abs_mean = scale * math.sqrt(2 / math.pi) * torch.exp(-0.5 * (loc / scale) ** 2) + loc * (
        torch.erf(loc / (scale * math.sqrt(2)))
    )
    entropy = 0.5 * torch.log(2 * math.pi * math.e * scale**2)
    return -entropy + math.log(2) + abs_mean


def test_laplace_prior_rate_closed_form_and_monte_carlo():
    torch.manual_seed(1)
    vae, x = TutorialVAE(prior="laplace"), binary_data(150)
    with torch.no_grad():  # a guide away from the prior, as after training
        vae.encoder.fc21.bias.add_(torch.tensor([1.5, -1.0, 0.5, 0.0]))
    loc, scale = encoder_outputs(vae, x)
    exact = laplace_kl(loc, scale).sum(-1).mean().item()
    closed = latent_diagnostics(vae.model, vae.guide, x, num_samples=10, seed=0)
    assert closed.sites["latent"].closed_form
    assert closed.rate == pytest.approx(exact, rel=1e-5)
    mc = latent_diagnostics(vae.model, vae.guide, x, num_samples=400, seed=0, closed_form=False)
    assert not mc.sites["latent"].closed_form and mc.summary()["rate_method"] == "monte carlo"
    assert 0 < mc.rate_stderr < 0.05
    assert abs(mc.rate - exact) < 4 * mc.rate_stderr
    assert torch.allclose(mc.sites["latent"].kl_per_dim, laplace_kl(loc, scale).mean(0), atol=0.05)
    # the N(0, I) formula of latent_summary is not this rate: the test tells them apart
    assert abs(latent_summary(loc, scale)["rate"] - exact) > 20 * mc.rate_stderr


def test_two_latent_sites_flat_closed_form_agrees_with_monte_carlo():
    torch.manual_seed(2)
    pair, x = TwoLatentVAE(hierarchical=False), binary_data(100)
    closed = latent_diagnostics(pair.model, pair.guide, x, num_samples=10, seed=0)
    mc = latent_diagnostics(pair.model, pair.guide, x, num_samples=300, seed=1, closed_form=False)
    assert set(closed.sites) == {"z1", "z2"} and closed.rate_stderr == 0
    for name in ("z1", "z2"):
        a, b = closed.sites[name], mc.sites[name]
        assert a.closed_form and not b.closed_form
        assert abs(a.kl - b.kl) < 4 * b.kl_stderr
    assert len(closed.summary()["kl_per_dim"]) == 4 and len(closed.summary()["activity"]) == 4


class GaussianChain:
    """A two-site chain with joint Gaussian answers: p(z2) = N(0, 1), p(z1 | z2) = N(a z2,
    s^2), p(x | z1) = N(z1, sigma^2); the guide q(z1 | x) = N(u x + v, t1^2), q(z2 | z1) =
    N(c z1, t2^2): z2 is drawn given z1 in the guide and z1 given z2 in the model, so no
    site's KL has a closed form of its own; the joint q(z1, z2 | x) and p(z1, z2) are
    Gaussian, so the rate is the KL of two bivariate Gaussians."""

    a, s, sigma, u, v, t1, c, t2 = 0.8, 0.6, 0.5, 0.7, 0.2, 0.4, 0.5, 0.7

    def model(self, x):
        with pyro.plate("rows", x.shape[0]):
            z2 = pyro.sample("z2", dist.Normal(x.new_zeros(x.shape[0]), 1.0))
            z1 = pyro.sample("z1", dist.Normal(self.a * z2, self.s))
            pyro.sample("x", dist.Normal(z1, self.sigma), obs=x)

    def guide(self, x):
        with pyro.plate("rows", x.shape[0]):
            z1 = pyro.sample("z1", dist.Normal(self.u * x + self.v, self.t1))
            pyro.sample("z2", dist.Normal(self.c * z1, self.t2))

    def exact(self, x):
        """(rate per point, distortion per point), nats."""
        x = x.double()
        mean_q = torch.stack([self.u * x + self.v, self.c * (self.u * x + self.v)], -1)
        cov_q = torch.tensor(
            [
                [self.t1**2, self.c * self.t1**2],
                [self.c * self.t1**2, self.c**2 * self.t1**2 + self.t2**2],
            ],
            dtype=torch.float64,
        )
        cov_p = torch.tensor([[self.a**2 + self.s**2, self.a], [self.a, 1.0]], dtype=torch.float64)
        q = dist.MultivariateNormal(mean_q, cov_q)
        p = dist.MultivariateNormal(torch.zeros(2, dtype=torch.float64), cov_p)
        rate = torch.distributions.kl_divergence(q, p)
        m = self.u * x + self.v
        distortion = 0.5 * math.log(2 * math.pi * self.sigma**2) + ((x - m) ** 2 + self.t1**2) / (
            2 * self.sigma**2
        )
        return rate, distortion


def test_dependent_sites_monte_carlo_against_the_joint_gaussian_kl():
    chain = GaussianChain()
    x = torch.randn(200, generator=torch.Generator().manual_seed(0)).to(torch.get_default_dtype())
    d = latent_diagnostics(chain.model, chain.guide, x, num_samples=200, seed=0)
    assert not d.sites["z1"].closed_form and not d.sites["z2"].closed_form
    rate, distortion = chain.exact(x)
    assert abs(d.rate - rate.mean().item()) < 4 * d.rate_stderr
    assert abs(d.distortion - distortion.mean().item()) < 4 * d.distortion_stderr
    # activity: E_q[z1 | x] = u x + v exactly (the guide's own mean); E_q[z2 | x] = c (u x +
    # v) from the draws, their Monte Carlo variance removed: both Var_x of the exact means
    exact_z1 = (chain.u * x.double()).var().item()
    assert d.sites["z1"].activity.item() == pytest.approx(exact_z1, rel=1e-6)
    # Var_x of the draws' mean is Var_x(c u x) + (c^2 t1^2 + t2^2) / K; the correction
    # leaves an error of about sqrt(2 / N) * 0.62 / K = 3e-4
    assert d.sites["z2"].activity.item() == pytest.approx(chain.c**2 * exact_z1, abs=0.003)


def test_linear_gaussian_exact_guide_rate_elbo_and_mutual_information():
    lg = LinearGaussian(3, 2, noise=0.3, seed=1)
    x = lg.sample_data(1500, seed=2)
    exact_mi = 0.5 * torch.logdet(torch.eye(2) + lg.W.T @ lg.W / lg.noise**2).item()
    estimates = []
    for seed in range(3):
        d = latent_diagnostics(
            lg.model, lg.exact_guide, x, num_samples=20, mi_points=1500, seed=seed
        )
        estimates.append(d.mutual_information)
    # with x ~ p(x) and the exact posterior, I_q(x; z) is I(x; z); the estimate's spread is
    # about 0.025 over samples of the M = 1500 points (sd of the per-point terms / sqrt(M))
    # and 0.02 / sqrt(3) over the three seeds of the draws: 0.1 is 4 of their combined sd
    assert sum(estimates) / 3 == pytest.approx(exact_mi, abs=0.1), (estimates, exact_mi)
    # a multivariate-normal guide against N(0, I): no registered KL, the Monte Carlo rate
    loc, cov = lg.posterior(x)
    post = dist.MultivariateNormal(loc.double(), cov.double())
    prior = dist.MultivariateNormal(torch.zeros(2).double(), torch.eye(2).double())
    exact_rate = torch.distributions.kl_divergence(post, prior).mean().item()
    assert not d.sites["latent"].closed_form and d.sites["latent"].kl_per_dim is None
    assert abs(d.rate - exact_rate) < 4 * d.rate_stderr
    # every log-weight is log p(x): -(rate + distortion) is the exact log p(x) on any draws
    assert d.elbo == pytest.approx(lg.log_marginal(x).double().mean().item(), abs=1e-4)


def test_activity_of_a_guide_without_a_mean_is_corrected_for_its_draws():
    # a guide whose distribution has no .mean (a transformed distribution): the activity
    # comes from the K draws, their Monte Carlo variance subtracted; uncorrected, the
    # collapsed unit would show 1 / K = 0.01, the activity threshold itself
    n, k = 400, 100
    x = torch.randn(n, generator=torch.Generator().manual_seed(3)).to(torch.get_default_dtype())

    def model(x):
        with pyro.plate("data", len(x)):
            zeros = x.new_zeros(len(x), 2)
            pyro.sample("latent", dist.Normal(zeros, 1.0).to_event(1))
            pyro.sample("obs", dist.Normal(x, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", len(x)):
            loc = torch.stack([x, torch.zeros_like(x)], -1)
            base = dist.Normal(torch.zeros_like(loc), torch.ones_like(loc))
            affine = dist.transforms.AffineTransform(loc, 1.0)
            pyro.sample("latent", dist.TransformedDistribution(base, [affine]).to_event(1))

    d = latent_diagnostics(model, guide, x, num_samples=k, seed=0, mi_points=0)
    activity = d.sites["latent"].activity
    # unit 0: Var_x(x) +- about sqrt(2 / N) = 0.07 relative; unit 1: 0 +- sqrt(2 / N) / K
    assert activity[0].item() == pytest.approx(x.double().var().item(), rel=0.02)
    assert activity[1].item() < 0.003
    assert d.active_units == 1 and math.isnan(d.mutual_information) and d.mi_points == 0


def test_site_names_that_do_not_match_get_one_clear_error_and_no_pyro_warning():
    vae, x = TutorialVAE(), binary_data(10)

    def guide_z(x):
        pyro.module("encoder", vae.encoder)
        with pyro.plate("data", x.shape[0]):
            loc, scale = vae.encoder(x)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ConfigError, match=r"\['z'\].*\['latent'\]"):
            latent_diagnostics(vae.model, guide_z, x)


def test_bad_arguments_and_sites_outside_the_batch_plate():
    vae, x = TutorialVAE(), binary_data(10)
    with pytest.raises(ConfigError, match="num_samples"):
        latent_diagnostics(vae.model, vae.guide, x, num_samples=1)
    with pytest.raises(ConfigError, match="N >= 2"):
        latent_diagnostics(vae.model, vae.guide, x[:1])

    def model(x):
        g = pyro.sample("g", dist.Normal(x.new_zeros(()), 1.0))
        with pyro.plate("data", len(x)):
            pyro.sample("obs", dist.Normal(g.unsqueeze(-1) + 0 * x, 1.0).to_event(1), obs=x)

    def guide(x):
        pyro.sample("g", dist.Normal(x.new_zeros(()), 1.0))

    with pytest.raises(ConfigError, match="batch plate"):
        latent_diagnostics(model, guide, x)


def test_tensors_are_made_where_the_data_lies():
    # torch's default device set to meta (tests/test_devices.py): a tensor the diagnostics
    # made without the data's device would fail or come back on meta
    from test_devices import assert_on_cpu, stray_tensors_on_meta

    pair, x = TwoLatentVAE(hierarchical=True), binary_data(20)
    with stray_tensors_on_meta():
        d = latent_diagnostics(pair.model, pair.guide, x, num_samples=5, seed=0)
    assert math.isfinite(d.rate) and math.isfinite(d.mutual_information)
    assert_on_cpu(*(s.activity for s in d.sites.values()))
