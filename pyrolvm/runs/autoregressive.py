"""Autoregressive density-model runs: ``pyrolvm train made`` and ``pyrolvm train pixelcnn``.

config -> data -> model + :func:`~pyrolvm.guides.empty_guide` -> :func:`pyrolvm.inference.train`
(the ELBO of a model without latent variables is its log-likelihood) -> exact test NLL by
:func:`pyrolvm.inference.importance_sample` with K = 1 -> run folder. ``train_made(...)`` /
``train_pixelcnn(...)`` are the commands in one Python call; ``evaluate_autoregressive(folder)``
is ``pyrolvm evaluate FOLDER`` for both.
"""

import dataclasses
import os
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

import pyro

from .. import plots
from ..devices import resolve_device
from ..errors import ConfigError, Interrupted, TrainingDiverged
from ..guides import empty_guide
from ..inference import importance_sample, make_optim, mean_and_stderr, train
from ..models import MADE, PixelCNN, bits_per_dim
from ..nets import ACTIVATIONS
from .common import (
    CHECKPOINT,
    extended,
    format_summary,
    load_checkpoint,
    load_data,
    on_device,
    record_stop,
    reload_run,
    run_folder,
    save_checkpoint,
    write_json,
)
from .config import Count, PositiveFloat, Range, RunConfig, Sizes
from .registry import RunKind, register

#: The ``pixels`` choices of :class:`PixelCNNConfig`: binary (Bernoulli) or 8-bit (256-way).
PIXELS = ("binary", "8bit")
#: Test images of the per-epoch test NLL curve (the final figure uses the whole test set).
CURVE_POINTS = 1000


@dataclass
class AutoregressiveConfig(RunConfig):
    """Settings shared by the autoregressive runs (exact likelihood, no latent variable)."""

    DATASET_DEFAULTS: ClassVar[dict] = {
        "digits": dict(epochs=100, batch_size=100, lr=3e-3),
        "mnist": dict(epochs=5, batch_size=100, lr=1e-3),
    }

    binarize: Literal["dynamic", "static"] = "dynamic"
    """binary pixels: a fresh draw per minibatch (dynamic) or one fixed draw (static)"""
    train_size: Annotated[int, Range(0)] = 0
    """train on the first N training images only (0: all), to fit a CPU budget"""
    epochs: Count | None = None
    """passes over the training data (default: 100 digits, 5 mnist)"""
    batch_size: Count | None = None
    """images per step (default: 100)"""
    lr: PositiveFloat | None = None
    """Adam learning rate (default: 3e-3 digits, 1e-3 mnist)"""
    eval_batch_size: Count = 500
    """test images per evaluation call"""
    num_samples: Count = 64
    """images drawn for samples.png (ancestral sampling: one network pass per pixel)"""


@dataclass
class MADEConfig(AutoregressiveConfig):
    """Train MADE (Germain et al. 2015) on binarized images by maximum likelihood and report
    its exact test NLL (nats) and bits per dimension. The flags of ``pyrolvm train made``."""

    DATASET_DEFAULTS: ClassVar[dict] = {
        "digits": dict(AutoregressiveConfig.DATASET_DEFAULTS["digits"], hidden=(128,)),
        "mnist": dict(AutoregressiveConfig.DATASET_DEFAULTS["mnist"], hidden=(500,)),
    }

    out: str = "runs/made"
    """the run folder"""
    hidden: Sizes | None = None
    """hidden layer sizes (default: 128 digits, 500 mnist as in the paper)"""
    num_masks: Count = 1
    """masks M: > 1 trains order- and connectivity-agnostic (one random mask per step) and
    evaluates the ensemble (1/M) sum_m p_m(x)"""
    activation: Literal[tuple(ACTIVATIONS)] = "relu"
    """hidden-layer nonlinearity"""


@dataclass
class PixelCNNConfig(AutoregressiveConfig):
    """Train a small gated PixelCNN (van den Oord et al. 2016) on binarized (Bernoulli) or
    8-bit (256-way categorical) images and report its exact test NLL (nats) and bits per
    dimension. The flags of ``pyrolvm train pixelcnn``."""

    out: str = "runs/pixelcnn"
    """the run folder"""
    pixels: Literal[PIXELS] = "binary"
    """binary: binarized images, Bernoulli; 8bit: intensities round(255 x), 256-way categorical"""
    channels: Count = 32
    """feature channels of each stack"""
    num_layers: Count = 5
    """gated layers"""
    kernel_size: Annotated[int, Range(3)] = 5
    """odd kernel width"""

    def check(self):
        if self.kernel_size % 2 == 0:
            raise ConfigError(f"--kernel-size must be odd, got {self.kernel_size}")


def build(kind, cfg, image_shape, data_mean=None):
    """The model of a resolved config: :class:`~pyrolvm.models.MADE` (``kind="made"``) or
    :class:`~pyrolvm.models.PixelCNN`; its guide is :func:`~pyrolvm.guides.empty_guide`."""
    data_dim = image_shape[0] * image_shape[1]
    if kind == "made":
        return MADE(data_dim, cfg.hidden, cfg.num_masks, cfg.activation, data_mean, cfg.seed)
    levels = 2 if cfg.pixels == "binary" else 256
    return PixelCNN(image_shape, levels, cfg.channels, cfg.num_layers, cfg.kernel_size)


def load_pixels(cfg, data=None):
    """The run's dataset: binarized (``cfg.binarize``), or for ``pixels="8bit"`` the
    intensities as integers ``round(255 x)`` stored as floats; the first ``cfg.train_size``
    training images when that is > 0."""
    eight_bit = getattr(cfg, "pixels", "binary") == "8bit"
    data = load_data(cfg, "none" if eight_bit else cfg.binarize, data, binary=False)
    if eight_bit:
        data = dataclasses.replace(
            data, train=(255 * data.train).round(), test=(255 * data.test).round()
        )
    if cfg.train_size:
        data = dataclasses.replace(
            data,
            train=data.train[: cfg.train_size],
            train_labels=data.train_labels[: cfg.train_size],
        )
    return on_device(data, resolve_device(cfg.device))


def evaluate(model, test, cfg, progress=False):
    """Exact test log-likelihood of a latent-free model (K = 1, the empty guide; the model in
    evaluation mode, for MADE the mask ensemble).

    Returns:
        dict: ``test_nll`` and ``test_nll_stderr`` (nats per image), ``test_bits_per_dim``.
    """
    was_training = model.training
    model.eval()
    try:
        ll = importance_sample(
            model,
            empty_guide,
            test,
            num_samples=1,
            batch_size=cfg.eval_batch_size,
            progress=progress,
        ).log_likelihood
    finally:
        model.train(was_training)
    nll, se = mean_and_stderr(-ll)
    return {
        "test_nll": nll,
        "test_nll_stderr": se,
        "test_bits_per_dim": bits_per_dim(nll, test.shape[-1]),
    }


def samples_figure(path, model, image_shape, eight_bit, num_samples=64):
    """``num_samples`` ancestral samples of the model as a PNG (seeded by the caller)."""
    x = model.sample(num_samples)
    if eight_bit:
        x = x / 255
    plots.image_grid(path, x, image_shape, "samples from the model (ancestral, exact)")


def fit(kind, cfg, data=None):
    """Train and evaluate a ``kind`` (``"made"`` or ``"pixelcnn"``) run and write its folder;
    see :func:`train_made`."""
    data = load_pixels(cfg, data)
    eight_bit = getattr(cfg, "pixels", "binary") == "8bit"
    config_dict = dataclasses.asdict(cfg) | {"data_dim": data.data_dim}
    with run_folder(
        cfg.out, kind, config_dict, cfg.resume, cfg.overwrite, extendable=("epochs",)
    ) as (folder, saved):
        pyro.clear_param_store()
        pyro.set_rng_seed(cfg.seed)
        mean = data.train.mean(0) if not eight_bit else None
        model = build(kind, cfg, data.image_shape, mean).to(data.train.device)
        if extended(saved, config_dict):  # a new run, or one given more --epochs
            write_json(os.path.join(folder, "config.json"), config_dict)

        def end_of_epoch(epoch, history):
            return {"test_nll_curve": evaluate(model, data.test[:CURVE_POINTS], cfg)["test_nll"]}

        def save(state):
            save_checkpoint(
                os.path.join(folder, CHECKPOINT),
                {
                    "kind": kind,
                    "config": config_dict,
                    "epoch": len(state["history"]["train_elbo"]),
                    "train": state,
                    "model": model.state_dict(),
                },
            )

        try:
            history = train(
                model,
                empty_guide,
                data.train,
                optim=make_optim(cfg.lr),
                epochs=cfg.epochs,
                batch_size=cfg.batch_size,
                transform=None if eight_bit else data.train_transform,
                callback=end_of_epoch,
                progress=cfg.progress,
                checkpoint=save,
                resume_from=saved and saved["train"],
            )
        except (TrainingDiverged, Interrupted) as exc:
            raise record_stop(folder, exc) from None
        final = evaluate(model, data.test, cfg, cfg.progress)
        seconds = history["seconds"]
        metrics = {
            "status": "ok",
            "complete": True,
            # the ELBO of a latent-free model is its log-likelihood
            "train_log_likelihood": history["train_elbo"][-1] if history["train_elbo"] else None,
            **final,
            "num_parameters": sum(p.numel() for p in model.parameters()),
            "train_size": len(data.train),
            "seconds_per_epoch": sum(seconds) / len(seconds) if seconds else None,
            "seconds": sum(seconds),
            "epochs": len(history["train_elbo"]),
            "curves": history,
            "figures": ["samples.png", "nll_curve.png"],
        }
        pyro.set_rng_seed(cfg.seed)
        samples_figure(
            os.path.join(folder, "samples.png"), model, data.image_shape, eight_bit, cfg.num_samples
        )
        curves = {"train_nll": [-v for v in history["train_elbo"]]}
        curves["test_nll"] = history.get("test_nll_curve", [])
        plots.curves(
            os.path.join(folder, "nll_curve.png"),
            curves,
            ["train_nll", "test_nll"],
            "exact NLL per image (nats)",
            "NLL",
        )
        write_json(os.path.join(folder, "metrics.json"), metrics)
    return metrics


def train_made(config=None, data=None, **overrides):
    """Train MADE and write the run folder; ``pyrolvm train made`` in one call.

    Args:
        config (MADEConfig or None): settings; keyword ``overrides`` replace its fields.
        data (pyrolvm.data.Dataset or None): data instead of loading ``config.dataset``.

    Writes into ``config.out``: ``config.json``; ``metrics.json`` (``test_nll``,
    ``test_nll_stderr`` in nats per image, ``test_bits_per_dim``, ``train_log_likelihood``,
    per-epoch ``curves`` with ``test_nll_curve`` on the first 1000 test images); ``checkpoint.pt``
    (rewritten after every epoch; ``--resume`` continues it); ``samples.png``, ``nll_curve.png``.

    Returns:
        dict: the metrics.

    Raises:
        ConfigError, DataError: bad settings or data, or an occupied run folder.
        TrainingDiverged, Interrupted: as :func:`pyrolvm.runs.train_vae`.
    """
    cfg = dataclasses.replace(config or MADEConfig(), **overrides).resolved()
    return fit("made", cfg, data)


def train_pixelcnn(config=None, data=None, **overrides):
    """Train a gated PixelCNN and write the run folder; ``pyrolvm train pixelcnn`` in one
    call. Arguments, files and errors as :func:`train_made`."""
    cfg = dataclasses.replace(config or PixelCNNConfig(), **overrides).resolved()
    return fit("pixelcnn", cfg, data)


def evaluate_autoregressive(folder, data_root=None, progress=True, device="auto"):
    """Reload a ``made`` or ``pixelcnn`` run folder and recompute its exact test NLL (equal to
    the one in its metrics.json).

    Returns:
        dict: ``test_nll``, ``test_nll_stderr`` (nats), ``test_bits_per_dim``.

    Raises:
        ConfigError: no valid checkpoint in ``folder``.
    """
    kind = load_checkpoint(folder)["kind"]
    config_class = MADEConfig if kind == "made" else PixelCNNConfig
    state, cfg, _ = reload_run(folder, kind, config_class, data_root, progress, device=device)
    data = load_pixels(cfg)
    pyro.clear_param_store()
    model = build(kind, cfg, data.image_shape).to(data.train.device)
    model.load_state_dict(state["model"])
    return evaluate(model, data.test, cfg, progress)


def evaluation_rows(metrics):
    """The rows ``pyrolvm evaluate`` prints for a made or pixelcnn run."""
    return [
        (
            "test NLL (exact)",
            f"{metrics['test_nll']:.2f} ± {metrics['test_nll_stderr']:.2f} nats",
        ),
        ("test bits per dim", f"{metrics['test_bits_per_dim']:.4f}"),
    ]


def summary(metrics, cfg, folder):
    """The summary table printed at the end of ``pyrolvm train made`` / ``pixelcnn``."""
    cfg = cfg.resolved()
    if isinstance(cfg, MADEConfig):
        title = f"MADE on {cfg.dataset}: hidden={cfg.hidden}, masks={cfg.num_masks}"
    else:
        title = (
            f"gated PixelCNN on {cfg.dataset}: {cfg.pixels} pixels, {cfg.num_layers} layers of "
            f"{cfg.channels} channels, kernel {cfg.kernel_size}"
        )
    title += f", {metrics['epochs']} epochs on {metrics['train_size']} images, seed={cfg.seed}"
    rows = [
        ("train log-likelihood", f"{metrics['train_log_likelihood']:.2f} nats"),
        *evaluation_rows(metrics),
        ("parameters", f"{metrics['num_parameters']}"),
        ("seconds per epoch", f"{metrics['seconds_per_epoch']:.2f}"),
        (
            "run folder",
            f"{folder}  (config.json, metrics.json, {CHECKPOINT}, {', '.join(metrics['figures'])})",
        ),
    ]
    return format_summary(title, rows)


MADE_KIND = register(
    RunKind(
        "made",
        MADEConfig,
        train_made,
        evaluate_autoregressive,
        summary,
        evaluation_rows,
        description="MADE, an autoregressive model with exact likelihood (no latent variable)",
    )
)
PIXELCNN_KIND = register(
    RunKind(
        "pixelcnn",
        PixelCNNConfig,
        train_pixelcnn,
        evaluate_autoregressive,
        summary,
        evaluation_rows,
        description="a gated PixelCNN with exact likelihood (no latent variable)",
    )
)
