"""Synthetic data with a hidden confounder and a known average treatment effect (ATE), for
CEVAE (Louizos et al. 2017) and its baselines. Tensors only."""

from dataclasses import dataclass

import torch


@dataclass
class TreatmentData:
    """Units with proxies x, a binary treatment t and a binary outcome y.

    Attributes:
        x (torch.Tensor): (N, F) float, noisy proxies of the hidden confounder.
        t (torch.Tensor): (N,) float in {0, 1}.
        y (torch.Tensor): (N,) float in {0, 1}.
        true_ite (torch.Tensor): (N,) ``E[y | do(t=1), z] - E[y | do(t=0), z]``, exact.
        true_ate (float): the mean of ``true_ite`` (the sample ATE).
    """

    x: torch.Tensor
    t: torch.Tensor
    y: torch.Tensor
    true_ite: torch.Tensor
    true_ate: float


def confounded_treatment(
    num_data: int = 2000,
    feature_dim: int = 10,
    seed: int = 0,
    proxy_shift: float = 2.0,
    proxy_scale: float = 1.5,
) -> TreatmentData:
    """A binary confounder z ~ Bernoulli(1/2) drives treatment and outcome:
    ``x_f ~ N(proxy_shift * z, proxy_scale^2)``, ``t ~ Bernoulli(0.75 z + 0.25 (1 - z))``,
    ``y ~ Bernoulli(logits = 3 (2 z - 1) + (2 t - 1))`` (the design of Pyro's CEVAE example,
    ``examples/contrib/cevae/synthetic.py``, with a weaker treatment effect and more
    informative proxies, so that confounding dominates the naive estimate). The ITE is
    ``sigmoid(3 (2z - 1) + 1) - sigmoid(3 (2z - 1) - 1)``, 0.1012 for either z; the naive
    difference of means is about 0.53. Drawn from a generator seeded by ``seed``."""
    gen = torch.Generator().manual_seed(int(seed))
    z = torch.bernoulli(torch.full((num_data,), 0.5), generator=gen)
    x = proxy_shift * z.unsqueeze(-1) + proxy_scale * torch.randn(
        num_data, feature_dim, generator=gen
    )
    t = torch.bernoulli(0.75 * z + 0.25 * (1 - z), generator=gen)
    logits = 3 * (2 * z - 1)
    y = torch.bernoulli(torch.sigmoid(logits + (2 * t - 1)), generator=gen)
    ite = torch.sigmoid(logits + 1) - torch.sigmoid(logits - 1)
    return TreatmentData(x, t, y, ite, ite.mean().item())
