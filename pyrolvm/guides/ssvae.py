"""The guide of the M2 semi-supervised VAE (Kingma et al. 2014, section 2.2, eq. (4)):
``q(y | x) = Cat(pi_phi(x))`` (the classifier) and ``q(z | x, y) = N(mu_phi(x, y),
diag(sigma_phi(x, y)^2))``."""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.poutine.runtime import InferDict
from torch import nn

from ..models.ssvae import concat_broadcast
from ..nets import check_latent_dim, mlp


class SSVAEGuide(nn.Module):
    """Guide of :class:`pyrolvm.models.SSVAE` with the model's signature ``guide(x, y=None)``.

    For unlabelled x the label site ``"y"`` is drawn from the classifier, marked for parallel
    enumeration when ``enumerate=True`` (``TraceEnum_ELBO`` then sums the C classes exactly:
    eq. (7) of Kingma et al.), or sampled (a score-function term for ``Trace_ELBO``) otherwise.
    For labelled x the guide has no ``"y"`` site.

    Args:
        data_dim (int): D.
        num_classes (int): C.
        latent_dim (int): L.
        hidden (sequence of int): hidden sizes of the classifier and of the encoder.
        activation (str): as :func:`pyrolvm.nets.mlp`.
        enumerate (bool): mark ``"y"`` for parallel enumeration.
        min_scale (float): lower bound of the encoder's standard deviations.
        name (str): prefix in Pyro's param store.
    """

    def __init__(
        self,
        data_dim: int,
        num_classes: int = 10,
        latent_dim: int = 50,
        hidden: Sequence[int] = (500,),
        activation: str = "softplus",
        enumerate: bool = True,
        min_scale: float = 1e-4,
        name: str = "ssvae_guide",
    ) -> None:
        super().__init__()
        self.num_classes, self.latent_dim = int(num_classes), check_latent_dim(latent_dim)
        self.classifier = mlp(data_dim, hidden, self.num_classes, activation)
        self.encoder = mlp(data_dim + self.num_classes, hidden, 2 * self.latent_dim, activation)
        self.enumerate = bool(enumerate)
        self.min_scale = min_scale
        self.name = name

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of q(y | x), shape (B, C), for x (B, D)."""
        return self.classifier(x)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        pyro.module(self.name, self)
        with pyro.plate("data", x.shape[0]):
            if y is None:
                infer: InferDict = {"enumerate": "parallel"} if self.enumerate else {}
                y = pyro.sample("y", dist.OneHotCategorical(logits=self.classify(x)), infer=infer)
            loc, raw = self.encoder(concat_broadcast(x, y)).split(self.latent_dim, dim=-1)
            pyro.sample("z", dist.Normal(loc, F.softplus(raw) + self.min_scale).to_event(1))

    def classifier_model(self, x: torch.Tensor, y: torch.Tensor, scale: float = 1.0) -> None:
        """The auxiliary classification term of Kingma et al., eq. (9): a Pyro model whose
        ``Trace_ELBO`` loss (with an empty guide) is ``scale * sum_n -log q(y_n | x_n)``."""
        pyro.module(self.name, self)
        with pyro.plate("data", x.shape[0]), poutine.scale(scale=scale):
            pyro.sample("y_aux", dist.OneHotCategorical(logits=self.classify(x)), obs=y)
