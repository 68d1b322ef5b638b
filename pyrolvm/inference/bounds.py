"""Which bound an objective reports: the honest name of ``-loss / batch size``.

An objective's ``loss`` is minus *its own* bound, not always the ELBO: IWAE, DReG and VIMCO
report the IWAE bound :math:`\\mathcal L_K = \\mathbb E \\log \\frac1K \\sum_k w_k` (tighter
than the ELBO as K grows, Burda et al. 2016, theorem 1), Rényi's objective its
:math:`\\mathcal L_\\alpha`, the beta-ELBO a weighted sum that is no bound of log p(x) for
beta < 1. :func:`bound_name` names it, so that a training curve or summary never calls an
IWAE-20 bound "the ELBO", nor plots it against a test ELBO as if the difference were a
train/test gap.
"""

from collections.abc import Callable
from typing import Any, cast

import torch
from pyro.infer import (
    ELBO,
    RenyiELBO,
    Trace_ELBO,
    TraceEnum_ELBO,
    TraceGraph_ELBO,
    TraceMeanField_ELBO,
)

from .batches import Data, as_tuple, num_rows, rows
from .objectives import (
    CIWAE,
    MIWAE,
    MMDELBO,
    PIWAE,
    STL,
    BetaELBO,
    FreeBitsELBO,
    MIWAEDReG,
    MultiSampleELBO,
    Renyi,
)

#: The name :func:`bound_name` gives the evidence lower bound itself.
ELBO_NAME = "ELBO"


def _iwae(k):
    return ELBO_NAME if k == 1 else f"IWAE-{k} bound"


def _number(value):
    return f"{value:g}"


def bound_name(loss: ELBO) -> str:
    """The name of the per-datapoint bound whose negative ``loss.loss`` reports (what
    :func:`~pyrolvm.inference.train` records as ``history["train_elbo"]``).

    ``"ELBO"`` for Pyro's ``Trace_ELBO``, ``TraceGraph_ELBO``, ``TraceMeanField_ELBO``,
    ``TraceEnum_ELBO``, for :class:`~pyrolvm.inference.STL` and for every objective whose
    options make it the ELBO (one particle, beta = 1, alpha = 1, ...); ``"IWAE-K bound"`` for
    :class:`~pyrolvm.inference.IWAE`, :class:`~pyrolvm.inference.DReG` and
    :class:`~pyrolvm.inference.VIMCO` (and PIWAE's reported bound, over all its M K
    particles); ``"MIWAE-MxK bound"``, ``"CIWAE-K bound (beta=b)"``, ``"Renyi-a bound
    (K=k)"``; ``"beta-ELBO (beta=b)"`` with the current epoch's beta of a schedule;
    ``"free-bits objective (lambda=l per dimension|site)"``; ``"MMD objective (weight w,
    beta=b)"``; else the objective's class name followed by ``"bound"``.

    Args:
        loss (pyro.infer.ELBO): the objective.

    Returns:
        str
    """
    k = int(getattr(loss, "num_particles", 1))
    if isinstance(loss, (Trace_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO, TraceEnum_ELBO)):
        return ELBO_NAME
    if isinstance(loss, RenyiELBO):  # Pyro's
        alpha = float(loss.alpha)
        if alpha == 1.0:
            return ELBO_NAME
        return _iwae(k) if alpha == 0.0 else f"Rényi-{_number(alpha)} bound (K={k})"
    if not isinstance(loss, MultiSampleELBO):
        return f"{type(loss).__name__} bound"
    if isinstance(loss, STL):
        return ELBO_NAME
    if isinstance(loss, PIWAE):  # reports the IWAE bound of all M K particles
        return _iwae(k)
    if isinstance(loss, (MIWAE, MIWAEDReG)):
        m, per = int(loss.num_groups), int(loss.group_size)
        return _iwae(per) if m == 1 else f"MIWAE-{m}x{per} bound"
    if isinstance(loss, CIWAE):
        beta = float(loss.beta)
        if beta == 1.0 or k == 1:
            return ELBO_NAME
        return _iwae(k) if beta == 0.0 else f"CIWAE-{k} bound (β={_number(beta)})"
    if isinstance(loss, Renyi):
        alpha = float(loss.alpha)
        if alpha == 1.0 or k == 1:
            return ELBO_NAME
        return _iwae(k) if alpha == 0.0 else f"Rényi-{_number(alpha)} bound (K={k})"
    if isinstance(loss, FreeBitsELBO):
        if float(loss.free_bits) == 0.0:
            return ELBO_NAME
        return f"free-bits objective (λ={_number(loss.free_bits)} per {loss.per})"
    if isinstance(loss, MMDELBO):
        beta = float(loss.latent_weight)
        if float(loss.mmd_weight) == 0.0 and beta == 1.0:
            return ELBO_NAME
        return f"MMD objective (weight {_number(loss.mmd_weight)}, β={_number(beta)})"
    if isinstance(loss, BetaELBO):
        beta = float(loss.latent_weight)
        return ELBO_NAME if beta == 1.0 else f"β-ELBO (β={_number(beta)})"
    if type(loss).bound is MultiSampleELBO.bound:  # IWAE, DReG, VIMCO and their kind
        return _iwae(k)
    return f"{type(loss).__name__} bound"


def is_elbo(name: str) -> bool:
    """Whether a :func:`bound_name` is the ELBO itself."""
    return name == ELBO_NAME


def trained_bound(history: dict, objective: ELBO | None = None) -> str:
    """The name of the bound a training history's ``train_elbo`` holds
    (:func:`pyrolvm.inference.train`'s ``bound_name`` per epoch): the last epoch's; for a
    schedule whose bound changed over the epochs (an annealed beta), the first and last joined
    by an arrow; ``objective``'s own (or the ELBO's) when no epoch ran."""
    names = [n for n in history.get("bound_name", []) if n]
    if not names:
        return bound_name(objective) if objective is not None else ELBO_NAME
    return names[-1] if names[0] == names[-1] else f"{names[0]} → {names[-1]}"


def bound_on_data(
    objective: ELBO, model: Callable, guide: Callable, data: Data, batch_size: int, seed: int
) -> float:
    """``objective``'s own bound per datapoint on ``data`` (nats): ``-objective.loss`` over it
    in minibatches of ``batch_size``, divided by N, without gradients; the draws come from a
    stream seeded by ``seed`` (the global random state is left as it was)."""
    device = as_tuple(data)[0].device
    n, total = num_rows(data), 0.0
    with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for i in range(0, n, batch_size):
            total += cast(Any, objective).loss(model, guide, *rows(data, slice(i, i + batch_size)))
    return -total / n
