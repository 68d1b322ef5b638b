"""Baselines for score-function (REINFORCE) gradients, as the ``infer={"baseline": ...}`` options
that Pyro's ``TraceGraph_ELBO`` reads at a guide's non-reparameterized sample sites.

Pyro implements the baselines (``pyro.infer.tracegraph_elbo``); this module only builds their
options so that every guide in :mod:`pyrolvm.guides` exposes the same three choices:

- ``"none"``: plain REINFORCE (Williams 1992) with Pyro's Rao-Blackwellized downstream costs.
- ``"decaying_avg"``: an exponential moving average of the downstream cost
  (``use_decaying_avg_baseline``, ``baseline_beta``), as in Ranganath et al. (2014), section 3.
- ``"neural"``: a data-dependent baseline ``b_psi(x)`` (``nn_baseline``), a small MLP of the
  datapoint trained by Pyro to regress the downstream cost (Mnih & Gregor 2014, NVIL, section 3.2).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyro
import torch
from torch import nn

from ..errors import ConfigError
from ..nets import mlp

#: The score-function ``baseline`` choices of the guides (see :mod:`pyrolvm.guides.baselines`).
BASELINES: tuple[str, ...] = ("none", "decaying_avg", "neural")

_AVG_PREFIX = "__baseline_avg_downstream_cost_"


class NeuralBaseline(nn.Module):
    """``b_psi(x)``: an MLP from a datapoint (..., D) to one scalar per datapoint (...,)."""

    def __init__(
        self, data_dim: int, hidden: Sequence[int] = (100,), activation: str = "tanh"
    ) -> None:
        super().__init__()
        self.net = mlp(data_dim, hidden, 1, activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


class Baseline(nn.Module):
    """The baseline choice of one guide site, turned into Pyro's ``infer`` dict.

    Args:
        kind (str): ``"none"``, ``"decaying_avg"`` or ``"neural"`` (see the module docstring).
        data_dim (int): D, for the neural baseline's input.
        beta (float): decay of the moving average, in [0, 1).
        hidden (sequence of int): hidden sizes of the neural baseline.
        name (str): its name in Pyro's param store.

    Raises:
        ConfigError: unknown kind or beta outside [0, 1).
    """

    def __init__(
        self,
        kind: str | None = "none",
        data_dim: int | None = None,
        beta: float = 0.9,
        hidden: Sequence[int] = (100,),
        name: str = "baseline",
    ) -> None:
        super().__init__()
        kind = "none" if kind is None else kind
        if kind not in BASELINES:
            raise ConfigError(f"unknown baseline {kind!r}: choose one of {', '.join(BASELINES)}")
        if not 0.0 <= beta < 1.0:
            raise ConfigError(f"baseline_beta must lie in [0, 1), got {beta}")
        self.kind = kind
        self.beta = float(beta)
        self.name = name
        net = None
        if kind == "neural":
            if data_dim is None:
                raise ConfigError("the neural baseline needs data_dim, the size D of its input")
            net = NeuralBaseline(data_dim, hidden)
        self.net = net

    def infer(self, site: str, x: torch.Tensor) -> dict[str, Any]:
        """The ``infer`` dict for the guide's sample site ``site`` given the batch x (B, D)."""
        if self.kind == "none":
            return {}
        if self.net is not None:  # kind == "neural"
            pyro.module(self.name, self.net)
            return {"baseline": {"nn_baseline": self.net, "nn_baseline_input": x}}
        return {"baseline": {"use_decaying_avg_baseline": True, "baseline_beta": self.beta}}

    def match(self, site: str, infer: dict[str, Any], batch_shape: Sequence[int]) -> None:
        """After sampling, fit the baseline to the site's batch shape (e.g. (K, B) under
        vectorized particles), which Pyro requires of the baseline:

        - neural: broadcast its input to ``batch_shape``; ``pyro.sample`` keeps the nested
          ``infer["baseline"]`` dict by reference, so the update reaches the trace that
          ``TraceGraph_ELBO`` reads;
        - decaying average: Pyro keeps the average per batch element, shaped like the first
          minibatch; when the shape changes (a last, smaller minibatch, another number of
          particles) its mean is carried over to the new shape.
        """
        opts = infer.get("baseline", {})
        batch_shape = torch.Size(batch_shape)
        if "nn_baseline_input" in opts:
            x = opts["nn_baseline_input"]
            opts["nn_baseline_input"] = x.expand(batch_shape + x.shape[-1:])
        if opts.get("use_decaying_avg_baseline"):
            store = pyro.get_param_store()
            key = _AVG_PREFIX + site
            if key in store and store[key].shape != batch_shape:
                with torch.no_grad():
                    store[key] = store[key].mean().expand(batch_shape).clone()
