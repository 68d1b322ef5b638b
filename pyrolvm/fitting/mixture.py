"""Fitting Gaussian mixtures by SVI with the assignment enumerated, from k-means starts."""

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyro
import torch
from pyro.infer import TraceEnum_ELBO

from ..errors import ConfigError
from ..guides.mixture import MixtureMAP, MixtureMeanField
from ..inference import (
    load_param_state,
    make_optim,
    mean_and_stderr,
    param_state,
    rng_state,
    set_rng_state,
    train,
)
from ..models.mixture import GaussianMixture, check_num_components

#: How :func:`initial_params` picks the starting centres.
INITS = ("kmeans++", "kmeans", "random")
#: The guides :func:`fit_mixture` can fit.
GUIDES = ("map", "meanfield")


def _moments(model, x, labels, reg):
    k, d = model.num_components, model.data_dim
    counts = torch.bincount(labels, minlength=k).double()
    weights = (counts + 1) / (counts.sum() + k)
    overall_mean = x.mean(0)
    overall_cov = (
        torch.atleast_2d(torch.cov(x.T))
        if len(x) > 1
        else torch.eye(d, dtype=x.dtype, device=x.device)
    )
    locs, covs = [], []
    for j in range(k):
        xj = x[labels == j]
        locs.append(xj.mean(0) if len(xj) else overall_mean)
        covs.append(torch.atleast_2d(torch.cov(xj.T)) if len(xj) > 1 else overall_cov)
    locs, covs = torch.stack(locs), torch.stack(covs)
    covs = covs + reg * torch.eye(d, dtype=x.dtype, device=x.device)
    return model.params_from_moments(weights, locs, covs)


@torch.no_grad()
def initial_params(
    model: GaussianMixture,
    x: torch.Tensor,
    method: str = "kmeans++",
    seed: int = 0,
    reg: float = 1e-6,
) -> dict[str, torch.Tensor]:
    """Starting values of a mixture's global sites from the data, against the collapse of
    components onto few points that random starts cause (pyro-ppl/pyro#635): pick K centres,
    assign every point to its nearest centre, and set each component's weight, mean and
    covariance to the moments of its points (plus ``reg`` on the variances; a component with
    fewer than two points gets the whole data's covariance).

    Args:
        model (GaussianMixture): the mixture (its K, D and covariance type).
        x (torch.Tensor): training data, shape (N, D).
        method (str): how to pick the centres: ``"kmeans++"`` (the D^2-weighted seeding of
            Arthur & Vassilvitskii 2007, ``sklearn.cluster.kmeans_plusplus``), ``"kmeans"``
            (Lloyd's k-means from that seeding, ``sklearn.cluster.KMeans``: scikit-learn's
            ``GaussianMixture`` default) or ``"random"`` (K distinct datapoints drawn
            uniformly, Forgy's method).
        seed (int): seed of the centre selection (restarts use different seeds).
        reg (float): added to every variance, as scikit-learn's ``reg_covar``.

    Returns:
        dict: site name -> tensor, ``weights`` (K,), ``locs`` (K, D), ``scales`` (K, D) and
        for full covariances ``corr`` (K, D, D).

    Raises:
        DataError: x is not a finite (N, D) float tensor of the model's dimension.
        ConfigError: K > N or an unknown method.
    """
    model.check_x(x, "training data")
    k = check_num_components(model.num_components, len(x))
    if method not in INITS:
        raise ConfigError(f"unknown initialization {method!r}: choose one of {', '.join(INITS)}")
    xn = x.detach().double().cpu().numpy()
    if method == "random":
        gen = torch.Generator().manual_seed(int(seed))
        centres = x[torch.randperm(len(x), generator=gen)[:k].to(x.device)].double()
        labels = torch.cdist(x.double(), centres).argmin(-1)
    elif method == "kmeans++":
        from sklearn.cluster import kmeans_plusplus

        centres, _ = kmeans_plusplus(xn, k, random_state=int(seed))
        labels = torch.cdist(x.double(), torch.as_tensor(centres, device=x.device)).argmin(-1)
    else:
        from sklearn.cluster import KMeans

        kmeans = KMeans(k, n_init=1, random_state=int(seed))  # pyright: ignore[reportArgumentType]
        labels = kmeans.fit(xn).labels_
        labels = torch.as_tensor(labels, dtype=torch.int64, device=x.device)
    return _moments(model, x.double(), labels, reg)


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


def fit_mixture(
    x: torch.Tensor,
    num_components: int,
    covariance: str = "full",
    guide: str = "map",
    init: str = "kmeans",
    n_init: int = 1,
    epochs: int = 300,
    batch_size: int | None = None,
    lr: float = 0.05,
    lr_decay: float = 0.01,
    warmup: float = 0.1,
    num_particles: int = 1,
    seed: int = 0,
    progress: bool = False,
    checkpoint: Callable[[dict], None] | None = None,
    resume_from: dict | None = None,
    **model_kwargs: Any,
) -> MixtureFit:
    """Fit a Gaussian mixture to x by SVI under ``TraceEnum_ELBO`` (the assignment summed out
    exactly) with Adam whose learning rate rises linearly over the first ``warmup`` fraction of
    the epochs (full-size first steps would throw away the k-means start) and decays
    geometrically to ``lr * lr_decay`` by the last (:func:`warm_and_decay`, the ``lr_lambda``
    of :func:`~pyrolvm.inference.make_optim`, stepped once per epoch), ``n_init`` times from
    different starts (seeds ``seed, seed + 1, ...``; Pyro's param store cleared before each);
    keeps the restart with the highest training log-likelihood, whose parameters the param
    store holds on return.

    Args:
        x (torch.Tensor): training data, shape (N, D).
        num_components (int): K, 1 <= K <= N.
        covariance (str): ``"full"`` or ``"diag"``.
        guide (str): ``"map"`` (:class:`~pyrolvm.guides.MixtureMAP`, point estimates) or
            ``"meanfield"`` (:class:`~pyrolvm.guides.MixtureMeanField`).
        init (str): ``"kmeans"`` (Lloyd's k-means from a k-means++ seeding, scikit-learn's
            default: on digits it reaches EM's optima), ``"kmeans++"`` or ``"random"``
            (:func:`initial_params`).
        epochs, batch_size (int, int or None): passes over the data per restart; minibatch
            size (the plate subsamples, scaling by N / B; None: full batch).
        num_particles (int): samples of the global sites per step (``"meanfield"``).
        checkpoint (callable or None): ``checkpoint(state)`` at the end of every epoch and of
            every restart (and on interruption): the restarts so far, the best one's
            parameters, :func:`~pyrolvm.inference.train`'s state.
        resume_from (dict or None): such a state; the fit continues from it and ends as the
            uninterrupted fit would (bitwise on CPU).
        **model_kwargs: prior settings passed to :meth:`~pyrolvm.models.GaussianMixture.from_data`.

    Returns:
        MixtureFit

    Raises:
        ConfigError: K < 1 or K > N, an unknown covariance type, guide or initialization,
            n_init < 1, lr <= 0, lr_decay outside (0, 1].
        DataError: x is not a finite (N, D) float tensor.
        TrainingDiverged: the loss became NaN or infinite.
    """
    check_fit_options(guide, init, n_init, lr, lr_decay)
    model = GaussianMixture.from_data(x, num_components, covariance, **model_kwargs)
    check_num_components(num_components, len(x))
    n = len(x)
    batch_size = n if batch_size is None else min(int(batch_size), n)
    schedule = warm_and_decay(int(epochs), warmup, lr_decay)
    data = (x, torch.arange(n, device=x.device))
    t0 = time.perf_counter()

    def make_guide(r):
        start = initial_params(model, x, init, seed=seed + r)
        return MixtureMAP(model, start) if guide == "map" else MixtureMeanField(model, start)

    state = resume_from or {"restart": 0, "restarts": [], "best": None, "train": None}
    restarts, best = list(state["restarts"]), state["best"]
    for r in range(state["restart"], int(n_init)):
        pyro.clear_param_store()
        pyro.set_rng_seed(seed + r)
        g = make_guide(r)

        def save(train_state, r=r, checkpoint=checkpoint):
            assert checkpoint is not None
            # the restarts and the best so far when the checkpoint is taken, by design
            state = {"restart": r, "restarts": list(restarts), "best": best}  # noqa: B023
            checkpoint({**state, "train": train_state})

        options: dict[str, Any] = dict(epochs=int(epochs), batch_size=batch_size)
        options["progress"] = progress
        options["checkpoint"] = save if checkpoint is not None else None
        options["resume_from"] = state["train"] if r == state["restart"] else None
        history = fit_restart(model, g, data, lr, schedule, int(num_particles), **options)
        curve = history.get("train_log_likelihood")
        final = curve[-1] if curve else model.log_likelihood(x, g.median()).mean().item()
        restarts.append(final)
        if best is None or final > best["final"]:
            best = {"index": r, "final": final, "params": param_state(), "history": history}
        if checkpoint is not None:
            checkpoint({"restart": r + 1, "restarts": list(restarts), "best": best, "train": None})
    g = rebuilt(make_guide, best, data)
    params = {k: v.detach() for k, v in g.median().items()}
    return MixtureFit(model, g, params, best["history"], restarts, time.perf_counter() - t0)


def fit_restart(
    model: GaussianMixture,
    guide: Any,
    data: tuple,
    lr: float,
    schedule: Callable[[int], float],
    num_particles: int,
    **train_options: Any,
) -> dict:
    """One restart of :func:`fit_mixture`: :func:`~pyrolvm.inference.train` under
    ``TraceEnum_ELBO`` with Adam at ``lr`` times ``schedule(epoch)``, the training points'
    exact mean log-likelihood after each epoch (``train_log_likelihood``)."""
    optim = make_optim(lr, lr_lambda=schedule)
    loss = TraceEnum_ELBO(max_plate_nesting=1, num_particles=num_particles)

    def callback(epoch, history):
        return {"train_log_likelihood": model.log_likelihood(data[0], guide.median()).mean().item()}

    return train(model, guide, data, loss, optim, callback=callback, **train_options)


def check_fit_options(guide: str, init: str, n_init: int, lr: float, lr_decay: float) -> None:
    """Raise :class:`~pyrolvm.ConfigError` for an unknown guide or initialization, n_init < 1,
    lr <= 0 or lr_decay outside (0, 1]."""
    if guide not in GUIDES:
        raise ConfigError(f"unknown guide {guide!r}: choose one of {', '.join(GUIDES)}")
    if init not in INITS:
        raise ConfigError(f"unknown initialization {init!r}: choose one of {', '.join(INITS)}")
    if int(n_init) < 1:
        raise ConfigError(f"n_init must be >= 1, got {n_init}")
    if not lr > 0:
        raise ConfigError(f"the learning rate must be positive, got {lr}")
    if not 0 < lr_decay <= 1:
        raise ConfigError(f"lr_decay must be in (0, 1], got {lr_decay}")


def warm_and_decay(epochs: int, warmup: float, lr_decay: float) -> Callable[[int], float]:
    """The factor of the learning rate in epoch ``epoch`` (0-based): a linear rise over the
    first ``warmup`` fraction of the ``epochs``, then a geometric decay to ``lr_decay``."""
    warm = max(1, round(warmup * epochs))

    def schedule(epoch):
        return min(1.0, (epoch + 1) / warm) * lr_decay ** (epoch / max(1, epochs - 1))

    return schedule


def rebuilt(make_guide: Callable[[int], Any], best: dict, data: tuple) -> Any:
    """The best restart's guide, rebuilt with its parameters (``best["params"]``) in a cleared
    param store; the random state is left as the last restart left it."""
    saved_rng = rng_state()
    pyro.clear_param_store()
    g = make_guide(best["index"])
    with torch.no_grad():
        g(*data)
    load_param_state(best["params"])
    set_rng_state(saved_rng)
    return g


def mixture_scores(
    model: GaussianMixture,
    params: dict,
    xtrain: torch.Tensor,
    xtest: torch.Tensor,
    test_labels: torch.Tensor | None = None,
) -> dict[str, float]:
    """Exact figures of a fitted mixture (``params``, as :attr:`MixtureFit.params`): mean
    train and test log-likelihood per point (nats) with the test standard error, BIC on the
    training data, and (with labels) the adjusted Rand index of the MAP assignments of the
    test points (``test_ari``)."""
    from sklearn.metrics import adjusted_rand_score

    test_ll, test_se = mean_and_stderr(model.log_likelihood(xtest, params))
    out = {
        "train_log_likelihood": model.log_likelihood(xtrain, params).double().mean().item(),
        "test_log_likelihood": test_ll,
        "test_log_likelihood_stderr": test_se,
        "bic": model.bic(xtrain, params),
    }
    if test_labels is not None:
        z = model.assign(xtest, params, temperature=0)
        out["test_ari"] = float(adjusted_rand_score(test_labels.numpy(), z.numpy()))
    return out


def em_reference(
    xtrain: torch.Tensor,
    xtest: torch.Tensor,
    num_components: int,
    covariance: str,
    n_init: int,
    seed: int,
    test_labels: torch.Tensor,
    ours: tuple[GaussianMixture, dict],
) -> dict[str, float]:
    """scikit-learn's EM (``sklearn.mixture.GaussianMixture``, same K and covariance type,
    ``n_init`` restarts, ``random_state=seed``) fitted on xtrain and scored beside ``ours``
    (a mixture and its values).

    Returns:
        dict: ``sklearn_train_log_likelihood``, ``sklearn_test_log_likelihood`` (mean per
        point, nats), ``sklearn_bic`` (on xtrain), ``sklearn_seconds``, ``sklearn_n_iter``,
        ``sklearn_test_ari``, and ``test_log_likelihood_minus_sklearn`` with its
        ``_stderr``: ours minus EM, paired over the same test points (the standard error of
        the mean per-point difference: the between-point spread cancels).
    """
    from sklearn.metrics import adjusted_rand_score
    from sklearn.mixture import GaussianMixture as SKGaussianMixture

    t0 = time.perf_counter()
    sk = SKGaussianMixture(
        num_components, covariance_type=covariance, n_init=n_init, random_state=seed
    )
    xtr, xte = xtrain.double().numpy(), xtest.double().numpy()
    sk.fit(xtr)
    seconds = time.perf_counter() - t0
    model, params = ours
    diff = model.log_likelihood(xtest, params).double() - torch.as_tensor(sk.score_samples(xte))
    paired = mean_and_stderr(diff)
    return {
        "sklearn_train_log_likelihood": float(sk.score(xtr)),
        "sklearn_test_log_likelihood": float(sk.score(xte)),
        "sklearn_bic": float(sk.bic(xtr)),
        "sklearn_seconds": seconds,
        "sklearn_n_iter": int(sk.n_iter_),
        "sklearn_test_ari": float(adjusted_rand_score(test_labels.numpy(), sk.predict(xte))),
        "test_log_likelihood_minus_sklearn": paired[0],
        "test_log_likelihood_minus_sklearn_stderr": paired[1],
    }
