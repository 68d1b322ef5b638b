"""Average treatment effect (ATE) estimates: the naive difference of means, linear regression
adjustment, and CEVAE (Louizos, Shalit, Mooij, Sontag, Zemel & Welling 2017, "Causal Effect
Inference with Deep Latent-Variable Models"), the latter through Pyro's own
:class:`pyro.contrib.cevae.CEVAE` (its model, guide and training loop)."""

import pyro
import torch
from pyro.contrib.cevae import CEVAE


def naive_ate(t: torch.Tensor, y: torch.Tensor) -> float:
    """``mean(y | t = 1) - mean(y | t = 0)``: the regression of y on t alone, biased under
    confounding."""
    return (y[t == 1].mean() - y[t == 0].mean()).item()


def regression_ate(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> float:
    """The coefficient of t in the least-squares regression of y on (1, t, x): adjusts for
    the proxies linearly (not for the hidden confounder itself)."""
    design = torch.cat([torch.ones_like(t).unsqueeze(-1), t.unsqueeze(-1), x], -1)
    return torch.linalg.lstsq(design, y.unsqueeze(-1)).solution[1, 0].item()


def cevae_ate(
    x: torch.Tensor,
    t: torch.Tensor,
    y: torch.Tensor,
    latent_dim: int = 1,
    hidden_dim: int = 64,
    num_layers: int = 2,
    num_epochs: int = 30,
    batch_size: int = 100,
    learning_rate: float = 5e-3,
    num_samples: int = 50,
    seed: int = 0,
) -> float:
    """Fit :class:`pyro.contrib.cevae.CEVAE` (Bernoulli outcome) to (x, t, y) and return its
    ATE estimate, the mean over units of the estimated ITE (``CEVAE.ite``, ``num_samples``
    posterior draws of the latent confounder per unit). Seeded by ``seed``; clears Pyro's
    param store first."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    cevae = CEVAE(
        x.shape[-1],
        outcome_dist="bernoulli",
        latent_dim=latent_dim,
        hidden_dim=hidden_dim,
        num_layers=num_layers,
        num_samples=num_samples,
    )
    cevae.fit(
        x,
        t,
        y,
        num_epochs=num_epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        learning_rate_decay=0.1,
    )
    return cevae.ite(x).mean().item()
