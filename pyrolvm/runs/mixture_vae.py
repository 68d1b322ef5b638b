"""One mixture-prior VAE clustering run, the three phases of
:func:`pyrolvm.fitting.fit_mixture_vae` as resumable stages (``warmup``, ``prior``,
``finetune``) -> cluster accuracy and ARI -> run folder. ``train_mixture_vae(...)`` is
``pyrolvm train mixture-vae`` in one call."""

import os
import time
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from .. import plots
from ..fitting import cluster, cluster_accuracy, cluster_scores, fit_mixture_vae
from ..fitting.mixture_vae import PRETRAININGS, PRIOR_INITS, fine_tune, init_prior, warm_up
from ..guides import AmortizedNormal
from ..models.mixture_vae import MixturePriorVAE
from .config import Count, PositiveFloat, RunConfig, Sizes
from .registry import RunKind, register
from .template import Run, Stage

__all__ = [
    "MixtureVAEConfig",
    "cluster",
    "cluster_accuracy",
    "fit_mixture_vae",
]


@dataclass
class MixtureVAEConfig(RunConfig):
    """Cluster images with a VAE whose prior is a learned Gaussian mixture (VaDE's generative
    model, the component enumerated): pre-train, fit the prior to draws from q(z | x), train
    on, and score the test images' MAP clusters against the labels (cluster accuracy under the
    best one-to-one mapping, adjusted Rand index). The flags of ``pyrolvm train mixture-vae``;
    ``None`` means the dataset's default."""

    DATASET_DEFAULTS: ClassVar[dict] = {
        "digits": dict(latent_dim=5, hidden=(128,), warmup_epochs=10, epochs=10, batch_size=50),
        "mnist": dict(latent_dim=10, hidden=(500, 500), warmup_epochs=3, epochs=5, batch_size=100),
    }

    out: str = "runs/mixture-vae"
    """the run folder"""
    components: Count = 10
    """K, mixture components of the prior (clusters)"""
    latent_dim: Count | None = None
    """latent dimensions (default: 5 digits, 10 mnist)"""
    hidden: Sizes | None = None
    """hidden sizes of encoder and decoder (default: 128 digits, 500,500 mnist)"""
    warmup_epochs: Count | None = None
    """epochs before the prior is fitted (default: 10 digits, 3 mnist)"""
    epochs: Count | None = None
    """epochs after the prior is fitted (default: 10 digits, 5 mnist)"""
    batch_size: Count | None = None
    """images per step (default: 50 digits, 100 mnist)"""
    lr: PositiveFloat = 1e-3
    """Adam learning rate of the pre-training"""
    finetune_lr_ratio: PositiveFloat = 0.1
    """learning rate after the prior's initialization, relative to --lr"""
    pretrain: Literal[PRETRAININGS] = "vae"
    """the warm-up: vae (the model's own ELBO) or autoencoder (VaDE: encoder means and decoder
    under the reconstruction loss)"""
    prior_init: Literal[PRIOR_INITS] = "draws"
    """fit the prior's mixture to draws from q(z | x), or to the encoder's means (VaDE)"""


def parts(run: Run) -> dict:
    """The mixture-prior VAE (:class:`~pyrolvm.models.MixturePriorVAE`) and its
    :class:`~pyrolvm.guides.AmortizedNormal` guide."""
    cfg, d = run.cfg, run.data.data_dim
    run.extra["t0"] = time.perf_counter()
    model = MixturePriorVAE(d, cfg.latent_dim, cfg.components, cfg.hidden)
    return {"model": model, "guide": AmortizedNormal(d, cfg.latent_dim, cfg.hidden, "relu")}


def options(run: Run) -> dict:
    """The training options of both SVI stages."""
    return dict(batch_size=run.cfg.batch_size, **run.hooks)


STAGES = (
    Stage(
        "warmup",
        lambda run: warm_up(
            run.parts["model"],
            run.parts["guide"],
            run.data,
            run.cfg.pretrain,
            run.cfg.lr,
            epochs=run.cfg.warmup_epochs,
            **options(run),
        ),
    ),
    Stage(
        "prior",
        lambda run: init_prior(
            run.parts["model"],
            run.parts["guide"],
            run.data,
            run.cfg.components,
            run.cfg.prior_init,
            run.cfg.seed,
        ),
    ),
    Stage(
        "finetune",
        lambda run: fine_tune(
            run.parts["model"],
            run.parts["guide"],
            run.data,
            run.cfg.lr * run.cfg.finetune_lr_ratio,
            epochs=run.cfg.epochs,
            history={k: list(v) for k, v in run.results["warmup"].items()},
            **options(run),
        ),
    ),
)


def score(run: Run) -> dict:
    """The test images' MAP clusters scored against the labels: ``test_cluster_accuracy``
    (under the best one-to-one mapping) and ``test_ari``."""
    data = run.data
    return cluster_scores(run.parts["model"], run.parts["guide"], data.test, data.test_labels)


def report(run: Run) -> dict:
    """``metrics.json``: the scores right after the prior's fit (``init_``) and at the end, the
    ELBO curve (the warm-up's bound first: the reconstruction term alone after an autoencoder
    pre-training), the seconds."""
    history = run.results["finetune"]
    return {
        **run.results["prior"],
        **score(run),
        "train_elbo": history["train_elbo"],
        "seconds": time.perf_counter() - run.extra.get("t0", time.perf_counter()),
        "epochs": len(history["train_elbo"]),
    }


def figures(run: Run, metrics: dict) -> list[str]:
    """component_means.png (the decoded component means, by decreasing weight) and
    elbo_curve.png."""
    model, folder = run.parts["model"], run.folder or ""
    with torch.no_grad():
        order = model.prior_logits.argsort(descending=True)
        means = torch.sigmoid(model.decoder(model.prior_locs[order]))
    plots.image_grid(
        os.path.join(folder, "component_means.png"),
        means,
        run.data.image_shape,
        "decoded component means, by decreasing weight",
        ncols=min(10, len(means)),
    )
    plots.curves(
        os.path.join(folder, "elbo_curve.png"),
        {"train_elbo": metrics["train_elbo"]},
        ["train_elbo"],
        "ELBO per datapoint (nats)",
        "ELBO",
    )
    return ["component_means.png", "elbo_curve.png"]


def evaluation_rows(metrics):
    """The rows ``pyrolvm evaluate`` and the training summary print for a mixture-VAE run."""
    return [
        ("test cluster accuracy", f"{100 * metrics['test_cluster_accuracy']:.2f} %"),
        ("test ARI vs labels", f"{metrics['test_ari']:.3f}"),
    ]


def summary_rows(metrics, cfg):
    """The training summary's rows."""
    return evaluation_rows(metrics) + [
        (
            "after the prior's init",
            f"{100 * metrics['init_test_cluster_accuracy']:.2f} %, "
            f"ARI {metrics['init_test_ari']:.3f}",
        ),
        ("seconds", f"{metrics['seconds']:.1f}"),
    ]


KIND = register(
    RunKind(
        "mixture-vae",
        MixtureVAEConfig,
        "clustering with a mixture-prior VAE (VaDE-style), component enumerated",
        build=parts,
        stages=STAGES,
        score=score,
        report=report,
        figures=figures,
        title=lambda m, cfg: (
            f"mixture-prior VAE on {cfg.dataset}: K={cfg.components}, "
            f"latent_dim={cfg.latent_dim}, hidden={cfg.hidden}, {cfg.warmup_epochs} + "
            f"{cfg.epochs} epochs, seed={cfg.seed}"
        ),
        summary_rows=summary_rows,
        evaluation_rows=evaluation_rows,
        tiny=dict(components=3, latent_dim=2, hidden=(16,), warmup_epochs=1, epochs=1),
    )
)
