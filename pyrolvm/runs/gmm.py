"""Gaussian mixture runs: fit :class:`pyrolvm.models.GaussianMixture` by SVI with the assignment
enumerated (``TraceEnum_ELBO``), with k-means starts and best-of-``n_init`` restarts, and
score it beside scikit-learn's EM on the same split and projection.

``train_gmm(...)`` is ``pyrolvm train gmm`` in one Python call; ``evaluate_gmm(folder)`` is
``pyrolvm evaluate FOLDER`` for a mixture run.
"""

import os
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

import torch

from .. import plots
from ..data import apply_pca, project
from ..errors import ConfigError
from ..fitting import GUIDES, INITS, MixtureFit, fit_mixture
from ..fitting.mixture import em_reference, mixture_scores
from ..models.mixture import COVARIANCES, GaussianMixture, check_num_components
from .common import load_data
from .config import Count, PositiveFloat, Range, RunConfig
from .registry import RunKind, register
from .template import Run, Stage

__all__ = ["GMMConfig", "MixtureFit", "apply_pca", "fit_mixture", "project"]


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


def load(cfg, data=None):
    """The run's images, as they are (the projection is fitted by :func:`parts`), on the CPU:
    the exact figures, the reference and the figures are computed there."""
    return load_data(cfg, "none", data)


def parts(run: Run) -> dict:
    """The PCA (``pca``: its mean and components, fitted on the training images by
    :func:`project`, or the checkpoint's) and the mixture's values (``params``, once fitted).

    Raises:
        ConfigError: more components than training points, a PCA dimension out of range.
    """
    cfg, data = run.cfg, run.data
    if run.evaluating:
        return {"pca": None, "params": None}  # the checkpoint's
    check_num_components(cfg.components, len(data.train))
    xtrain, xtest, pca = project(data, cfg.pca_dim, cfg.seed)
    run.extra["projected"] = xtrain, xtest, pca
    pca_state = {"mean": torch.as_tensor(pca.mean_), "components": torch.as_tensor(pca.components_)}
    return {"pca": pca_state, "params": {}}


def fit(run: Run) -> MixtureFit:
    """The mixture by SVI (:func:`~pyrolvm.fitting.fit_mixture`) on the projected training
    images, on the run's device; its values (on the CPU) become the part ``params``."""
    cfg = run.cfg
    xtrain = run.extra["projected"][0]
    result = fit_mixture(
        xtrain.to(run.device),
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
        **run.hooks,
    )
    result.params = {k: v.cpu() for k, v in result.params.items()}
    run.parts["params"] = result.params
    return result


def projected(run: Run):
    """(train, test) projected by the run's PCA: as fitted, or from the checkpoint."""
    if "projected" in run.extra:
        return run.extra["projected"][:2]
    pca = run.parts["pca"]
    return tuple(
        apply_pca(x, pca["mean"], pca["components"]) for x in (run.data.train, run.data.test)
    )


def score(run: Run) -> dict:
    """The exact test figures (:func:`evaluate`) of the fitted mixture."""
    cfg, (xtrain, xtest) = run.cfg, projected(run)
    if not run.parts["params"]:
        raise ConfigError(
            "the gmm run stopped before its mixture was fitted: continue it with the same "
            "command and --resume, then evaluate it"
        )
    model = GaussianMixture.from_data(xtrain, cfg.components, cfg.covariance)
    return mixture_scores(model, run.parts["params"], xtrain, xtest, run.data.test_labels)


def report(run: Run) -> dict:
    """``metrics.json``: the exact figures, scikit-learn's EM on the same split and projection
    (:func:`~pyrolvm.fitting.mixture.em_reference`), the restarts, the curves."""
    cfg, result = run.cfg, run.results["fit"]
    xtrain, xtest, pca = run.extra["projected"]
    model = GaussianMixture.from_data(xtrain, cfg.components, cfg.covariance)
    ours = (model, result.params)
    return {
        **score(run),
        **em_reference(
            xtrain,
            xtest,
            cfg.components,
            cfg.covariance,
            cfg.sklearn_n_init,
            cfg.seed,
            run.data.test_labels,
            ours,
        ),
        "num_parameters": model.num_parameters,
        "restarts_train_log_likelihood": result.restarts,
        "seconds": result.seconds,
        "epochs": len(result.history["train_elbo"]),
        "pca_explained_variance": float(pca.explained_variance_ratio_.sum()),
        "curves": result.history,
    }


def draw(run: Run, metrics: dict) -> list[str]:
    """The figures of :func:`figures`."""
    cfg, result = run.cfg, run.results["fit"]
    xtrain, xtest, pca = run.extra["projected"]
    model = GaussianMixture.from_data(xtrain, cfg.components, cfg.covariance)
    return figures(run.folder, model, result.params, xtest, pca, run.data, result.history, cfg)


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


def summary_rows(metrics, cfg):
    """The training summary's rows."""
    return [
        ("train log-likelihood", f"{metrics['train_log_likelihood']:.3f} nats per point"),
        evaluation_rows(metrics)[0],
        (
            f"sklearn EM test log-likelihood (n_init={cfg.sklearn_n_init})",
            f"{metrics['sklearn_test_log_likelihood']:.3f} nats per point",
        ),
        (
            "ours minus EM (paired)",
            f"{metrics['test_log_likelihood_minus_sklearn']:+.3f} ± "
            f"{metrics['test_log_likelihood_minus_sklearn_stderr']:.3f} nats per point",
        ),
        ("BIC (train)", f"{metrics['bic']:.1f}   (sklearn EM: {metrics['sklearn_bic']:.1f})"),
        (
            "test ARI vs labels",
            f"{metrics['test_ari']:.3f}   (sklearn EM: {metrics['sklearn_test_ari']:.3f})",
        ),
        ("seconds", f"{metrics['seconds']:.1f}   (sklearn EM: {metrics['sklearn_seconds']:.1f})"),
    ]


def title(metrics, cfg):
    """The summary's title."""
    batch = "full batch" if cfg.batch_size is None else f"batch {cfg.batch_size}"
    return (
        f"Gaussian mixture on {cfg.dataset}, PCA to {cfg.pca_dim} dims: K={cfg.components}, "
        f"{cfg.covariance} covariances, {cfg.guide} guide, init={cfg.init} x{cfg.n_init}, "
        f"{metrics['epochs']} epochs ({batch}), seed={cfg.seed}"
    )


KIND = register(
    RunKind(
        "gmm",
        GMMConfig,
        "a Gaussian mixture, assignment enumerated, beside scikit-learn's EM",
        build=parts,
        stages=(Stage("fit", fit),),
        score=score,
        report=report,
        figures=draw,
        title=title,
        summary_rows=summary_rows,
        evaluation_rows=evaluation_rows,
        data=load,
        tiny=dict(components=3, pca_dim=3, epochs=4, n_init=2, sklearn_n_init=1),
    )
)
