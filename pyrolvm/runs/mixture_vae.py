"""``pyrolvm train mixture-vae``: the three phases of :func:`pyrolvm.fitting.fit_mixture_vae`
as resumable stages, scored by cluster accuracy and ARI."""

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
from .config import Count, Networks, PositiveFloat, RunConfig, Training
from .registry import RunKind, register
from .template import Run, Stage

__all__ = [
    "MixtureVAEConfig",
    "cluster",
    "cluster_accuracy",
    "fit_mixture_vae",
]


@dataclass
class MixtureVAEConfig(Networks, Training, RunConfig):
    """The flags of ``pyrolvm train mixture-vae``; ``None``: the dataset's default."""

    DATASET_DEFAULTS: ClassVar[dict] = {
        "digits": dict(latent_dim=5, hidden=(128,), warmup_epochs=10, epochs=10, batch_size=50),
        "mnist": dict(latent_dim=10, hidden=(500, 500), warmup_epochs=3, epochs=5, batch_size=100),
    }
    GROUPS = {"training": ("warmup_epochs", "finetune_lr_ratio", "pretrain", "prior_init")}

    out: str = "runs/mixture-vae"
    components: Count = 10
    """K, the prior's mixture components (clusters)"""
    warmup_epochs: Count | None = None
    """epochs before the prior is fitted"""
    epochs: Count | None = None
    """epochs after the prior is fitted"""
    lr: PositiveFloat = 1e-3
    """Adam learning rate of the warm-up"""
    finetune_lr_ratio: PositiveFloat = 0.1
    """the learning rate after it, relative to --lr"""
    pretrain: Literal[PRETRAININGS] = "vae"
    """the warm-up (autoencoder: VaDE's)"""
    prior_init: Literal[PRIOR_INITS] = "draws"
    """the prior fitted to q(z | x)'s draws or means"""


def parts(run: Run) -> dict:
    """The mixture-prior VAE (:class:`~pyrolvm.models.MixturePriorVAE`) and its
    :class:`~pyrolvm.guides.AmortizedNormal` guide."""
    cfg, d = run.cfg, run.data.data_dim
    run.extra["t0"] = time.perf_counter()
    model = MixturePriorVAE(d, cfg.latent_dim, cfg.components, cfg.hidden)
    return {"model": model, "guide": AmortizedNormal(d, cfg.latent_dim, cfg.hidden, "relu")}


def pair(run: Run) -> tuple:
    """(model, guide, data): what every phase of :mod:`pyrolvm.fitting.mixture_vae` takes."""
    return run.parts["model"], run.parts["guide"], run.data


def svi(run: Run) -> dict:
    """The options of the SVI phases: the batch size, the stage's checkpoints and progress."""
    return dict(batch_size=run.cfg.batch_size, **run.hooks)


def warmup(run: Run) -> dict:
    """Stage 1: the warm-up (:func:`~pyrolvm.fitting.mixture_vae.warm_up`)."""
    cfg = run.cfg
    return warm_up(*pair(run), cfg.pretrain, cfg.lr, epochs=cfg.warmup_epochs, **svi(run))


def prior(run: Run) -> dict:
    """Stage 2: the prior's fit (:func:`~pyrolvm.fitting.mixture_vae.init_prior`)."""
    return init_prior(*pair(run), run.cfg.components, run.cfg.prior_init, run.cfg.seed)


def finetune(run: Run) -> dict:
    """Stage 3: the fine-tuning (:func:`~pyrolvm.fitting.mixture_vae.fine_tune`), its curve
    continuing the warm-up's."""
    history = {k: list(v) for k, v in run.results["warmup"].items()}
    lr = run.cfg.lr * run.cfg.finetune_lr_ratio
    return fine_tune(*pair(run), lr, epochs=run.cfg.epochs, history=history, **svi(run))


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
    seconds = time.perf_counter() - run.extra.get("t0", time.perf_counter())
    return {**run.results["prior"], **score(run), "train_elbo": history["train_elbo"]} | {
        "seconds": seconds,
        "epochs": len(history["train_elbo"]),
    }


def figures(run: Run, metrics: dict) -> list[str]:
    """component_means.png (the decoded component means, by decreasing weight) and
    elbo_curve.png."""
    model, folder = run.parts["model"], run.folder or ""
    with torch.no_grad():
        order = model.prior_logits.argsort(descending=True)
        means = torch.sigmoid(model.decoder(model.prior_locs[order]))
    title, n = "decoded component means, by decreasing weight", min(10, len(means))
    plots.image_grid(
        os.path.join(folder, "component_means.png"), means, run.data.image_shape, title, ncols=n
    )
    curves, ylabel = {"train_elbo": metrics["train_elbo"]}, "ELBO per datapoint (nats)"
    plots.curves(os.path.join(folder, "elbo_curve.png"), curves, ["train_elbo"], ylabel, "ELBO")
    return ["component_means.png", "elbo_curve.png"]


KIND = register(
    RunKind(
        "mixture-vae",
        MixtureVAEConfig,
        "clustering with a mixture-prior VAE (VaDE-style), component enumerated",
        build=parts,
        stages=(Stage("warmup", warmup), Stage("prior", prior), Stage("finetune", finetune)),
        score=score,
        report=report,
        figures=figures,
        title="mixture-prior VAE on {cfg.dataset}: K={cfg.components}, latent_dim="
        "{cfg.latent_dim}, hidden={cfg.hidden}, {cfg.warmup_epochs} + {cfg.epochs} epochs, "
        "seed={cfg.seed}",
        evaluation_rows=(
            ("test cluster accuracy", "{test_cluster_accuracy:.2%}"),
            ("test ARI vs labels", "{test_ari:.3f}"),
        ),
        summary_rows=(
            ...,
            ("after the prior's init", "{init_test_cluster_accuracy:.2%}, ARI {init_test_ari:.3f}"),
            ("seconds", "{seconds:.1f}"),
        ),
        tiny=dict(components=3, latent_dim=2, hidden=(16,), warmup_epochs=1, epochs=1),
    )
)
