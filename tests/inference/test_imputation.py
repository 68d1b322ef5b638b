"""Missing data: the masked likelihood's importance-sampled log p(x_obs) and the
self-normalized imputation E[x_mis | x_obs] against closed forms on a linear-Gaussian VAE."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyrolvm.errors import DataError
from pyrolvm.inference import importance_sample, imputation_error, impute
from pyrolvm.models import VAE

D, L = 4, 2


def linear_vae(seed=0):
    """A VAE with no hidden layer and a Gaussian likelihood: exactly the linear-Gaussian model
    z ~ N(0, I), x | z ~ N(W z + b, diag(s^2)), with fixed random W, b, s."""
    gen = torch.Generator().manual_seed(seed)
    model = VAE(D, latent_dim=L, hidden=(), likelihood="gaussian")
    with torch.no_grad():
        model.decoder[0].weight.copy_(torch.randn(D, L, generator=gen))
        model.decoder[0].bias.copy_(torch.randn(D, generator=gen))
        model.log_scale.copy_(torch.rand(D, generator=gen).mul(0.5).add(0.3).log())
    return model


def exact_posterior(model, x, mask):
    """p(z | x_obs) for each datapoint: precision I + W^T diag(m / s^2) W, mean
    cov W^T (m / s^2 * (x - b)) (Bishop 2006, eq. 2.116, with the missing rows of W removed)."""
    w, b = model.decoder[0].weight, model.decoder[0].bias
    prec_x = mask.double() / model.log_scale.exp().double() ** 2  # (B, D), 0 where missing
    precision = torch.eye(L, dtype=torch.float64) + torch.einsum(
        "dl,bd,dk->blk", w.double(), prec_x, w.double()
    )
    cov = torch.linalg.inv(precision)
    loc = torch.einsum("blk,dk,bd->bl", cov, w.double(), prec_x * (x.double() - b.double()))
    return loc, cov


def exact_log_marginal(model, x, mask):
    """log p(x_obs) = log N(x_O; b_O, W_O W_O^T + diag(s_O^2)), per datapoint (0 when O is
    empty)."""
    w, b, s = model.decoder[0].weight, model.decoder[0].bias, model.log_scale.exp()
    out = []
    for xn, mn in zip(x.double(), mask, strict=True):
        if not mn.any():
            out.append(torch.tensor(0.0, dtype=torch.float64))
            continue
        wo = w[mn].double()
        cov = wo @ wo.T + torch.diag(s[mn].double() ** 2)
        out.append(dist.MultivariateNormal(b[mn].double(), cov).log_prob(xn[mn]))
    return torch.stack(out)


def posterior_guide(model, shift=0.0, inflate=1.0):
    """The exact p(z | x_obs)'s marginals as a diagonal guide, optionally shifted and inflated
    (a poorer proposal)."""

    def guide(x, mask):
        with torch.no_grad():
            loc, cov = exact_posterior(model, x, mask)
        scale = cov.diagonal(dim1=-2, dim2=-1).sqrt() * inflate
        with pyro.plate("data", x.shape[0]):
            dtype = x.dtype  # the data's (float32, or float64 in the float64 job)
            pyro.sample("z", dist.Normal((loc + shift).to(dtype), scale.to(dtype)).to_event(1))

    return guide


def data(model, n=12, seed=1):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        z = torch.randn(n, L, generator=gen)
        x = model.decode(z) + model.log_scale.exp() * torch.randn(n, D, generator=gen)
    mask = torch.ones(n, D, dtype=torch.bool)
    mask[:, 1] = False  # one coordinate missing everywhere
    mask[::3, 3] = False  # and another one in every third datapoint
    return x, mask


def test_is_log_likelihood_and_snis_imputation_match_the_closed_forms():
    model = linear_vae()
    x, mask = data(model)
    guide = posterior_guide(model, shift=0.3, inflate=1.3)
    pyro.set_rng_seed(0)
    k = 4000
    result = impute(model, guide, x, mask, num_samples=k, batch_size=6)
    exact = exact_log_marginal(model, x, mask)
    # Delta method: the SE of log (1/K) sum w is sqrt((K / ESS - 1) / K); 4 SEs (+ bias
    # ~ SE^2 / 2, negligible here).
    se = ((k / result.ess - 1) / k).sqrt()
    assert ((result.log_likelihood - exact).abs() < 4 * se).all()
    assert se.max() < 0.03  # the comparison is sharp (exact log p(x_obs) ~ -5 nats)
    # the same estimate as importance_sample of the masked model
    pyro.set_rng_seed(0)
    ll = importance_sample(model, guide, (x, mask), num_samples=k, batch_size=6).log_likelihood
    assert ((ll - exact).abs() < 4 * se).all()
    # E[x_mis | x_obs] = W_mis E[z | x_obs] + b_mis; the SNIS error has SE about
    # sd(E[x | z] under p(z | x_obs)) / sqrt(ESS); 4 SEs.
    loc, cov = exact_posterior(model, x, mask)
    w, b = model.decoder[0].weight.double(), model.decoder[0].bias.double()
    cond_mean = loc @ w.T + b
    sd = torch.einsum("dl,blk,dk->bd", w, cov, w).sqrt()
    err = (result.conditional_mean.double() - cond_mean).abs()
    assert (err[~mask] < 4 * (sd / result.ess.sqrt().unsqueeze(-1))[~mask]).all()
    # observed entries are kept, missing ones are the estimate
    assert torch.equal(result.imputed[mask], x[mask])
    assert torch.equal(result.imputed[~mask], result.conditional_mean[~mask])


def test_exact_guide_gives_exact_log_likelihood_and_all_missing_counts_zero():
    model = linear_vae()
    x, mask = data(model, n=6)
    mask[0] = False  # a datapoint with nothing observed
    pyro.set_rng_seed(1)
    result = impute(model, posterior_guide(model), x, mask, num_samples=50, batch_size=4)
    # with nothing observed the guide is the prior (identity covariance), so that row's
    # weights are p(z) / p(z) = 1 exactly: log p(x_obs) = 0, ESS = K
    assert result.log_likelihood[0].item() == pytest.approx(0.0, abs=1e-6)
    assert result.ess[0].item() == pytest.approx(50.0, rel=1e-6)
    assert torch.isfinite(result.imputed).all()
    # its imputation is the prior predictive mean b, up to Monte Carlo error of the mean of
    # W z over 50 prior draws (SE |W_d| / sqrt(50)); 4 SEs
    w, b = model.decoder[0].weight, model.decoder[0].bias
    se = w.norm(dim=-1) / math.sqrt(50)
    assert ((result.imputed[0] - b).abs() < 4 * se).all()
    # the masked likelihood of that row is exactly zero in the model's trace
    trace = pyro.poutine.trace(model).get_trace(x, mask)
    assert trace.nodes["x"]["fn"].log_prob(x)[0].item() == 0.0


def test_imputation_error_and_bad_masks():
    truth = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    imputed = torch.tensor([[0.5, 0.0, 1.0], [0.0, 1.0, 1.0]])
    mask = torch.tensor([[False, True, True], [True, False, False]])
    mse, se = imputation_error(imputed, truth, mask)
    # missing entries: 0.25 (row 0), 1.0 and 0.0 (row 1): 1.25 / 3
    assert mse == pytest.approx(1.25 / 3)
    assert se == pytest.approx(torch.tensor([0.25, 0.5]).std().item() / math.sqrt(2))
    with pytest.raises(DataError, match="no missing entries"):
        imputation_error(imputed, truth, torch.ones_like(mask))
    model = linear_vae()
    x, m = data(model, n=3)
    with pytest.raises(DataError, match="bool tensor"):
        impute(model, posterior_guide(model), x, m.float(), num_samples=2)
