"""Gaussian mixture runs: fit :class:`pyrolvm.models.GaussianMixture` by SVI with the assignment
enumerated (``TraceEnum_ELBO``), with k-means starts and best-of-``n_init`` restarts, and
score it beside scikit-learn's EM on the same split and projection.

``train_gmm(...)`` is ``pyrolvm train gmm`` in one Python call; ``evaluate_gmm(folder)`` is
``pyrolvm evaluate FOLDER`` for a mixture run.
"""

import dataclasses
import os
import time
from dataclasses import dataclass, field

import pyro
import torch
from pyro.infer import TraceEnum_ELBO

from .. import plots
from ..data import check_data, load
from ..errors import ConfigError
from ..guides.mixture import MixtureMAP, MixtureMeanField
from ..inference import mean_and_stderr, train
from ..models.mixture import COVARIANCES, INITS, GaussianMixture, check_num_components
from .common import (CHECKPOINT, format_summary, load_checkpoint, run_dir, save_checkpoint,
                     with_dataset_defaults, write_json)

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


def fit_mixture(x, num_components, covariance="full", guide="map", init="kmeans", n_init=1,
                epochs=300, batch_size=None, lr=0.05, lr_decay=0.01, warmup=0.1, num_particles=1,
                seed=0,
                progress=False, **model_kwargs):
    """Fit a Gaussian mixture to x by SVI under ``TraceEnum_ELBO`` (the assignment summed out
    exactly) with Adam whose learning rate rises linearly over the first ``warmup`` fraction of
    the epochs (full-size first steps in every coordinate would throw away the k-means start)
    and decays geometrically to ``lr * lr_decay`` by the last epoch (Pyro's ``LambdaLR``,
    stepped once per epoch), ``n_init`` times from
    different starts; keeps the restart with the highest training log-likelihood.

    Clears Pyro's param store before every restart; on return it holds the best restart's
    parameters (the returned guide's).

    Args:
        x (torch.Tensor): training data, shape (N, D).
        num_components (int): K, 1 <= K <= N.
        covariance (str): ``"full"`` or ``"diag"``.
        guide (str): ``"map"`` (:class:`MixtureMAP`, point estimates) or ``"meanfield"``
            (:class:`MixtureMeanField`).
        init (str): ``"kmeans"`` (Lloyd's k-means from a k-means++ seeding, scikit-learn's
            default; on digits it reaches EM's optima where the bare seeding can stall in worse
            ones), ``"kmeans++"`` or ``"random"`` (:meth:`GaussianMixture.initial_params`).
        n_init (int): restarts (seeds ``seed, seed + 1, ...``).
        epochs (int): passes over the data per restart.
        batch_size (int or None): minibatch size (the plate subsamples, scaling by N / B);
            None for full-batch steps.
        lr (float): starting learning rate of Adam.
        lr_decay (float): ratio of the final to the peak learning rate, in (0, 1].
        warmup (float): fraction of the epochs over which the learning rate rises to ``lr``.
        num_particles (int): samples of the global sites per step (only matters for
            ``"meanfield"``).
        seed (int): seed of the first restart (initial centres, minibatch order, samples).
        progress (bool): show progress bars.
        **model_kwargs: prior settings passed to :meth:`GaussianMixture.from_data`.

    Returns:
        MixtureFit

    Raises:
        ConfigError: K < 1 or K > N, an unknown covariance type, guide or initialization,
            n_init < 1, lr <= 0, lr_decay outside (0, 1].
        DataError: x is not a finite (N, D) float tensor.
        TrainingDiverged: the loss became NaN or infinite.
    """
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
    model = GaussianMixture.from_data(x, num_components, covariance, **model_kwargs)
    check_num_components(num_components, len(x))
    n = len(x)
    batch_size = n if batch_size is None else min(int(batch_size), n)
    warm = max(1, round(warmup * int(epochs)))

    def schedule(epoch):
        """Factor of ``lr`` in epoch ``epoch`` (0-based): linear warm-up, geometric decay."""
        return min(1.0, (epoch + 1) / warm) * lr_decay ** (epoch / max(1, int(epochs) - 1))

    data = (x, torch.arange(n))
    t0 = time.perf_counter()
    best, restarts = None, []
    for r in range(int(n_init)):
        pyro.clear_param_store()
        pyro.set_rng_seed(seed + r)
        start = model.initial_params(x, init, seed=seed + r)
        g = MixtureMAP(model, start) if guide == "map" else MixtureMeanField(model, start)
        optim = pyro.optim.LambdaLR({"optimizer": torch.optim.Adam, "optim_args": {"lr": lr},
                                     "lr_lambda": schedule})
        loss = TraceEnum_ELBO(max_plate_nesting=1, num_particles=int(num_particles))

        def callback(epoch, history, g=g, optim=optim):
            optim.step()  # the learning-rate schedule advances once per epoch
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


#: Per-dataset defaults for settings left as ``None``: digits (1437 training points) in full
#: batches, MNIST (60,000) in minibatches of 1000 under the subsampled plate.
DATASET_DEFAULTS = {
    "digits": dict(pca_dim=10, epochs=300, batch_size=None, lr=0.05),
    "mnist": dict(pca_dim=50, epochs=50, batch_size=1000, lr=0.1),
}


@dataclass
class GMMConfig:
    """Settings of one Gaussian-mixture run (the flags of ``pyrolvm train gmm``). ``None``
    means the dataset's default (:data:`DATASET_DEFAULTS`); ``batch_size=None`` after that
    means full-batch steps."""

    dataset: str = "digits"
    data_root: str = None
    pca_dim: int = None
    components: int = 10
    covariance: str = "full"
    guide: str = "map"
    init: str = "kmeans"
    n_init: int = 1
    epochs: int = None
    batch_size: int = None
    lr: float = None
    lr_decay: float = 0.01
    num_particles: int = 1
    seed: int = 0
    sklearn_n_init: int = 5
    out: str = "runs/gmm"
    progress: bool = True

    def resolved(self):
        """A copy with the dataset's defaults filled in (``batch_size`` may stay None)."""
        values = with_dataset_defaults(self, DATASET_DEFAULTS)
        return GMMConfig(**values)


def _check_config(cfg):
    if cfg.covariance not in COVARIANCES:
        raise ConfigError(
            f"unknown covariance type {cfg.covariance!r}: choose one of {', '.join(COVARIANCES)}"
        )
    if cfg.guide not in GUIDES:
        raise ConfigError(f"unknown guide {cfg.guide!r}: choose one of {', '.join(GUIDES)}")
    check_num_components(cfg.components)
    if not cfg.lr > 0:
        raise ConfigError(f"the learning rate must be positive, got {cfg.lr}")
    if not 0 < cfg.lr_decay <= 1:
        raise ConfigError(f"--lr-decay must be in (0, 1], got {cfg.lr_decay}")
    for name in ("pca_dim", "n_init", "sklearn_n_init", "num_particles", "epochs", "batch_size"):
        value = getattr(cfg, name)
        if value is None and name == "batch_size":
            continue
        if int(value) != value or value < (0 if name == "epochs" else 1):
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")


def project(data, pca_dim, seed=0):
    """Fit PCA with ``pca_dim`` components on the training split (``sklearn.decomposition.PCA``)
    and project both splits.

    Returns:
        (train (N_train, pca_dim), test (N_test, pca_dim), pca): float32 tensors and the fitted
        PCA (``pca.inverse_transform`` maps back to pixels).

    Raises:
        ConfigError: ``pca_dim`` outside 1 .. min(N_train, D).
    """
    from sklearn.decomposition import PCA

    n, d = data.train.shape
    if not 1 <= pca_dim <= min(n, d):
        raise ConfigError(
            f"--pca-dim must be between 1 and {min(n, d)} (the training images have {d} pixels, "
            f"{n} rows), got {pca_dim}"
        )
    pca = PCA(int(pca_dim), random_state=seed).fit(data.train.double().numpy())
    train = torch.as_tensor(pca.transform(data.train.double().numpy()), dtype=torch.float32)
    test = torch.as_tensor(pca.transform(data.test.double().numpy()), dtype=torch.float32)
    return train, test, pca


def sklearn_reference(xtrain, xtest, cfg):
    """scikit-learn's EM (``sklearn.mixture.GaussianMixture``, same K and covariance type,
    ``n_init=cfg.sklearn_n_init``, ``random_state=cfg.seed``) fitted on xtrain and scored on
    both splits.

    Returns:
        (dict of ``sklearn_train_log_likelihood``, ``sklearn_test_log_likelihood`` (mean per
        point, nats), ``sklearn_bic`` (on xtrain), ``sklearn_seconds``, ``sklearn_n_iter``;
        the fitted estimator).
    """
    from sklearn.mixture import GaussianMixture as SKGaussianMixture

    t0 = time.perf_counter()
    sk = SKGaussianMixture(cfg.components, covariance_type=cfg.covariance,
                           n_init=cfg.sklearn_n_init, random_state=cfg.seed)
    xtr, xte = xtrain.double().numpy(), xtest.double().numpy()
    sk.fit(xtr)
    seconds = time.perf_counter() - t0
    return {
        "sklearn_train_log_likelihood": float(sk.score(xtr)),
        "sklearn_test_log_likelihood": float(sk.score(xte)),
        "sklearn_bic": float(sk.bic(xtr)),
        "sklearn_seconds": seconds,
        "sklearn_n_iter": int(sk.n_iter_),
    }, sk


def evaluate(model, params, xtrain, xtest, test_labels=None):
    """Exact figures of a fitted mixture: mean train and test log-likelihood per point (nats)
    with the test standard error, BIC on the training data, and (with labels) the adjusted
    Rand index of the MAP assignments of the test points."""
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


def figures(folder, model, params, xtest, pca, data, history, cfg):
    """Write clusters.png (test points on the first two principal axes, coloured by MAP
    component, with each component's exact 2-D marginal ellipses), component_means.png (the
    means mapped back to pixels) and loglik_curve.png; return their file names."""
    names = ["clusters.png", "component_means.png", "loglik_curve.png"]
    z = model.assign(xtest, params, temperature=0)
    covs = model.covariances(params)
    if xtest.shape[-1] >= 2:
        plots.mixture_clusters(
            os.path.join(folder, names[0]), xtest[:, :2], z, params["locs"][:, :2],
            covs[:, :2, :2],
            f"{data.name} test points on principal axes 1-2, coloured by MAP component\n"
            f"(K={cfg.components}, {cfg.covariance}); ellipses: 1 and 2 sd of each component")
    else:
        names.remove("clusters.png")
    means = torch.as_tensor(pca.inverse_transform(params["locs"].double().numpy()),
                            dtype=torch.float32)
    order = params["weights"].argsort(descending=True)
    plots.image_grid(os.path.join(folder, "component_means.png"), means[order], data.image_shape,
                     "component means in pixel space, by decreasing weight",
                     ncols=min(10, len(means)))
    plots.curves(os.path.join(folder, "loglik_curve.png"), history, ["train_log_likelihood"],
                 "mean log-likelihood per point (nats)", "training log-likelihood (exact)")
    return names


def _load_data(cfg, data):
    if data is None:
        data = load(cfg.dataset, root=cfg.data_root, binarize="none", seed=cfg.seed)
    check_data(data.train, "the training data")
    check_data(data.test, "the test data")
    return data


def train_gmm(config=None, data=None, **overrides):
    """Fit a Gaussian mixture to PCA-projected images and write the run folder;
    ``pyrolvm train gmm`` in one call.

    The images are projected to ``pca_dim`` dimensions by PCA fitted on the training split;
    the mixture is fitted by :func:`fit_mixture` (SVI, assignment enumerated); scikit-learn's
    EM with the same K, covariance type, split and projection (``n_init=sklearn_n_init``) is
    fitted and scored in the same run.

    Args:
        config (GMMConfig or None): settings; keyword ``overrides`` replace its fields.
        data (pyrolvm.data.Dataset or None): data to use instead of loading ``config.dataset``.

    Writes into ``config.out``: ``config.json``; ``metrics.json`` (``test_log_likelihood``
    (mean per test point, nats) and its standard error, ``train_log_likelihood``, ``bic`` (on the
    training data), ``test_ari``, the same from scikit-learn prefixed ``sklearn_``,
    ``test_log_likelihood_minus_sklearn`` (paired mean difference per test point) and its
    standard error, the
    restarts' training log-likelihoods, seconds, per-epoch curves); ``checkpoint.pt`` (the
    global site values, the PCA, the config and curves); the PNG figures of :func:`figures`.

    Returns:
        dict: the metrics written to ``metrics.json``.

    Raises:
        ConfigError, DataError: bad settings or data (nothing is written).
        TrainingDiverged: the loss became NaN or infinite.
    """
    cfg = dataclasses.replace(config or GMMConfig(), **overrides).resolved()
    _check_config(cfg)
    data = _load_data(cfg, data)
    check_num_components(cfg.components, len(data.train))
    xtrain, xtest, pca = project(data, cfg.pca_dim, cfg.seed)
    folder = run_dir(cfg.out)
    config_dict = dataclasses.asdict(cfg) | {"data_dim": data.data_dim}
    write_json(os.path.join(folder, "config.json"), config_dict)
    fit = fit_mixture(xtrain, cfg.components, cfg.covariance, guide=cfg.guide, init=cfg.init,
                      n_init=cfg.n_init, epochs=cfg.epochs, batch_size=cfg.batch_size,
                      lr=cfg.lr, lr_decay=cfg.lr_decay, num_particles=cfg.num_particles,
                      seed=cfg.seed, progress=cfg.progress)
    save_checkpoint(os.path.join(folder, CHECKPOINT), {
        "kind": "gmm", "config": config_dict, "epoch": len(fit.history["train_elbo"]),
        "history": fit.history, "params": fit.params, "guide": pyro.get_param_store().get_state(),
        "pca": pca,
    })
    metrics = {"status": "ok",
               **evaluate(fit.model, fit.params, xtrain, xtest, data.test_labels)}
    reference, sk = sklearn_reference(xtrain, xtest, cfg)
    from sklearn.metrics import adjusted_rand_score

    reference["sklearn_test_ari"] = float(
        adjusted_rand_score(data.test_labels.numpy(), sk.predict(xtest.double().numpy())))
    # paired over the same test points: ours minus EM, with the standard error of the mean
    # per-point difference (the between-point spread cancels)
    diff = (fit.model.log_likelihood(xtest, fit.params).double()
            - torch.as_tensor(sk.score_samples(xtest.double().numpy())))
    reference["test_log_likelihood_minus_sklearn"], reference[
        "test_log_likelihood_minus_sklearn_stderr"] = mean_and_stderr(diff)
    metrics.update(reference)
    metrics.update({
        "num_parameters": fit.model.num_parameters,
        "restarts_train_log_likelihood": fit.restarts,
        "seconds": fit.seconds,
        "epochs": len(fit.history["train_elbo"]),
        "pca_explained_variance": float(pca.explained_variance_ratio_.sum()),
        "curves": fit.history,
    })
    metrics["figures"] = figures(folder, fit.model, fit.params, xtest, pca, data, fit.history, cfg)
    write_json(os.path.join(folder, "metrics.json"), metrics)
    return metrics


def evaluate_gmm(folder, data_root=None):
    """Reload the checkpoint of a mixture run folder and recompute its exact test figures
    (equal to those in its metrics.json).

    Returns:
        dict: ``train_log_likelihood``, ``test_log_likelihood``, ``test_log_likelihood_stderr``,
        ``bic``, ``test_ari``.

    Raises:
        ConfigError: no checkpoint in ``folder``, or a checkpoint of another kind of run.
    """
    state = load_checkpoint(folder)
    if state.get("kind") != "gmm":
        raise ConfigError(f"{folder!r} holds a {state.get('kind')!r} run, not a gmm run")
    saved = dict(state["config"])
    saved.pop("data_dim")
    cfg = dataclasses.replace(GMMConfig(**saved), data_root=data_root or saved["data_root"])
    data = _load_data(cfg, None)
    pca = state["pca"]
    xtrain = torch.as_tensor(pca.transform(data.train.double().numpy()), dtype=torch.float32)
    xtest = torch.as_tensor(pca.transform(data.test.double().numpy()), dtype=torch.float32)
    model = GaussianMixture.from_data(xtrain, cfg.components, cfg.covariance)
    return evaluate(model, state["params"], xtrain, xtest, data.test_labels)


def summary(metrics, cfg, folder):
    """The summary table printed at the end of ``pyrolvm train gmm``."""
    cfg = cfg.resolved()
    rows = [
        ("train log-likelihood", f"{metrics['train_log_likelihood']:.3f} nats per point"),
        ("test log-likelihood", f"{metrics['test_log_likelihood']:.3f} ± "
                                f"{metrics['test_log_likelihood_stderr']:.3f} nats per point"),
        (f"sklearn EM test log-likelihood (n_init={cfg.sklearn_n_init})",
         f"{metrics['sklearn_test_log_likelihood']:.3f} nats per point"),
        ("ours minus EM (paired)", f"{metrics['test_log_likelihood_minus_sklearn']:+.3f} ± "
                                   f"{metrics['test_log_likelihood_minus_sklearn_stderr']:.3f} "
                                   "nats per point"),
        ("BIC (train)", f"{metrics['bic']:.1f}   (sklearn EM: {metrics['sklearn_bic']:.1f})"),
        ("test ARI vs labels", f"{metrics['test_ari']:.3f}   (sklearn EM: "
                               f"{metrics['sklearn_test_ari']:.3f})"),
        ("seconds", f"{metrics['seconds']:.1f}   (sklearn EM: {metrics['sklearn_seconds']:.1f})"),
        ("run folder", f"{folder}  (config.json, metrics.json, {CHECKPOINT}, "
                       f"{', '.join(metrics['figures'])})"),
    ]
    batch = "full batch" if cfg.batch_size is None else f"batch {cfg.batch_size}"
    title = (f"Gaussian mixture on {cfg.dataset}, PCA to {cfg.pca_dim} dims: K={cfg.components}, "
             f"{cfg.covariance} covariances, {cfg.guide} guide, init={cfg.init} x{cfg.n_init}, "
             f"{metrics['epochs']} epochs ({batch}), seed={cfg.seed}")
    return format_summary(title, rows)
