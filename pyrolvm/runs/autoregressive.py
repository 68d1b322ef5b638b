"""``pyrolvm train made`` and ``pyrolvm train pixelcnn``: maximum likelihood by SVI with the
empty guide (the ELBO of a model without latent variables is its log-likelihood), scored by
the exact test NLL."""

import dataclasses
import os
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

import pyro

from .. import plots
from ..devices import resolve_device
from ..fitting.scores import exact_scores
from ..guides import empty_guide
from ..models import MADE, PixelCNN
from ..nets import ACTIVATIONS
from .common import load_checkpoint, load_data, on_device
from .config import Count, Range, RunConfig, Sizes, Training
from .registry import RUNS, RunKind, register
from .template import Run, Stage

#: The ``pixels`` choices of :class:`PixelCNNConfig`: binary (Bernoulli) or 8-bit (256-way).
PIXELS = ("binary", "8bit")
#: Test images of the per-epoch test NLL curve (the final figure uses the whole test set).
CURVE_POINTS = 1000


@dataclass
class AutoregressiveConfig(Training, RunConfig):
    """Settings shared by the autoregressive runs (exact likelihood, no latent variable)."""

    DATASET_DEFAULTS: ClassVar[dict] = {
        "digits": dict(epochs=100, batch_size=100, lr=3e-3),
        "mnist": dict(epochs=5, batch_size=100, lr=1e-3),
    }
    GROUPS = {"evaluation": ("num_samples",)}

    binarize: Literal["dynamic", "static"] = "dynamic"
    """binary pixels: a draw per minibatch or one"""
    train_size: Annotated[int, Range(0)] = 0
    """the first N training images only (0: all)"""
    eval_batch_size: Count = 500
    """test images per evaluation call"""
    num_samples: Count = 64
    """images drawn for samples.png"""


@dataclass
class MADEConfig(AutoregressiveConfig):
    """The flags of ``pyrolvm train made`` (Germain et al. 2015)."""

    DATASET_DEFAULTS: ClassVar[dict] = {
        "digits": dict(AutoregressiveConfig.DATASET_DEFAULTS["digits"], hidden=(128,)),
        "mnist": dict(AutoregressiveConfig.DATASET_DEFAULTS["mnist"], hidden=(500,)),
    }

    out: str = "runs/made"
    hidden: Sizes | None = None
    """hidden layer sizes"""
    num_masks: Count = 1
    """masks M (> 1: an order-agnostic ensemble)"""
    activation: Literal[tuple(ACTIVATIONS)] = "relu"
    """hidden-layer nonlinearity"""


@dataclass
class PixelCNNConfig(AutoregressiveConfig):
    """The flags of ``pyrolvm train pixelcnn`` (van den Oord et al. 2016)."""

    GROUPS = {"data": ("pixels",)}

    out: str = "runs/pixelcnn"
    pixels: Literal[PIXELS] = "binary"
    """binarized (Bernoulli) or 8-bit (256-way)"""
    channels: Count = 32
    """feature channels of each stack"""
    num_layers: Count = 5
    """gated layers"""
    kernel_size: Annotated[int, Range(3)] = 5
    """odd kernel width"""


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


def score_model(model, test, cfg, progress=False, run=None):
    """:func:`~pyrolvm.fitting.scores.exact_scores` of ``test``, ``cfg.eval_batch_size``
    images per call; the per-image values in ``run.extra`` if given."""
    keep = None if run is None else run.extra
    return exact_scores(model, test, cfg.eval_batch_size, progress, keep)


def parts(run: Run) -> dict:
    """The run's model (:func:`build`; the Bernoulli MADE's output bias at the mean image)."""
    eight_bit = getattr(run.cfg, "pixels", "binary") == "8bit"
    mean = run.data.train.mean(0) if not eight_bit else None
    return {"model": build(run.kind.name, run.cfg, run.data.image_shape, mean)}


def fit(run: Run) -> dict:
    """Maximum likelihood (the ELBO of a model without latents, with the empty guide), with
    the exact NLL of the first ``CURVE_POINTS`` test images after each epoch."""
    cfg, model, data = run.cfg, run.parts["model"], run.data

    def end_of_epoch(epoch, history):
        return {"test_nll_curve": score_model(model, data.test[:CURVE_POINTS], cfg)["test_nll"]}

    transform = None if getattr(cfg, "pixels", "binary") == "8bit" else data.train_transform
    options = dict(lr=cfg.lr, epochs=cfg.epochs, batch_size=cfg.batch_size, transform=transform)
    return run.fit(model, empty_guide, data.train, callback=end_of_epoch, **options)


def report(run: Run) -> dict:
    """``metrics.json``: the exact test figures, the training curves, the model's size."""
    history, model = run.results["train"], run.parts["model"]
    seconds = history["seconds"]
    return {
        # the ELBO of a latent-free model is its log-likelihood
        "train_log_likelihood": history["train_elbo"][-1] if history["train_elbo"] else None,
        **score(run),
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "train_size": len(run.data.train),
        "seconds_per_epoch": sum(seconds) / len(seconds) if seconds else None,
        "seconds": sum(seconds),
        "epochs": len(history["train_elbo"]),
        "curves": history,
    }


def figures(run: Run, metrics: dict) -> list[str]:
    """samples.png (``num_samples`` ancestral samples, seeded by ``seed``) and nll_curve.png."""
    cfg, history, folder = run.cfg, run.results["train"], run.folder or ""
    pyro.set_rng_seed(cfg.seed)
    x = run.parts["model"].sample(cfg.num_samples)
    x = x / 255 if getattr(cfg, "pixels", "binary") == "8bit" else x
    title = "samples from the model (ancestral, exact)"
    plots.image_grid(os.path.join(folder, "samples.png"), x, run.data.image_shape, title)
    curves = {"train_nll": [-v for v in history["train_elbo"]]}
    curves["test_nll"] = history.get("test_nll_curve", [])
    names, ylabel = ["train_nll", "test_nll"], "exact NLL per image (nats)"
    plots.curves(os.path.join(folder, "nll_curve.png"), curves, names, ylabel, "NLL")
    return ["samples.png", "nll_curve.png"]


def score(run: Run) -> dict:
    """The exact test figures of the run's model (:func:`score_model`)."""
    return score_model(run.parts["model"], run.data.test, run.cfg, run.cfg.progress, run)


def evaluate_autoregressive(folder, data_root=None, progress=True, device="auto"):
    """``evaluate_made`` or ``evaluate_pixelcnn``, whichever the run folder's kind: its exact
    test NLL recomputed (``test_nll``, ``test_nll_stderr`` in nats, ``test_bits_per_dim``)."""
    kind = RUNS["made" if load_checkpoint(folder)["kind"] == "made" else "pixelcnn"]
    return kind.evaluate(folder, data_root=data_root, progress=progress, device=device)


def title(metrics, cfg):
    """The summary's title."""
    if isinstance(cfg, MADEConfig):
        what = f"MADE on {cfg.dataset}: hidden={cfg.hidden}, masks={cfg.num_masks}"
    else:
        what = (
            f"gated PixelCNN on {cfg.dataset}: {cfg.pixels} pixels, {cfg.num_layers} layers of "
            f"{cfg.channels} channels, kernel {cfg.kernel_size}"
        )
    return f"{what}, {metrics['epochs']} epochs on {metrics['train_size']} images, seed={cfg.seed}"


DECLARATION = dict(
    build=parts,
    stages=(Stage("train", fit),),
    score=score,
    report=report,
    figures=figures,
    title=title,
    evaluation_rows=(
        ("test NLL (exact)", "{test_nll:.2f} ± {test_nll_stderr:.2f} nats"),
        ("test bits per dim", "{test_bits_per_dim:.4f}"),
    ),
    summary_rows=(
        ("train log-likelihood", "{train_log_likelihood:.2f} nats"),
        ...,
        ("parameters", "{num_parameters}"),
        ("seconds per epoch", "{seconds_per_epoch:.2f}"),
    ),
    data=load_pixels,
    extendable=True,
)
MADE_KIND = register(
    RunKind(
        "made",
        MADEConfig,
        "MADE, an autoregressive model with exact likelihood (no latent variable)",
        **DECLARATION,
        tiny=dict(epochs=2, hidden=(16,), num_samples=2, train_size=300),
    )
)
PIXELCNN_KIND = register(
    RunKind(
        "pixelcnn",
        PixelCNNConfig,
        "a gated PixelCNN with exact likelihood (no latent variable)",
        **DECLARATION,
        tiny=dict(epochs=2, channels=4, num_layers=1, num_samples=1, train_size=200),
    )
)
