"""One mixture-prior VAE clustering run: config -> data -> :func:`pyrolvm.fitting.fit_mixture_vae`
-> cluster accuracy and ARI -> run folder. ``train_mixture_vae(...)`` is
``pyrolvm train mixture-vae`` in one call."""

import dataclasses
import os
from dataclasses import dataclass
from typing import ClassVar, Literal

import pyro
import torch

from .. import plots
from ..devices import resolve_device
from ..errors import ConfigError, Interrupted, TrainingDiverged
from ..fitting import cluster, cluster_accuracy, cluster_scores, fit_mixture_vae
from ..fitting.mixture_vae import PRETRAININGS, PRIOR_INITS
from ..guides import AmortizedNormal
from ..models.mixture_vae import MixturePriorVAE
from .common import (
    CHECKPOINT,
    format_summary,
    load_data,
    on_device,
    record_stop,
    reload_run,
    run_folder,
    save_checkpoint,
    write_json,
)
from .config import Count, PositiveFloat, RunConfig, Sizes
from .registry import RunKind, register

__all__ = [
    "MixtureVAEConfig",
    "cluster",
    "cluster_accuracy",
    "evaluate_mixture_vae",
    "fit_mixture_vae",
    "train_mixture_vae",
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


def train_mixture_vae(config=None, **overrides):
    """Train a mixture-prior VAE (:func:`pyrolvm.fitting.fit_mixture_vae`) and write the run
    folder: ``config.json``, ``metrics.json`` (``test_cluster_accuracy``, ``test_ari``, the
    same right after the prior's initialization with prefix ``init_``, ``train_elbo`` curve,
    ``seconds``), ``checkpoint.pt``, ``component_means.png`` and ``elbo_curve.png``.

    Returns:
        dict: the metrics.

    Raises:
        ConfigError, DataError: bad settings or data (nothing is written).
        TrainingDiverged: the loss became NaN or infinite.
    """
    cfg = dataclasses.replace(config or MixtureVAEConfig(), **overrides).resolved()
    data = on_device(load_data(cfg, "dynamic"), resolve_device(cfg.device))
    config_dict = dataclasses.asdict(cfg) | {"data_dim": data.data_dim}
    with run_folder(cfg.out, "mixture-vae", config_dict, cfg.resume, cfg.overwrite) as (
        folder,
        saved,
    ):
        if saved is None:
            write_json(os.path.join(folder, "config.json"), config_dict)
        path = os.path.join(folder, CHECKPOINT)

        last = {"state": saved and saved["train"]}

        def save(phase_state):  # the parameters are in the train state (Pyro's param store)
            last["state"] = phase_state
            history = phase_state["train"]["history"]
            save_checkpoint(
                path,
                {
                    "kind": "mixture-vae",
                    "config": config_dict,
                    "epoch": len(history["train_elbo"]),
                    "train": phase_state,
                },
            )

        try:
            model, guide, fitted = fit_mixture_vae(
                data,
                cfg.components,
                cfg.latent_dim,
                cfg.hidden,
                cfg.warmup_epochs,
                cfg.epochs,
                cfg.batch_size,
                cfg.lr,
                cfg.finetune_lr_ratio,
                cfg.seed,
                cfg.progress,
                pretrain=cfg.pretrain,
                prior_init=cfg.prior_init,
                checkpoint=save,
                resume_from=saved and saved["train"],
            )
        except (TrainingDiverged, Interrupted) as exc:
            raise record_stop(folder, exc) from None
        save_checkpoint(
            path,
            {
                "kind": "mixture-vae",
                "config": config_dict,
                "epoch": len(fitted["train_elbo"]),
                "train": last["state"],  # (a --resume of the finished run retrains nothing)
                "history": fitted["train_elbo"],
                "model": model.state_dict(),
                "guide": guide.state_dict(),
            },
        )
        with torch.no_grad():
            order = model.prior_logits.argsort(descending=True)
            means = torch.sigmoid(model.decoder(model.prior_locs[order]))
        plots.image_grid(
            os.path.join(folder, "component_means.png"),
            means,
            data.image_shape,
            "decoded component means, by decreasing weight",
            ncols=min(10, len(means)),
        )
        plots.curves(
            os.path.join(folder, "elbo_curve.png"),
            {"train_elbo": fitted["train_elbo"]},
            ["train_elbo"],
            "ELBO per datapoint (nats)",
            "ELBO",
        )
        metrics = {
            "status": "ok",
            "complete": True,
            **fitted,
            "epochs": len(fitted["train_elbo"]),
            "figures": ["component_means.png", "elbo_curve.png"],
        }
        write_json(os.path.join(folder, "metrics.json"), metrics)
    return metrics


def evaluate_mixture_vae(folder, data_root=None, progress=True, device="auto"):
    """Reload a mixture-VAE run folder and recompute its test cluster accuracy and ARI (equal
    to those in its metrics.json).

    Raises:
        ConfigError: no valid checkpoint in ``folder``, or one of another kind of run.
    """
    state, cfg, data_dim = reload_run(
        folder, "mixture-vae", MixtureVAEConfig, data_root, progress, device=device
    )
    device = resolve_device(cfg.device)
    data = on_device(load_data(cfg, "dynamic"), device)
    pyro.clear_param_store()
    model = MixturePriorVAE(data_dim, cfg.latent_dim, cfg.components, cfg.hidden).to(device)
    guide = AmortizedNormal(data_dim, cfg.latent_dim, cfg.hidden, "relu").to(device)
    if "model" not in state:  # the checkpoint of a run stopped before its end
        raise ConfigError(
            f"the mixture-vae run in {folder} stopped before it finished: continue it with the "
            "same command and --resume, then evaluate it"
        )
    model.load_state_dict(state["model"])
    guide.load_state_dict(state["guide"])
    return cluster_scores(model, guide, data.test, data.test_labels)


def evaluation_rows(metrics):
    """The rows ``pyrolvm evaluate`` and the training summary print for a mixture-VAE run."""
    return [
        ("test cluster accuracy", f"{100 * metrics['test_cluster_accuracy']:.2f} %"),
        ("test ARI vs labels", f"{metrics['test_ari']:.3f}"),
    ]


def summary(metrics, cfg, folder):
    """The summary table printed at the end of ``pyrolvm train mixture-vae``."""
    cfg = cfg.resolved()
    title = (
        f"mixture-prior VAE on {cfg.dataset}: K={cfg.components}, "
        f"latent_dim={cfg.latent_dim}, hidden={cfg.hidden}, {cfg.warmup_epochs} + "
        f"{cfg.epochs} epochs, seed={cfg.seed}"
    )
    return format_summary(
        title,
        evaluation_rows(metrics)
        + [
            (
                "after the prior's init",
                f"{100 * metrics['init_test_cluster_accuracy']:.2f} %, "
                f"ARI {metrics['init_test_ari']:.3f}",
            ),
            ("seconds", f"{metrics['seconds']:.1f}"),
            (
                "run folder",
                f"{folder}  (config.json, metrics.json, {CHECKPOINT}, "
                f"{', '.join(metrics['figures'])})",
            ),
        ],
    )


KIND = register(
    RunKind(
        "mixture-vae",
        MixtureVAEConfig,
        train_mixture_vae,
        evaluate_mixture_vae,
        summary,
        evaluation_rows,
        description="clustering with a mixture-prior VAE (VaDE-style), component enumerated",
    )
)
