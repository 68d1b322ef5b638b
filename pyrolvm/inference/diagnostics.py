"""Gradient diagnostics: the mean, variance and signal-to-noise ratio of an ELBO's gradient
estimator at fixed parameters, per parameter group (model/decoder vs guide/encoder).

Rainforth, Kosiorek, Le, Maddison, Igl, Wood & Teh (2018), "Tighter Variational Bounds are
Not Necessarily Better", eq. (6): for each parameter coordinate the SNR of an estimator
:math:`\\hat\\Delta` is :math:`|\\mathbb{E}[\\hat\\Delta]| / \\sigma[\\hat\\Delta]`.
"""

from dataclasses import dataclass

import pyro
import torch
from pyro import poutine

from ..errors import ConfigError


@dataclass
class GradientStats:
    """Monte Carlo statistics of one parameter group's gradient estimates.

    Attributes:
        names (list of str): the param-store names in the group, in the order of the
            flattened coordinates.
        mean (torch.Tensor): shape (P,), mean over draws of the gradient of the *bound*
            (minus the loss's gradient), in nats per unit of the unconstrained parameter.
        variance (torch.Tensor): shape (P,), unbiased sample variance over draws.
        snr (torch.Tensor): shape (P,), ``|mean| / sqrt(variance)``; 0 where both are 0,
            ``inf`` where only the variance is 0.
        num_draws (int): number of independent gradient estimates.
    """

    names: list
    mean: torch.Tensor
    variance: torch.Tensor
    snr: torch.Tensor
    num_draws: int

    @property
    def average_snr(self):
        """Mean SNR over the group's coordinates with finite SNR (a float)."""
        finite = self.snr[torch.isfinite(self.snr)]
        return finite.mean().item() if finite.numel() else float("nan")

    @property
    def norm_snr(self):
        """``||mean|| / sqrt(sum of variances)``: the SNR of the whole gradient vector."""
        return (self.mean.norm() / self.variance.sum().sqrt()).item()


def _param_names(model, guide, args, kwargs):
    with poutine.block():
        guide_trace = poutine.trace(guide, param_only=True).get_trace(*args, **kwargs)
        full_guide = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(
            poutine.replay(model, trace=full_guide), param_only=True
        ).get_trace(*args, **kwargs)
    guide_names = [n for n, s in guide_trace.nodes.items() if s["type"] == "param"]
    model_names = [
        n for n, s in model_trace.nodes.items() if s["type"] == "param" and n not in guide_names
    ]
    return model_names, guide_names


def gradient_snr(model, guide, elbo, *args, num_draws=100, param_groups=None, **kwargs):
    """Draw ``num_draws`` independent gradient estimates of ``elbo`` at the current
    parameters and summarize them per parameter group.

    The parameters are not changed (``elbo.loss_and_grads`` is called directly, without an
    optimizer step); their ``.grad`` is reset before each draw and cleared at the end.

    Args:
        model (callable): the Pyro model, called as ``model(*args, **kwargs)``.
        guide (callable): its guide, with the model's signature.
        elbo (pyro.infer.ELBO): the estimator (e.g. ``IWAE(K)``, ``DReG(K)``).
        num_draws (int): independent draws, >= 2.
        param_groups (dict or None): group name -> list of param-store names. Default:
            ``{"model": [params the model uses], "guide": [params the guide uses]}``
            (decoder vs encoder for a VAE).

    Returns:
        dict: group name -> :class:`GradientStats`.

    Raises:
        ConfigError: ``num_draws < 2``, an empty group, or a name not in the param store.
    """
    if int(num_draws) < 2:
        raise ConfigError(f"num_draws must be >= 2 to estimate a variance, got {num_draws}")
    if param_groups is None:
        model_names, guide_names = _param_names(model, guide, args, kwargs)
        param_groups = {"model": model_names, "guide": guide_names}
    store = pyro.get_param_store()
    for group, names in param_groups.items():
        if not names:
            raise ConfigError(f"parameter group {group!r} is empty")
        missing = [n for n in names if n not in store]
        if missing:
            raise ConfigError(
                f"parameter group {group!r} names params not in the param store: {missing}; "
                "run the model and guide once first"
            )
    params = {
        n: store.get_param(n).unconstrained() for names in param_groups.values() for n in names
    }
    draws = {group: [] for group in param_groups}
    all_params = list(store.values())
    for _ in range(int(num_draws)):
        for p in all_params:
            p.unconstrained().grad = None
        elbo.loss_and_grads(model, guide, *args, **kwargs)
        for group, names in param_groups.items():
            draws[group].append(
                torch.cat(
                    [
                        (
                            -params[n].grad
                            if params[n].grad is not None
                            else torch.zeros_like(params[n])
                        )
                        .reshape(-1)
                        .detach()
                        for n in names
                    ]
                )
            )
    for p in all_params:
        p.unconstrained().grad = None
    out = {}
    for group, rows in draws.items():
        g = torch.stack(rows).double()
        mean, var = g.mean(0), g.var(0)
        sd = var.sqrt()
        snr = torch.where(
            sd > 0,
            mean.abs() / sd.clamp_min(1e-300),
            torch.where(mean == 0, torch.zeros_like(mean), torch.full_like(mean, float("inf"))),
        )
        out[group] = GradientStats(list(param_groups[group]), mean, var, snr, int(num_draws))
    return out
