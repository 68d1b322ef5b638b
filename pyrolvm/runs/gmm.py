"""Gaussian mixture runs: fit :class:`pyrolvm.models.GaussianMixture` by SVI with the assignment
enumerated (``TraceEnum_ELBO``), with k-means starts and best-of-``n_init`` restarts, and
score it beside scikit-learn's EM on the same split and projection.

``train_gmm(...)`` is ``pyrolvm train gmm`` in one Python call; ``evaluate_gmm(folder)`` is
``pyrolvm evaluate FOLDER`` for a mixture run.
"""

import dataclasses
import os
import time
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

import torch

from .. import plots
from ..devices import resolve_device
from ..errors import ConfigError, Interrupted, TrainingDiverged
from ..fitting import GUIDES, INITS, MixtureFit, fit_mixture
from ..inference import mean_and_stderr
from ..models.mixture import COVARIANCES, GaussianMixture, check_num_components
from .common import (
    CHECKPOINT,
    format_summary,
    load_data,
    record_stop,
    reload_run,
    run_folder,
    save_checkpoint,
    write_json,
)
from .config import Count, PositiveFloat, Range, RunConfig
from .registry import RunKind, register

__all__ = ["GMMConfig", "MixtureFit", "evaluate_gmm", "fit_mixture", "project", "train_gmm"]


@dataclass
class GMMConfig(RunConfig):
    """Project the images by PCA fitted on the training split, fit a Gaussian mixture by SVI
    with the component assignment summed out (TraceEnum_ELBO), fit scikit-learn's EM with the
    same K, covariance type and projection, and write the run folder with both test
    log-likelihoods. The flags of ``pyrolvm train gmm``; ``None`` means the dataset's default
    (digits: 1437 training points in full batches; MNIST: 60,000 in minibatches of 1000 under
    the subsampled plate); ``batch_size=None`` after that means full-batch steps."""

    DATASET_DEFAULTS: ClassVar[dict] = {
        "digits": dict(pca_dim=10, epochs=300, batch_size=None, lr=0.05),
        "mnist": dict(pca_dim=50, epochs=50, batch_size=1000, lr=0.1),
    }

    out: str = "runs/gmm"
    """the run folder"""
    pca_dim: Count | None = None
    """PCA dimensions the images are projected to (default: 10 digits, 50 mnist)"""
    components: Count = 10
    """K, mixture components"""
    covariance: Literal[COVARIANCES] = "full"
    """component covariances"""
    guide: Literal[GUIDES] = "map"
    """point estimates (map) or mean-field variational posterior"""
    init: Literal[INITS] = "kmeans"
    """initial centres"""
    n_init: Count = 1
    """restarts; the best is kept"""
    epochs: Count | None = None
    """passes over the data per restart (default: 300 digits, 50 mnist)"""
    batch_size: Count | None = None
    """minibatch size under the subsampled plate (default: full batch digits, 1000 mnist)"""
    lr: PositiveFloat | None = None
    """starting Adam learning rate (default: 0.05 digits, 0.1 mnist)"""
    lr_decay: Annotated[float, Range(0, 1, low_open=True)] = 0.01
    """final / starting learning rate (geometric decay), in (0, 1]"""
    num_particles: Count = 1
    """samples of the global sites per step (meanfield guide)"""
    sklearn_n_init: Count = 5
    """restarts of the scikit-learn EM reference"""


#: Per-dataset defaults of :class:`GMMConfig`.
DATASET_DEFAULTS = GMMConfig.DATASET_DEFAULTS


def project(data, pca_dim, seed=0):
    """Fit PCA with ``pca_dim`` components on the training split (``sklearn.decomposition.PCA``)
    and project both splits.

    Returns:
        (train (N_train, pca_dim), test (N_test, pca_dim), pca): float32 tensors and the fitted
        PCA (``pca.inverse_transform`` maps back to pixels; ``pca.mean_`` and
        ``pca.components_`` are what :func:`apply_pca` needs).

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


def apply_pca(x, mean, components):
    """``(x - mean) @ components.T`` in float64 (computed as ``PCA.transform`` does, the
    centering after the projection), as float32: the projection of a fitted PCA without
    whitening, from its ``mean_`` (D,) and ``components_`` (P, D)."""
    import numpy as np

    c = np.asarray(components, dtype=np.float64)
    xn = x.double().numpy() @ c.T
    xn -= np.asarray(mean, dtype=np.float64).reshape(1, -1) @ c.T
    return torch.as_tensor(xn, dtype=torch.float32)


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
    sk = SKGaussianMixture(
        cfg.components,
        covariance_type=cfg.covariance,
        n_init=cfg.sklearn_n_init,
        random_state=cfg.seed,
    )
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
            os.path.join(folder, names[0]),
            xtest[:, :2],
            z,
            params["locs"][:, :2],
            covs[:, :2, :2],
            f"{data.name} test points on principal axes 1-2, coloured by MAP component\n"
            f"(K={cfg.components}, {cfg.covariance}); ellipses: 1 and 2 sd of each component",
        )
    else:
        names.remove("clusters.png")
    means = torch.as_tensor(
        pca.inverse_transform(params["locs"].double().numpy()), dtype=torch.float32
    )
    order = params["weights"].argsort(descending=True)
    plots.image_grid(
        os.path.join(folder, "component_means.png"),
        means[order],
        data.image_shape,
        "component means in pixel space, by decreasing weight",
        ncols=min(10, len(means)),
    )
    plots.curves(
        os.path.join(folder, "loglik_curve.png"),
        history,
        ["train_log_likelihood"],
        "mean log-likelihood per point (nats)",
        "training log-likelihood (exact)",
    )
    return names


def train_gmm(config=None, data=None, **overrides):
    """Fit a Gaussian mixture to PCA-projected images and write the run folder;
    ``pyrolvm train gmm`` in one call.

    The images are projected to ``pca_dim`` dimensions by PCA fitted on the training split;
    the mixture is fitted by :func:`~pyrolvm.fitting.fit_mixture` (SVI, assignment enumerated);
    scikit-learn's EM with the same K, covariance type, split and projection
    (``n_init=sklearn_n_init``) is fitted and scored in the same run.

    Args:
        config (GMMConfig or None): settings; keyword ``overrides`` replace its fields.
        data (pyrolvm.data.Dataset or None): data to use instead of loading ``config.dataset``.

    Writes into ``config.out``: ``config.json``; ``metrics.json`` (``test_log_likelihood``
    (mean per test point, nats) and its standard error, ``train_log_likelihood``, ``bic`` (on the
    training data), ``test_ari``, the same from scikit-learn prefixed ``sklearn_``,
    ``test_log_likelihood_minus_sklearn`` (paired mean difference per test point) and its
    standard error, the
    restarts' training log-likelihoods, seconds, per-epoch curves); ``checkpoint.pt`` (the
    global site values, the PCA, the config and curves); the PNG figures of ``figures()``.

    Returns:
        dict: the metrics written to ``metrics.json``.

    Raises:
        ConfigError, DataError: bad settings or data (nothing is written).
        TrainingDiverged: the loss became NaN or infinite.
    """
    cfg = dataclasses.replace(config or GMMConfig(), **overrides).resolved()
    data = load_data(cfg, "none", data)
    check_num_components(cfg.components, len(data.train))
    xtrain, xtest, pca = project(data, cfg.pca_dim, cfg.seed)
    config_dict = dataclasses.asdict(cfg) | {"data_dim": data.data_dim}
    with run_folder(cfg.out, "gmm", config_dict, cfg.resume, cfg.overwrite) as (folder, saved):
        if saved is None:
            write_json(os.path.join(folder, "config.json"), config_dict)
        pca_state = {
            "pca_mean": torch.as_tensor(pca.mean_),
            "pca_components": torch.as_tensor(pca.components_),
        }

        last = {}

        def save(fit_state, extra=None):
            last["fit"] = fit_state
            save_checkpoint(
                os.path.join(folder, CHECKPOINT),
                {
                    "kind": "gmm",
                    "config": config_dict,
                    "fit": fit_state,
                    **pca_state,
                    **(extra or {}),
                },
            )

        device = resolve_device(cfg.device)
        try:
            fit = fit_mixture(
                xtrain.to(device),
                cfg.components,
                cfg.covariance,
                guide=cfg.guide,
                init=cfg.init,
                n_init=cfg.n_init,
                epochs=cfg.epochs,
                batch_size=cfg.batch_size,
                lr=cfg.lr,
                lr_decay=cfg.lr_decay,
                num_particles=cfg.num_particles,
                seed=cfg.seed,
                progress=cfg.progress,
                checkpoint=save,
                resume_from=saved and saved["fit"],
            )
        except (TrainingDiverged, Interrupted) as exc:
            raise record_stop(folder, exc) from None
        # the exact figures, the scikit-learn reference and the figures on the CPU
        fit.params = {k: v.cpu() for k, v in fit.params.items()}
        fit.model = GaussianMixture.from_data(xtrain, cfg.components, cfg.covariance)
        save(
            last["fit"],
            {"epoch": len(fit.history["train_elbo"]), "history": fit.history, "params": fit.params},
        )
        metrics = {
            "status": "ok",
            "complete": True,
            **evaluate(fit.model, fit.params, xtrain, xtest, data.test_labels),
        }
        reference, sk = sklearn_reference(xtrain, xtest, cfg)
        from sklearn.metrics import adjusted_rand_score

        reference["sklearn_test_ari"] = float(
            adjusted_rand_score(data.test_labels.numpy(), sk.predict(xtest.double().numpy()))
        )
        # paired over the same test points: ours minus EM, with the standard error of the mean
        # per-point difference (the between-point spread cancels)
        diff = fit.model.log_likelihood(xtest, fit.params).double() - torch.as_tensor(
            sk.score_samples(xtest.double().numpy())
        )
        (
            reference["test_log_likelihood_minus_sklearn"],
            reference["test_log_likelihood_minus_sklearn_stderr"],
        ) = mean_and_stderr(diff)
        metrics.update(reference)
        metrics.update(
            {
                "num_parameters": fit.model.num_parameters,
                "restarts_train_log_likelihood": fit.restarts,
                "seconds": fit.seconds,
                "epochs": len(fit.history["train_elbo"]),
                "pca_explained_variance": float(pca.explained_variance_ratio_.sum()),
                "curves": fit.history,
            }
        )
        metrics["figures"] = figures(
            folder, fit.model, fit.params, xtest, pca, data, fit.history, cfg
        )
        write_json(os.path.join(folder, "metrics.json"), metrics)
    return metrics


def evaluate_gmm(folder, data_root=None, progress=True, device="auto"):
    """Reload the checkpoint of a mixture run folder and recompute its exact test figures
    (equal to those in its metrics.json).

    Returns:
        dict: ``train_log_likelihood``, ``test_log_likelihood``, ``test_log_likelihood_stderr``,
        ``bic``, ``test_ari``.

    Raises:
        ConfigError: no valid checkpoint in ``folder``, or a checkpoint of another kind of run.
    """
    # the exact figures are computed on the CPU whatever the device
    state, cfg, _ = reload_run(folder, "gmm", GMMConfig, data_root, progress, device=device)
    data = load_data(cfg, "none")
    xtrain = apply_pca(data.train, state["pca_mean"], state["pca_components"])
    xtest = apply_pca(data.test, state["pca_mean"], state["pca_components"])
    model = GaussianMixture.from_data(xtrain, cfg.components, cfg.covariance)
    return evaluate(model, state["params"], xtrain, xtest, data.test_labels)


def evaluation_rows(metrics):
    """The rows ``pyrolvm evaluate`` prints for a mixture run."""
    return [
        (
            "test log-likelihood",
            f"{metrics['test_log_likelihood']:.3f} ± "
            f"{metrics['test_log_likelihood_stderr']:.3f} nats per point",
        ),
        ("BIC (train)", f"{metrics['bic']:.1f}"),
        ("test ARI vs labels", f"{metrics['test_ari']:.3f}"),
    ]


def summary(metrics, cfg, folder):
    """The summary table printed at the end of ``pyrolvm train gmm``."""
    cfg = cfg.resolved()
    rows = [
        ("train log-likelihood", f"{metrics['train_log_likelihood']:.3f} nats per point"),
        (
            "test log-likelihood",
            f"{metrics['test_log_likelihood']:.3f} ± "
            f"{metrics['test_log_likelihood_stderr']:.3f} nats per point",
        ),
        (
            f"sklearn EM test log-likelihood (n_init={cfg.sklearn_n_init})",
            f"{metrics['sklearn_test_log_likelihood']:.3f} nats per point",
        ),
        (
            "ours minus EM (paired)",
            f"{metrics['test_log_likelihood_minus_sklearn']:+.3f} ± "
            f"{metrics['test_log_likelihood_minus_sklearn_stderr']:.3f} "
            "nats per point",
        ),
        ("BIC (train)", f"{metrics['bic']:.1f}   (sklearn EM: {metrics['sklearn_bic']:.1f})"),
        (
            "test ARI vs labels",
            f"{metrics['test_ari']:.3f}   (sklearn EM: {metrics['sklearn_test_ari']:.3f})",
        ),
        ("seconds", f"{metrics['seconds']:.1f}   (sklearn EM: {metrics['sklearn_seconds']:.1f})"),
        (
            "run folder",
            f"{folder}  (config.json, metrics.json, {CHECKPOINT}, {', '.join(metrics['figures'])})",
        ),
    ]
    batch = "full batch" if cfg.batch_size is None else f"batch {cfg.batch_size}"
    title = (
        f"Gaussian mixture on {cfg.dataset}, PCA to {cfg.pca_dim} dims: K={cfg.components}, "
        f"{cfg.covariance} covariances, {cfg.guide} guide, init={cfg.init} x{cfg.n_init}, "
        f"{metrics['epochs']} epochs ({batch}), seed={cfg.seed}"
    )
    return format_summary(title, rows)


KIND = register(
    RunKind(
        "gmm",
        GMMConfig,
        train_gmm,
        evaluate_gmm,
        summary,
        evaluation_rows,
        description="a Gaussian mixture, assignment enumerated, beside scikit-learn's EM",
    )
)
