"""Gaussian mixture runs: fit :class:`pyrolvm.models.GaussianMixture` by SVI with the assignment
enumerated (``TraceEnum_ELBO``), with k-means++ starts and best-of-``n_init`` restarts, and
score it beside scikit-learn's EM on the same split and projection.
"""

import math
import time
from dataclasses import dataclass, field

import pyro
import torch
from pyro.infer import TraceEnum_ELBO

from ..errors import ConfigError
from ..guides.mixture import MixtureMAP, MixtureMeanField
from ..inference import train
from ..models.mixture import INITS, GaussianMixture, check_num_components

GUIDES = ("map", "meanfield")


@dataclass
class MixtureFit:
    """The result of :func:`fit_mixture`.

    Attributes:
        model (GaussianMixture): the mixture (priors set from the training data).
        guide (MixtureMAP or MixtureMeanField): the trained guide of the best restart.
        params (dict): its point estimates (``guide.median()``), the global site values.
        history (dict): per-epoch curves of the best restart: ``"train_log_likelihood"``
            (exact mean log p(x_n) over the training set, nats), ``"train_elbo"`` and
            ``"seconds"`` (from :func:`pyrolvm.inference.train`; ``train_elbo`` is the
            minibatch objective, scaled by N / B).
        restarts (list of float): final mean training log-likelihood of every restart (nats);
            the best one is kept, as scikit-learn's ``n_init``.
        seconds (float): wall time of all restarts.
    """

    model: GaussianMixture
    guide: object
    params: dict
    history: dict
    restarts: list = field(default_factory=list)
    seconds: float = 0.0


def fit_mixture(x, num_components, covariance="full", guide="map", init="kmeans++", n_init=1,
                epochs=300, batch_size=None, lr=0.05, lr_decay=0.01, num_particles=1, seed=0,
                progress=False, **model_kwargs):
    """Fit a Gaussian mixture to x by SVI under ``TraceEnum_ELBO`` (the assignment summed out
    exactly) with Adam whose learning rate decays geometrically from ``lr`` to
    ``lr * lr_decay`` over the run (Pyro's ``ClippedAdam`` ``lrd``), ``n_init`` times from
    different starts; keeps the restart with the highest training log-likelihood.

    Clears Pyro's param store before every restart; on return it holds the best restart's
    parameters (the returned guide's).

    Args:
        x (torch.Tensor): training data, shape (N, D).
        num_components (int): K, 1 <= K <= N.
        covariance (str): ``"full"`` or ``"diag"``.
        guide (str): ``"map"`` (:class:`MixtureMAP`, point estimates) or ``"meanfield"``
            (:class:`MixtureMeanField`).
        init (str): ``"kmeans++"``, ``"kmeans"`` or ``"random"``
            (:meth:`GaussianMixture.initial_params`).
        n_init (int): restarts (seeds ``seed, seed + 1, ...``).
        epochs (int): passes over the data per restart.
        batch_size (int or None): minibatch size (the plate subsamples, scaling by N / B);
            None for full-batch steps.
        lr (float): starting learning rate of Adam.
        lr_decay (float): ratio of the final to the starting learning rate, in (0, 1].
        num_particles (int): samples of the global sites per step (only matters for
            ``"meanfield"``).
        seed (int): seed of the first restart (initial centres, minibatch order, samples).
        progress (bool): show progress bars.
        **model_kwargs: prior settings passed to :meth:`GaussianMixture.from_data`.

    Returns:
        MixtureFit

    Raises:
        ConfigError: K < 1 or K > N, an unknown covariance type, guide or initialization,
            n_init < 1, lr_decay outside (0, 1].
        DataError: x is not a finite (N, D) float tensor.
        TrainingDiverged: the loss became NaN or infinite.
    """
    if guide not in GUIDES:
        raise ConfigError(f"unknown guide {guide!r}: choose one of {', '.join(GUIDES)}")
    if init not in INITS:
        raise ConfigError(f"unknown initialization {init!r}: choose one of {', '.join(INITS)}")
    if int(n_init) < 1:
        raise ConfigError(f"n_init must be >= 1, got {n_init}")
    if not 0 < lr_decay <= 1:
        raise ConfigError(f"lr_decay must be in (0, 1], got {lr_decay}")
    model = GaussianMixture.from_data(x, num_components, covariance, **model_kwargs)
    check_num_components(num_components, len(x))
    n = len(x)
    batch_size = n if batch_size is None else min(int(batch_size), n)
    steps = max(1, int(epochs) * math.ceil(n / batch_size))
    data = (x, torch.arange(n))
    t0 = time.perf_counter()
    best, restarts = None, []
    for r in range(int(n_init)):
        pyro.clear_param_store()
        pyro.set_rng_seed(seed + r)
        start = model.initial_params(x, init, seed=seed + r)
        g = MixtureMAP(model, start) if guide == "map" else MixtureMeanField(model, start)
        optim = pyro.optim.ClippedAdam({"lr": lr, "lrd": lr_decay ** (1.0 / steps),
                                        "clip_norm": 1e8})
        loss = TraceEnum_ELBO(max_plate_nesting=1, num_particles=int(num_particles))

        def callback(epoch, history, g=g):
            return {"train_log_likelihood": model.log_likelihood(x, g.median()).mean().item()}

        history = train(model, g, data, loss, optim, epochs=int(epochs), batch_size=batch_size,
                        callback=callback, progress=progress)
        final = (history["train_log_likelihood"][-1] if history["train_log_likelihood"]
                 else model.log_likelihood(x, g.median()).mean().item())
        restarts.append(final)
        if best is None or final > best[0]:
            best = (final, g, history, pyro.get_param_store().get_state())
    _, g, history, state = best
    pyro.get_param_store().set_state(state)
    return MixtureFit(model, g, {k: v.detach() for k, v in g.median().items()}, history,
                      restarts, time.perf_counter() - t0)
