"""The semi-supervised VAE "M2" of Kingma, Rezende, Mohamed & Welling (2014), "Semi-supervised
Learning with Deep Generative Models", section 2.2, eq. (2):

    y ~ Cat(uniform over C classes),  z ~ N(0, I),  x | y, z ~ Bernoulli(f_theta(y, z)).

The label y is observed for labelled images and a latent variable for the others; its guide
(:class:`pyrolvm.guides.SSVAEGuide`) enumerates it, so the unlabelled bound of eq. (7) sums over
the C classes exactly under ``TraceEnum_ELBO``.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ..errors import ConfigError
from ..nets import check_latent_dim, mlp


def concat_broadcast(*tensors: torch.Tensor) -> torch.Tensor:
    """Concatenate along the last dim after broadcasting all leading (batch) dims: the label
    may carry enumeration and particle dims that the other inputs lack."""
    shape = torch.broadcast_shapes(*(t.shape[:-1] for t in tensors))
    return torch.cat([t.expand(shape + t.shape[-1:]) for t in tensors], dim=-1)


class SSVAE(nn.Module):
    """Pyro model of M2: ``model(x, y=None)`` with x (B, D) in {0, 1} and y (B, C) one-hot
    labels or None (unlabelled); one ``pyro.plate("data", B)``; sites ``"z"`` (event (L,)),
    ``"y"`` (``OneHotCategorical``, event (C,), observed when y is given) and ``"x"``
    (event (D,)). The decoder is registered with ``pyro.module(name, self)``.

    Args:
        data_dim (int): D.
        num_classes (int): C >= 2.
        latent_dim (int): L >= 1.
        hidden (sequence of int): decoder hidden sizes (Kingma et al. use one layer of 500).
        activation (str): ``softplus`` (Kingma et al.), ``tanh``, ``relu`` or ``elu``.
        name (str): prefix in Pyro's param store.
        grey_targets (bool): x may hold grey levels in [0, 1], scored by the Bernoulli
            log-mass formula ``x log p + (1 - x) log(1 - p)`` (a cross-entropy, as Pyro's
            ``examples/vae/ss_vae_M2.py``; no normalized density on [0, 1], so the ELBO is
            then no bound on a log-likelihood). Default: x in {0, 1}, checked by Pyro's
            validation.

    Raises:
        ConfigError: C < 2, L < 1, unknown activation.
    """

    def __init__(
        self,
        data_dim: int,
        num_classes: int = 10,
        latent_dim: int = 50,
        hidden: Sequence[int] = (500,),
        activation: str = "softplus",
        name: str = "ssvae_decoder",
        grey_targets: bool = False,
    ) -> None:
        super().__init__()
        if int(num_classes) != num_classes or num_classes < 2:
            raise ConfigError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        self.data_dim, self.num_classes = int(data_dim), int(num_classes)
        self.latent_dim = check_latent_dim(latent_dim)
        self.decoder = mlp(self.latent_dim + self.num_classes, hidden, self.data_dim, activation)
        self.name = name
        self.grey_targets = bool(grey_targets)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        pyro.module(self.name, self)
        c, d = self.num_classes, self.latent_dim
        with pyro.plate("data", x.shape[0]):
            loc = x.new_zeros(d)  # (a scale of 1.0 would be copied from the host every call)
            z = pyro.sample("z", dist.Normal(loc, torch.ones_like(loc)).to_event(1))
            y = pyro.sample("y", dist.OneHotCategorical(logits=x.new_zeros(c)), obs=y)
            logits = self.decoder(concat_broadcast(z, y))
            validate = False if self.grey_targets else None  # (None: Pyro's setting)
            likelihood = dist.Bernoulli(logits=logits, validate_args=validate)
            pyro.sample("x", likelihood.to_event(1), obs=x)

    @torch.no_grad()
    def sample_per_class(self, num_per_class: int) -> torch.Tensor:
        """Class-conditional samples: for each class y, ``num_per_class`` draws z ~ N(0, I)
        decoded to the mean of p(x | y, z) (Kingma et al. 2014, figure 1: the label fixes the
        digit, z its style; the same z across classes).

        Returns:
            torch.Tensor of shape (C * num_per_class, D), pixel probabilities, grouped by class.
        """
        weight = next(self.decoder.parameters())
        n, c = int(num_per_class), self.num_classes
        z = torch.randn(n, self.latent_dim, device=weight.device, dtype=weight.dtype)
        y = torch.eye(c, device=weight.device, dtype=weight.dtype)
        zz, yy = z.repeat(c, 1), y.repeat_interleave(n, 0)
        return torch.sigmoid(self.decoder(torch.cat([zz, yy], -1)))
