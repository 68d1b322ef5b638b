"""``pyrolvm train gmm``: a Gaussian mixture fitted by SVI with the assignment enumerated
(:func:`pyrolvm.fitting.fit_mixture`), scored beside scikit-learn's EM on the same split and
PCA projection."""

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
from .config import Count, PositiveFloat, Range, RunConfig, Training
from .registry import RunKind, register
from .template import Run, Stage

__all__ = ["GMMConfig", "MixtureFit", "apply_pca", "fit_mixture", "project"]


@dataclass
class GMMConfig(Training, RunConfig):
    """The flags of ``pyrolvm train gmm``; ``None``: the dataset's default (digits: full
    batches; MNIST: minibatches under the subsampled plate)."""

    DATASET_DEFAULTS: ClassVar[dict] = {
        "digits": dict(pca_dim=10, epochs=300, batch_size=None, lr=0.05),
        "mnist": dict(pca_dim=50, epochs=50, batch_size=1000, lr=0.1),
    }
    GROUPS = {
        "data": ("pca_dim",),
        "training": ("init", "n_init", "lr_decay", "num_particles"),
        "evaluation": ("sklearn_n_init",),
    }

    out: str = "runs/gmm"
    pca_dim: Count | None = None
    """PCA dimensions the images are projected to"""
    components: Count = 10
    """K, mixture components"""
    covariance: Literal[COVARIANCES] = "full"
    """component covariances"""
    guide: Literal[GUIDES] = "map"
    """point estimates or mean-field posterior"""
    init: Literal[INITS] = "kmeans"
    """initial centres"""
    n_init: Count = 1
    """restarts; the best is kept"""
    epochs: Count | None = None
    """passes over the data per restart"""
    batch_size: Count | None = None
    """datapoints per step (None: all)"""
    lr: PositiveFloat | None = None
    """starting Adam learning rate"""
    lr_decay: Annotated[float, Range(0, 1, low_open=True)] = 0.01
    """final / starting learning rate, in (0, 1]"""
    num_particles: Count = 1
    """draws of the global sites per step (meanfield)"""
    sklearn_n_init: Count = 5
    """restarts of scikit-learn's EM, the reference"""


def load(cfg, data=None):
    """The run's images as they are, on the CPU (the projection, the exact figures, the
    reference and the figures are computed there; the fit on the run's device)."""
    return load_data(cfg, "none", data)


def parts(run: Run) -> dict:
    """The PCA (``pca``: its mean and components, fitted on the training images by
    :func:`~pyrolvm.data.project`, or the checkpoint's) and the mixture's values
    (``params``, once fitted).

    Raises:
        ConfigError: more components than training points, a PCA dimension out of range.
    """
    cfg, data = run.cfg, run.data
    if run.evaluating:
        return {"pca": None, "params": None}  # the checkpoint's
    check_num_components(cfg.components, len(data.train))
    xtrain, xtest, pca = run.extra["projected"] = project(data, cfg.pca_dim, cfg.seed)
    mean, components = torch.as_tensor(pca.mean_), torch.as_tensor(pca.components_)
    return {"pca": {"mean": mean, "components": components}, "params": {}}


def fit(run: Run) -> MixtureFit:
    """The mixture by SVI (:func:`~pyrolvm.fitting.fit_mixture`) on the projected training
    images, on the run's device; its values (on the CPU) become the part ``params``."""
    cfg, xtrain = run.cfg, run.extra["projected"][0].to(run.device)
    options = dict(guide=cfg.guide, init=cfg.init, n_init=cfg.n_init, epochs=cfg.epochs)
    options |= dict(batch_size=cfg.batch_size, lr=cfg.lr, lr_decay=cfg.lr_decay)
    options |= dict(num_particles=cfg.num_particles, seed=cfg.seed)
    result = fit_mixture(xtrain, cfg.components, cfg.covariance, **options, **run.hooks)
    result.params = run.parts["params"] = {k: v.cpu() for k, v in result.params.items()}
    return result


def mixture(run: Run):
    """(the mixture, its values, the projected train and test points): as fitted, or from
    the checkpoint (its PCA applied to the data).

    Raises:
        ConfigError: a run stopped before its mixture was fitted.
    """
    if not run.parts["params"]:
        raise ConfigError(
            "the gmm run stopped before its mixture was fitted: continue it with the same "
            "command and --resume, then evaluate it"
        )
    if "projected" in run.extra:
        xtrain, xtest = run.extra["projected"][:2]
    else:
        pca, data = run.parts["pca"], run.data
        xtrain, xtest = (
            apply_pca(x, pca["mean"], pca["components"]) for x in (data.train, data.test)
        )
    model = GaussianMixture.from_data(xtrain, run.cfg.components, run.cfg.covariance)
    return model, run.parts["params"], xtrain, xtest


def score(run: Run) -> dict:
    """The exact test figures (:func:`~pyrolvm.fitting.mixture.mixture_scores`)."""
    return mixture_scores(*mixture(run), run.data.test_labels)


def report(run: Run) -> dict:
    """``metrics.json``: the exact figures, scikit-learn's EM on the same split and projection
    (:func:`~pyrolvm.fitting.mixture.em_reference`), the restarts, the curves."""
    cfg, result, pca = run.cfg, run.results["fit"], run.extra["projected"][2]
    model, params, xtrain, xtest = mixture(run)
    em = (cfg.components, cfg.covariance, cfg.sklearn_n_init, cfg.seed, run.data.test_labels)
    return {
        **mixture_scores(model, params, xtrain, xtest, run.data.test_labels),
        **em_reference(xtrain, xtest, *em, ours=(model, params)),
        "num_parameters": model.num_parameters,
        "restarts_train_log_likelihood": result.restarts,
        "seconds": result.seconds,
        "epochs": len(result.history["train_elbo"]),
        "pca_explained_variance": float(pca.explained_variance_ratio_.sum()),
        "curves": result.history,
    }


def figures(run: Run, metrics: dict) -> list[str]:
    """clusters.png, component_means.png and loglik_curve.png
    (:func:`pyrolvm.plots.mixture_pictures`)."""
    cfg, history, pca = run.cfg, run.results["fit"].history, run.extra["projected"][2]
    model, params, _, xtest = mixture(run)
    title = f"{run.data.name} test points on principal axes 1-2, coloured by MAP component\n"
    title += f"(K={cfg.components}, {cfg.covariance})"
    return plots.mixture_pictures(
        run.folder or "", model, params, history, xtest, pca, run.data.image_shape, title
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
        figures=figures,
        title=lambda m, cfg: (
            f"Gaussian mixture on {cfg.dataset}, PCA to {cfg.pca_dim} dims: K={cfg.components}, "
            f"{cfg.covariance} covariances, {cfg.guide} guide, init={cfg.init} x{cfg.n_init}, "
            f"{m['epochs']} epochs ("
            + ("full batch" if cfg.batch_size is None else f"batch {cfg.batch_size}")
            + f"), seed={cfg.seed}"
        ),
        evaluation_rows=(
            (
                "test log-likelihood",
                "{test_log_likelihood:.3f} ± {test_log_likelihood_stderr:.3f} nats per point",
            ),
            ("BIC (train)", "{bic:.1f}"),
            ("test ARI vs labels", "{test_ari:.3f}"),
        ),
        summary_rows=(
            ("train log-likelihood", "{train_log_likelihood:.3f} nats per point"),
            (
                "test log-likelihood",
                "{test_log_likelihood:.3f} ± {test_log_likelihood_stderr:.3f} nats per point",
            ),
            (
                "sklearn EM test log-likelihood (n_init={cfg.sklearn_n_init})",
                "{sklearn_test_log_likelihood:.3f} nats per point",
            ),
            (
                "ours minus EM (paired)",
                "{test_log_likelihood_minus_sklearn:+.3f} ± "
                "{test_log_likelihood_minus_sklearn_stderr:.3f} nats per point",
            ),
            ("BIC (train)", "{bic:.1f}   (sklearn EM: {sklearn_bic:.1f})"),
            ("test ARI vs labels", "{test_ari:.3f}   (sklearn EM: {sklearn_test_ari:.3f})"),
            ("seconds", "{seconds:.1f}   (sklearn EM: {sklearn_seconds:.1f})"),
        ),
        data=load,
        tiny=dict(components=3, pca_dim=3, epochs=4, n_init=2, sklearn_n_init=1),
    )
)
