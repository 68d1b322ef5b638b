"""Model/guide pairs written the way our users write them, not the way our classes are.

The style of Pyro's ``examples/vae/vae.py``: a module whose bound methods ``model(x)`` and
``guide(x)`` are the pair, sites named ``"latent"`` and ``"obs"``, networks registered with
``pyro.module``, one ``pyro.plate("data", ...)`` over the batch; plus the other shapes a user's
pair takes (a Laplace prior, a learned likelihood scale, two latent sites, an autoguide, a
subsampled plate, float64 data). Tests take a pair from here and run it through every public
function (training with each objective, the evaluator, the diagnostics), comparing against an
exact answer where the pair has one (:class:`LinearGaussian`).

Every pair creates its tensors on the data's device and dtype (``x.new_zeros``), as the
meta-device check of the tests asks.
"""

import pyro
import pyro.distributions as dist
import torch
from pyro.infer.autoguide import AutoDiagonalNormal, AutoNormal
from torch import nn
from torch.distributions import constraints


class Encoder(nn.Module):
    """Pyro's example encoder: x -> (loc, scale) of q(z | x)."""

    def __init__(self, data_dim, latent_dim, hidden=32):
        super().__init__()
        self.fc1 = nn.Linear(data_dim, hidden)
        self.fc21 = nn.Linear(hidden, latent_dim)
        self.fc22 = nn.Linear(hidden, latent_dim)

    def forward(self, x):
        h = torch.tanh(self.fc1(x))
        return self.fc21(h), torch.exp(self.fc22(h))


class Decoder(nn.Module):
    """Pyro's example decoder: z -> Bernoulli logits (or Gaussian means)."""

    def __init__(self, latent_dim, data_dim, hidden=32):
        super().__init__()
        self.fc1 = nn.Linear(latent_dim, hidden)
        self.fc2 = nn.Linear(hidden, data_dim)

    def forward(self, z):
        return self.fc2(torch.tanh(self.fc1(z)))


class TutorialVAE(nn.Module):
    """Pyro's ``examples/vae/vae.py`` as a user copies it: bound ``model``/``guide``, sites
    ``"latent"`` and ``"obs"``, a standard-normal prior (or a Laplace one), Bernoulli pixels."""

    def __init__(self, data_dim=64, latent_dim=4, hidden=32, prior="normal"):
        super().__init__()
        self.latent_dim = latent_dim
        self.prior = prior
        self.encoder = Encoder(data_dim, latent_dim, hidden)
        self.decoder = Decoder(latent_dim, data_dim, hidden)

    def prior_dist(self, x):
        zeros = x.new_zeros((x.shape[0], self.latent_dim))
        if self.prior == "laplace":
            return dist.Laplace(zeros, torch.ones_like(zeros)).to_event(1)
        return dist.Normal(zeros, torch.ones_like(zeros)).to_event(1)

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("latent", self.prior_dist(x))
            pyro.sample("obs", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            loc, scale = self.encoder(x)
            pyro.sample("latent", dist.Normal(loc, scale).to_event(1))


class GaussianScaleVAE(TutorialVAE):
    """A Gaussian likelihood whose scale is learned with ``pyro.param`` (a positive
    constraint), for real-valued data."""

    def model(self, x):
        pyro.module("decoder", self.decoder)
        scale = pyro.param("obs_scale", x.new_ones(()), constraint=constraints.positive)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("latent", self.prior_dist(x))
            pyro.sample("obs", dist.Normal(self.decoder(z), scale).to_event(1), obs=x)


class TwoLatentVAE(nn.Module):
    """Two latent sites under one plate. ``hierarchical=False``: q(z1 | x) q(z2 | x) and
    p(z1) p(z2) p(x | z1, z2); ``True``: q(z1 | x) q(z2 | z1) and p(z2) p(z1 | z2)
    p(x | z1), a guide whose second site depends on the first draw."""

    def __init__(self, data_dim=64, latent_dim=2, hidden=32, hierarchical=False):
        super().__init__()
        self.latent_dim = latent_dim
        self.hierarchical = hierarchical
        self.enc1 = Encoder(data_dim, latent_dim, hidden)
        self.enc2 = Encoder(latent_dim if hierarchical else data_dim, latent_dim, hidden)
        self.prior1 = Encoder(latent_dim, latent_dim, hidden)  # p(z1 | z2), hierarchical
        self.decoder = Decoder(latent_dim if hierarchical else 2 * latent_dim, data_dim, hidden)

    def model(self, x):
        pyro.module("two_latent_model", nn.ModuleList([self.prior1, self.decoder]))
        zeros = x.new_zeros((x.shape[0], self.latent_dim))
        standard = dist.Normal(zeros, torch.ones_like(zeros)).to_event(1)
        with pyro.plate("data", x.shape[0]):
            if self.hierarchical:
                z2 = pyro.sample("z2", standard)
                z1 = pyro.sample("z1", dist.Normal(*self.prior1(z2)).to_event(1))
                logits = self.decoder(z1)
            else:
                z1 = pyro.sample("z1", standard)
                z2 = pyro.sample("z2", standard)
                logits = self.decoder(torch.cat([z1, z2], -1))
            pyro.sample("obs", dist.Bernoulli(logits=logits).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("two_latent_guide", nn.ModuleList([self.enc1, self.enc2]))
        with pyro.plate("data", x.shape[0]):
            z1 = pyro.sample("z1", dist.Normal(*self.enc1(x)).to_event(1))
            pyro.sample("z2", dist.Normal(*self.enc2(z1 if self.hierarchical else x)).to_event(1))


class LinearGaussian:
    """A linear-Gaussian pair with closed forms: z ~ N(0, I_d), x | z ~ N(W z + b, s^2 I_D).

    ``log p(x) = log N(x; b, W W^T + s^2 I)`` and the posterior p(z | x) is Gaussian; the guide
    ``exact_guide`` is that posterior (every importance weight then equals log p(x), so an
    evaluator returns the exact value whatever K). The model's parameters are fixed tensors
    (no ``pyro.param``), so the closed forms hold whatever is trained; ``amortized_guide`` has
    a learnable linear encoder.
    """

    def __init__(self, data_dim=3, latent_dim=2, noise=0.5, seed=0, dtype=None):
        gen = torch.Generator().manual_seed(seed)
        dtype = dtype or torch.get_default_dtype()
        self.W = torch.randn(data_dim, latent_dim, generator=gen).to(dtype)
        self.b = torch.randn(data_dim, generator=gen).to(dtype)
        self.noise = noise
        self.latent_dim = latent_dim
        self.encoder = nn.Linear(data_dim, 2 * latent_dim).to(dtype)

    def sample_data(self, n, seed=1):
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.latent_dim, generator=gen).to(self.W.dtype)
        eps = torch.randn(n, len(self.b), generator=gen).to(self.W.dtype)
        return z @ self.W.T + self.b + self.noise * eps

    def log_marginal(self, x):
        """Exact log p(x_n), shape (N,), nats."""
        cov = self.W @ self.W.T + self.noise**2 * torch.eye(len(self.b), dtype=self.W.dtype)
        return dist.MultivariateNormal(self.b.to(x), cov.to(x)).log_prob(x)

    def posterior(self, x):
        """Exact p(z | x): (loc (N, d), covariance (d, d))."""
        d = self.latent_dim
        precision = torch.eye(d, dtype=self.W.dtype) + self.W.T @ self.W / self.noise**2
        cov = torch.linalg.inv(precision)
        loc = (x - self.b) @ self.W @ cov.T / self.noise**2
        return loc, cov

    def model(self, x):
        zeros = x.new_zeros((x.shape[0], self.latent_dim))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("latent", dist.Normal(zeros, torch.ones_like(zeros)).to_event(1))
            loc = z @ self.W.to(x).T + self.b.to(x)
            pyro.sample("obs", dist.Normal(loc, self.noise).to_event(1), obs=x)

    def exact_guide(self, x):
        loc, cov = self.posterior(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("latent", dist.MultivariateNormal(loc, cov.to(x)))

    def amortized_guide(self, x):
        pyro.module("linear_encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            out = self.encoder(x)
            loc, log_scale = out.split(self.latent_dim, -1)
            pyro.sample("latent", dist.Normal(loc, log_scale.exp()).to_event(1))

    def misnamed_guide(self, x):
        """:meth:`exact_guide` with its site named ``"z"`` while the model's is ``"latent"``
        (a user's slip: Pyro only warns, once per process)."""
        loc, cov = self.posterior(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(loc, cov.to(x)))

    def auxiliary_guide(self, x):
        """The exact posterior drawn at an auxiliary site ``"u"`` and passed to the model's
        site by a ``Delta`` (the pattern of Pyro's AutoContinuous guides, per datapoint):
        q(latent | x) is still p(z | x), so every importance weight is log p(x)."""
        loc, cov = self.posterior(x)
        with pyro.plate("data", x.shape[0]):
            u = pyro.sample(
                "u", dist.MultivariateNormal(loc, cov.to(x)), infer={"is_auxiliary": True}
            )
            pyro.sample("latent", dist.Delta(u, event_dim=1))


class SubsampledLinearGaussian(LinearGaussian):
    """:class:`LinearGaussian` with the model and guide taking the whole data set and a
    subsampled plate choosing the minibatch (``pyro.plate(..., subsample_size=B)``, Pyro's
    SVI-tutorial idiom): the pair is called with all N rows every step."""

    def __init__(self, *args, subsample_size=5, **kwargs):
        super().__init__(*args, **kwargs)
        self.subsample_size = subsample_size

    def model(self, x):
        with pyro.plate("data", x.shape[0], subsample_size=self.subsample_size) as idx:
            xb = x[idx]
            zeros = xb.new_zeros((len(idx), self.latent_dim))
            z = pyro.sample("latent", dist.Normal(zeros, torch.ones_like(zeros)).to_event(1))
            loc = z @ self.W.to(x).T + self.b.to(x)
            pyro.sample("obs", dist.Normal(loc, self.noise).to_event(1), obs=xb)

    def exact_guide(self, x):
        with pyro.plate("data", x.shape[0], subsample_size=self.subsample_size) as idx:
            loc, cov = self.posterior(x[idx])
            pyro.sample("latent", dist.MultivariateNormal(loc, cov.to(x)))


class IndexedLinearGaussian(LinearGaussian):
    """:class:`LinearGaussian` with the minibatch's indices in the plate, Pyro's other
    subsampling idiom: ``model(x, idx)`` with ``pyro.plate("data", N, subsample=idx)``, x the
    rows idx of the data (so ``data=(x, torch.arange(N))``). Pyro scales every log-density by
    N / B."""

    def __init__(self, *args, num_data=20, **kwargs):
        super().__init__(*args, **kwargs)
        self.num_data = num_data

    def model(self, x, idx):
        with pyro.plate("data", self.num_data, subsample=idx):
            zeros = x.new_zeros((len(idx), self.latent_dim))
            z = pyro.sample("latent", dist.Normal(zeros, torch.ones_like(zeros)).to_event(1))
            loc = z @ self.W.to(x).T + self.b.to(x)
            pyro.sample("obs", dist.Normal(loc, self.noise).to_event(1), obs=x)

    def exact_guide(self, x, idx):
        loc, cov = self.posterior(x)
        with pyro.plate("data", self.num_data, subsample=idx):
            pyro.sample("latent", dist.MultivariateNormal(loc, cov.to(x)))

    def amortized_guide(self, x, idx):
        pyro.module("linear_encoder", self.encoder)
        with pyro.plate("data", self.num_data, subsample=idx):
            loc, log_scale = self.encoder(x).split(self.latent_dim, -1)
            pyro.sample("latent", dist.Normal(loc, log_scale.exp()).to_event(1))


class UnplatedLinearGaussian(LinearGaussian):
    """:class:`LinearGaussian` written without a plate: the B rows of a call are one event
    (``.to_event(2)``), a valid Pyro model whose log-density is the batch's joint one."""

    def model(self, x):
        zeros = x.new_zeros((x.shape[0], self.latent_dim))
        z = pyro.sample("latent", dist.Normal(zeros, torch.ones_like(zeros)).to_event(2))
        loc = z @ self.W.to(x).T + self.b.to(x)
        pyro.sample("obs", dist.Normal(loc, self.noise).to_event(2), obs=x)

    def exact_guide(self, x):
        loc, cov = self.posterior(x)
        pyro.sample("latent", dist.MultivariateNormal(loc, cov.to(x)).to_event(1))


def autoguide_pair(n=20, data_dim=3, latent_dim=2, seed=0):
    """The classic non-amortized SVI setting: a :class:`LinearGaussian` model over all N
    rows, guided by Pyro's ``AutoDiagonalNormal`` (one (loc, scale) per datapoint and latent
    dimension, so the guide is only right if row n of every call is datapoint n).

    Returns (model, guide, x, exact log p(x) of shape (N,))."""
    pair = LinearGaussian(data_dim, latent_dim, seed=seed)
    x = pair.sample_data(n)
    return pair.model, AutoDiagonalNormal(pair.model), x, pair.log_marginal(x)


def autonormal_pair(n=20, data_dim=3, latent_dim=2, seed=0):
    """:func:`autoguide_pair` with Pyro's ``AutoNormal``: one Normal per latent site inside
    the model's plates (a (loc, scale) per datapoint), so its importance weights split per
    datapoint. Returns (model, guide, x, exact log p(x) of shape (N,))."""
    pair = LinearGaussian(data_dim, latent_dim, seed=seed)
    x = pair.sample_data(n)
    return pair.model, AutoNormal(pair.model), x, pair.log_marginal(x)


def binary_data(n=40, data_dim=64, seed=0, dtype=None):
    """Bernoulli(0.3) pixels, shape (N, D)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.bernoulli(torch.full((n, data_dim), 0.3), generator=gen)
    return x.to(dtype or torch.get_default_dtype())
