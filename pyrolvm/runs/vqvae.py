"""One VQ-VAE run, ``pyrolvm train vqvae``: stage 1 (the VQ-VAE's autoencoder loss), then
stage 2 (a PixelCNN prior over the training images' code grids), both with
:func:`pyrolvm.inference.train` and :func:`~pyrolvm.guides.empty_guide`; then the test
reconstruction NLL, the two-stage NLL bound ``-log p(x | z*) - log p(z*)`` (nats, bits per
dimension; :mod:`pyrolvm.models.vqvae` says why it bounds log p(x) and why stage 1 alone does
not), the codebook perplexity, reconstructions and samples. ``train_vqvae(...)`` is the
command in one call; ``evaluate_vqvae(folder)`` is ``pyrolvm evaluate FOLDER``.
"""

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

import pyro
import torch

from .. import plots
from ..errors import ConfigError, Interrupted, TrainingDiverged
from ..guides import empty_guide
from ..inference import (
    importance_sample,
    make_optim,
    mean_and_stderr,
    rng_state,
    set_rng_state,
    train,
)
from ..models import VQVAE, PixelCNN, bits_per_dim, codebook_usage
from .autoregressive import load_pixels
from .common import (
    CHECKPOINT,
    format_summary,
    record_stop,
    reload_run,
    run_folder,
    save_checkpoint,
    write_json,
)
from .config import Count, PositiveFloat, Range, RunConfig
from .registry import RunKind, register


@dataclass
class VQVAEConfig(RunConfig):
    """Train a VQ-VAE (van den Oord et al. 2017) on binarized images, then a gated PixelCNN
    prior over its code grids, and report the two-stage model's test NLL bound (nats, bits per
    dimension) and codebook perplexity. The flags of ``pyrolvm train vqvae``."""

    DATASET_DEFAULTS: ClassVar[dict] = {
        "digits": dict(downsample=1, epochs=50, prior_epochs=30, batch_size=100, lr=3e-3),
        "mnist": dict(downsample=2, epochs=3, prior_epochs=3, batch_size=100, lr=2e-3),
    }

    out: str = "runs/vqvae"
    """the run folder"""
    binarize: Literal["dynamic", "static"] = "dynamic"
    """binary pixels: a fresh draw per minibatch (dynamic) or one fixed draw (static)"""
    train_size: Annotated[int, Range(0)] = 0
    """train on the first N training images only (0: all)"""
    num_codes: Annotated[int, Range(2)] = 32
    """K, codebook size"""
    code_dim: Count = 16
    """d, dimension of each code"""
    channels: Count = 32
    """hidden channels of encoder and decoder"""
    downsample: Count | None = None
    """stride-2 layers: the code grid is (H / 2^n, W / 2^n) (default: 1 digits, 2 mnist)"""
    beta: Annotated[float, Range(0)] = 0.25
    """commitment weight (paper: 0.25)"""
    epochs: Count | None = None
    """stage-1 epochs (default: 50 digits, 3 mnist)"""
    prior_epochs: Count | None = None
    """stage-2 epochs of the PixelCNN prior (default: 30 digits, 3 mnist)"""
    prior_channels: Count = 32
    """channels of the prior's PixelCNN"""
    prior_layers: Count = 4
    """gated layers of the prior's PixelCNN (kernel 3)"""
    batch_size: Count | None = None
    """images per step (default: 100)"""
    lr: PositiveFloat | None = None
    """Adam learning rate of both stages (default: 3e-3 digits, 2e-3 mnist)"""
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


@torch.no_grad()
def codes_of(model, x, batch_size=1000):
    """The code grids of images x (B, D), flattened, as a float tensor (B, h * w)."""
    return torch.cat([model.codes(b) for b in x.split(batch_size)]).to(x.dtype)


@torch.no_grad()
def evaluate(model, prior, test, cfg, progress=False):
    """Test figures of a two-stage VQ-VAE.

    Returns:
        dict: ``test_recon_nll`` (``-log p(x | z*)``), ``test_prior_nll`` (``-log p(z*)``
        under the PixelCNN prior), ``test_nll_bound`` (their sum, an upper bound on the NLL)
        with ``test_nll_bound_stderr``, all nats per image; ``test_bits_per_dim`` (of the
        bound); ``uniform_prior_nll_bound`` (the bound with a uniform prior: recon +
        h w log K); ``codebook_perplexity`` and ``codes_used`` on the test codes.
    """
    codes = codes_of(model, test)
    recon = torch.cat([model.reconstruction_log_prob(b) for b in test.split(1000)]).double()
    prior.eval()
    prior_ll = importance_sample(
        prior, empty_guide, codes, num_samples=1, batch_size=cfg.eval_batch_size, progress=progress
    ).log_likelihood
    prior.train()
    bound, se = mean_and_stderr(-(recon + prior_ll))
    counts, perplexity = codebook_usage(codes.long(), cfg.num_codes)
    grid = codes.shape[-1]
    return {
        "test_recon_nll": -recon.mean().item(),
        "test_prior_nll": -prior_ll.mean().item(),
        "test_nll_bound": bound,
        "test_nll_bound_stderr": se,
        "test_bits_per_dim": bits_per_dim(bound, test.shape[-1]),
        "uniform_prior_nll_bound": -recon.mean().item() + grid * math.log(cfg.num_codes),
        "codebook_perplexity": perplexity.item(),
        "codes_used": int((counts > 0).sum().item()),
        "code_grid": list(model.grid_shape),
    }


def train_vqvae(config=None, data=None, **overrides):
    """Train a VQ-VAE and its PixelCNN prior and write the run folder; ``pyrolvm train vqvae``
    in one call.

    Writes ``config.json``, ``metrics.json`` (the figures of ``evaluate``, ``curves`` with
    ``stage1_loss`` (the stage-1 loss per image: reconstruction NLL + codebook + commitment,
    not a bound) and ``prior_log_likelihood`` per epoch), ``checkpoint.pt`` (both networks),
    ``reconstructions.png`` and ``samples.png`` (codes from the prior, decoded to pixel
    probabilities).

    Returns:
        dict: the metrics.

    Raises:
        ConfigError, DataError: bad settings or data, an occupied folder.
        TrainingDiverged, Interrupted: as :func:`pyrolvm.runs.train_vae`; ``--resume``
            continues either stage (bitwise equal to the uninterrupted run on the CPU).
    """
    cfg = dataclasses.replace(config or VQVAEConfig(), **overrides).resolved()
    data = load_pixels(cfg, data)
    config_dict = dataclasses.asdict(cfg) | {"data_dim": data.data_dim}
    with run_folder(cfg.out, "vqvae", config_dict, cfg.resume, cfg.overwrite) as (folder, saved):
        pyro.clear_param_store()
        pyro.set_rng_seed(cfg.seed)
        model, prior = build(cfg, data.image_shape)
        model.to(data.train.device)
        prior.to(data.train.device)
        if saved is None:
            write_json(os.path.join(folder, "config.json"), config_dict)
        path = os.path.join(folder, CHECKPOINT)
        stage = saved["stage"] if saved is not None else 1
        last = {"train": saved and saved["train"]}

        def save(stage_, **more):  # the parameters are in the train state (the param store)
            def write(state):
                last["train"] = state
                save_checkpoint(
                    path,
                    {
                        "kind": "vqvae",
                        "config": config_dict,
                        "stage": stage_,
                        "epoch": len(state["history"]["train_elbo"]),
                        "train": state,
                        **more,
                    },
                )

            return write

        options = dict(batch_size=cfg.batch_size, progress=cfg.progress)
        try:
            if stage == 1:
                stage1 = train(
                    model,
                    empty_guide,
                    data.train,
                    optim=make_optim(cfg.lr),
                    epochs=cfg.epochs,
                    transform=data.train_transform,
                    checkpoint=save(1),
                    resume_from=saved and saved["train"],
                    **options,
                )
                boundary = rng_state(data.train.device)  # the codes' binarization draws here
            else:  # stage 2: the stage-1 model and curve, and the random state between them
                assert saved is not None
                stage1, boundary = saved["stage1"], saved["boundary_rng"]
                model.load_state_dict(saved["model"])
                pyro.module(model.name, model)  # its parameters in the store, as after stage 1
            set_rng_state(boundary, data.train.device)
            transform = data.train_transform
            train_x = transform(data.train) if transform is not None else data.train
            codes = codes_of(model, train_x)
            stage1_model = {k: v.detach().clone() for k, v in model.state_dict().items()}
            stage2 = train(
                prior,
                empty_guide,
                codes,
                optim=make_optim(cfg.lr),
                epochs=cfg.prior_epochs,
                checkpoint=save(2, stage1=stage1, boundary_rng=boundary, model=stage1_model),
                resume_from=saved["train"] if stage == 2 else None,
                **options,
            )
        except (TrainingDiverged, Interrupted) as exc:
            raise record_stop(folder, exc) from None
        save_checkpoint(
            path,
            {
                "kind": "vqvae",
                "config": config_dict,
                "stage": 2,
                "epoch": len(stage2["train_elbo"]),
                # a --resume of the finished run retrains nothing
                "train": last["train"],
                "stage1": stage1,
                "boundary_rng": boundary,
                "model": model.state_dict(),
                "prior": prior.state_dict(),
            },
        )
        final = evaluate(model, prior, data.test, cfg, cfg.progress)
        with torch.no_grad():
            x = data.test[:32]
            plots.reconstructions(
                os.path.join(folder, "reconstructions.png"),
                x,
                model.decode_codes(model.codes(x)),
                data.image_shape,
            )
            pyro.set_rng_seed(cfg.seed)
            samples = model.decode_codes(prior.sample(64))
        plots.image_grid(
            os.path.join(folder, "samples.png"),
            samples,
            data.image_shape,
            "VQ-VAE samples: codes from the PixelCNN prior, decoded (pixel probabilities)",
        )
        seconds = stage1["seconds"] + stage2["seconds"]
        metrics = {
            "status": "ok",
            "complete": True,
            **final,
            "train_size": len(data.train),
            "epochs": len(stage1["train_elbo"]),
            "prior_epochs": len(stage2["train_elbo"]),
            "seconds": sum(seconds),
            "curves": {
                "stage1_loss": [-v for v in stage1["train_elbo"]],
                "prior_log_likelihood": stage2["train_elbo"],
                "seconds": seconds,
            },
            "figures": ["reconstructions.png", "samples.png"],
        }
        write_json(os.path.join(folder, "metrics.json"), metrics)
    return metrics


def evaluate_vqvae(folder, data_root=None, progress=True, device="auto"):
    """Reload a vqvae run folder and recompute its test figures (equal to its metrics.json).

    Raises:
        ConfigError: no valid checkpoint in ``folder``, or one of another kind.
    """
    state, cfg, _ = reload_run(folder, "vqvae", VQVAEConfig, data_root, progress, device=device)
    data = load_pixels(cfg)
    pyro.clear_param_store()
    model, prior = build(cfg, data.image_shape)
    model.to(data.train.device)
    prior.to(data.train.device)
    if "prior" not in state:  # the checkpoint of a run stopped before its end
        raise ConfigError(
            f"the vqvae run in {folder} stopped before it finished: continue it with the "
            "same command and --resume, then evaluate it"
        )
    model.load_state_dict(state["model"])
    prior.load_state_dict(state["prior"])
    return evaluate(model, prior, data.test, cfg, progress)


def evaluation_rows(metrics):
    """The rows ``pyrolvm evaluate`` prints for a vqvae run."""
    return [
        ("test reconstruction NLL", f"{metrics['test_recon_nll']:.2f} nats"),
        ("test prior NLL of the codes", f"{metrics['test_prior_nll']:.2f} nats"),
        (
            "test NLL bound (two-stage)",
            f"{metrics['test_nll_bound']:.2f} ± {metrics['test_nll_bound_stderr']:.2f} nats, "
            f"{metrics['test_bits_per_dim']:.4f} bits/dim",
        ),
        ("bound with a uniform prior", f"{metrics['uniform_prior_nll_bound']:.2f} nats"),
        (
            "codebook perplexity",
            f"{metrics['codebook_perplexity']:.2f} ({metrics['codes_used']} codes used)",
        ),
    ]


def summary(metrics, cfg, folder):
    """The summary table printed at the end of ``pyrolvm train vqvae``."""
    cfg = cfg.resolved()
    h, w = metrics["code_grid"]
    title = (
        f"VQ-VAE on {cfg.dataset}: K={cfg.num_codes} codes of dim {cfg.code_dim}, {h}x{w} grid, "
        f"{metrics['epochs']} + {metrics['prior_epochs']} (prior) epochs on "
        f"{metrics['train_size']} images, seed={cfg.seed}"
    )
    rows = evaluation_rows(metrics) + [
        ("seconds", f"{metrics['seconds']:.1f}"),
        (
            "run folder",
            f"{folder}  (config.json, metrics.json, {CHECKPOINT}, {', '.join(metrics['figures'])})",
        ),
    ]
    return format_summary(title, rows)


KIND = register(
    RunKind(
        "vqvae",
        VQVAEConfig,
        train_vqvae,
        evaluate_vqvae,
        summary,
        evaluation_rows,
        description="a VQ-VAE, then a PixelCNN prior over its codes (two stages)",
    )
)
