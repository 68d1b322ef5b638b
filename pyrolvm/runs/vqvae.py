"""``pyrolvm train vqvae``: a VQ-VAE (van den Oord et al. 2017), then a PixelCNN prior over
its codes (two stages, :mod:`pyrolvm.fitting.vqvae`), scored by the two-stage NLL bound."""

import os
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

import pyro
import torch

from .. import plots
from ..fitting.vqvae import training_codes, vqvae_scores
from ..guides import empty_guide
from ..inference import rng_state
from ..models import VQVAE, PixelCNN
from .autoregressive import load_pixels
from .config import Count, Range, RunConfig, Training
from .registry import RunKind, register
from .template import Run, Stage


@dataclass
class VQVAEConfig(Training, RunConfig):
    """The flags of ``pyrolvm train vqvae``; ``None``: the dataset's default."""

    DATASET_DEFAULTS: ClassVar[dict] = {
        "digits": dict(downsample=1, epochs=50, prior_epochs=30, batch_size=100, lr=3e-3),
        "mnist": dict(downsample=2, epochs=3, prior_epochs=3, batch_size=100, lr=2e-3),
    }
    GROUPS = {"objective": ("beta",), "training": ("prior_epochs",)}

    out: str = "runs/vqvae"
    binarize: Literal["dynamic", "static"] = "dynamic"
    """binary pixels: a draw per minibatch or one"""
    train_size: Annotated[int, Range(0)] = 0
    """the first N training images only (0: all)"""
    num_codes: Annotated[int, Range(2)] = 32
    """K, codebook size"""
    code_dim: Count = 16
    """d, dimension of each code"""
    channels: Count = 32
    """hidden channels of encoder and decoder"""
    downsample: Count | None = None
    """stride-2 layers (codes on (H / 2^n, W / 2^n))"""
    beta: Annotated[float, Range(0)] = 0.25
    """commitment weight"""
    epochs: Count | None = None
    """epochs of the VQ-VAE (stage 1)"""
    prior_epochs: Count | None = None
    """epochs of its PixelCNN prior (stage 2)"""
    prior_channels: Count = 32
    """channels of the prior's PixelCNN"""
    prior_layers: Count = 4
    """gated layers of the prior's PixelCNN"""
    eval_batch_size: Count = 500
    """test images per evaluation call"""


def build(cfg, image_shape):
    """The stage-1 :class:`~pyrolvm.models.VQVAE` and the stage-2
    :class:`~pyrolvm.models.PixelCNN` prior (one-hot input, K levels) of a resolved config."""
    model = VQVAE(image_shape, cfg.num_codes, cfg.code_dim, cfg.channels, cfg.downsample, cfg.beta)
    prior = PixelCNN(
        model.grid_shape,
        cfg.num_codes,
        cfg.prior_channels,
        cfg.prior_layers,
        3,
        input="onehot",
        name="prior",
    )
    return model, prior


def parts(run: Run) -> dict:
    """The stage-1 VQ-VAE (``model``) and the stage-2 PixelCNN ``prior`` (:func:`build`)."""
    model, prior = build(run.cfg, run.data.image_shape)
    return {"model": model, "prior": prior}


def codebook(run: Run) -> dict:
    """Stage 1: the VQ-VAE's loss (reconstruction, codebook and commitment terms), with the
    random state at its end (from which stage 2 binarizes the training images)."""
    cfg, data = run.cfg, run.data
    history = run.fit(
        run.parts["model"],
        empty_guide,
        data.train,
        lr=cfg.lr,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        transform=data.train_transform,
    )
    return {"history": history, "boundary_rng": rng_state(data.train.device)}


def code_prior(run: Run) -> dict:
    """Stage 2: the PixelCNN prior by maximum likelihood on the training codes."""
    cfg, model = run.cfg, run.parts["model"]
    if run.resume is not None:  # the stage-1 model's parameters in the store, as after stage 1
        pyro.module(model.name, model)
    boundary = run.results["codebook"]["boundary_rng"]
    codes = training_codes(model, run.data.train, run.data.train_transform, boundary)
    return run.fit(
        run.parts["prior"],
        empty_guide,
        codes,
        lr=cfg.lr,
        epochs=cfg.prior_epochs,
        batch_size=cfg.batch_size,
    )


def score(run: Run) -> dict:
    """The test figures (:func:`~pyrolvm.fitting.vqvae.vqvae_scores`)."""
    options = (run.cfg.num_codes, run.cfg.eval_batch_size, run.cfg.progress)
    return vqvae_scores(run.parts["model"], run.parts["prior"], run.data.test, *options)


def report(run: Run) -> dict:
    """``metrics.json``: the test figures and both stages' curves (``stage1_loss``, the loss
    per image, not a bound; ``prior_log_likelihood``)."""
    stage1, stage2 = run.results["codebook"]["history"], run.results["prior"]
    seconds = stage1["seconds"] + stage2["seconds"]
    return {
        **score(run),
        "train_size": len(run.data.train),
        "epochs": len(stage1["train_elbo"]),
        "prior_epochs": len(stage2["train_elbo"]),
        "seconds": sum(seconds),
        "curves": {
            "stage1_loss": [-v for v in stage1["train_elbo"]],
            "prior_log_likelihood": stage2["train_elbo"],
            "seconds": seconds,
        },
    }


def figures(run: Run, metrics: dict) -> list[str]:
    """reconstructions.png and samples.png (codes from the prior, seeded by ``seed``, decoded
    to pixel probabilities)."""
    model, shape, folder = run.parts["model"], run.data.image_shape, run.folder or ""
    with torch.no_grad():
        x = run.data.test[:32]
        recon = model.decode_codes(model.codes(x))
        plots.reconstructions(os.path.join(folder, "reconstructions.png"), x, recon, shape)
        pyro.set_rng_seed(run.cfg.seed)
        samples = model.decode_codes(run.parts["prior"].sample(64))
    plots.image_grid(
        os.path.join(folder, "samples.png"),
        samples,
        shape,
        "VQ-VAE samples: codes from the PixelCNN prior, decoded (pixel probabilities)",
    )
    return ["reconstructions.png", "samples.png"]


KIND = register(
    RunKind(
        "vqvae",
        VQVAEConfig,
        "a VQ-VAE, then a PixelCNN prior over its codes (two stages)",
        build=parts,
        stages=(Stage("codebook", codebook), Stage("prior", code_prior)),
        score=score,
        report=report,
        figures=figures,
        title="VQ-VAE on {cfg.dataset}: K={cfg.num_codes} codes of dim {cfg.code_dim}, "
        "{code_grid[0]}x{code_grid[1]} grid, {epochs} + {prior_epochs} (prior) epochs on "
        "{train_size} images, seed={cfg.seed}",
        evaluation_rows=(
            ("test reconstruction NLL", "{test_recon_nll:.2f} nats"),
            ("test prior NLL of the codes", "{test_prior_nll:.2f} nats"),
            (
                "test NLL bound (two-stage)",
                "{test_nll_bound:.2f} ± {test_nll_bound_stderr:.2f} nats, "
                "{test_bits_per_dim:.4f} bits/dim",
            ),
            ("bound with a uniform prior", "{uniform_prior_nll_bound:.2f} nats"),
            ("codebook perplexity", "{codebook_perplexity:.2f} ({codes_used} codes used)"),
        ),
        summary_rows=(..., ("seconds", "{seconds:.1f}")),
        data=load_pixels,
        tiny=dict(
            epochs=1, prior_epochs=2, num_codes=8, channels=8, prior_channels=8, train_size=300
        ),
    )
)
