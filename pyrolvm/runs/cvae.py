"""One CVAE run (Sohn, Lee & Yan 2015, section 4.1): MNIST quadrant completion. For each
number of observed quadrants (1, 2, 3) the deterministic baseline network is fitted by
maximum likelihood, then the CVAE on top of it (its prior network reads the baseline's
prediction), and both are scored by the test conditional negative log-likelihood
-log p(y | x) of the unobserved quadrants, the CVAE's by importance sampling with K samples.

``train_cvae(...)`` is ``pyrolvm train cvae`` in one Python call; ``evaluate_cvae(folder)`` is
``pyrolvm evaluate FOLDER``.
"""

import dataclasses
import os
from dataclasses import dataclass
from typing import ClassVar, Literal

import pyro
import torch

from .. import plots
from ..data import quadrant_mask
from ..devices import resolve_device
from ..errors import ConfigError, Interrupted, TrainingDiverged
from ..guides import CVAEGuide
from ..inference import importance_sample, make_optim, mean_and_stderr, train
from ..models import CVAE, BaselineNet, no_latents
from ..nets import ACTIVATIONS
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

__all__ = ["CVAEConfig", "evaluate_cvae", "train_cvae"]

#: Negative conditional log-likelihoods (nats per test image) published in Pyro's CVAE
#: tutorial (https://pyro.ai/examples/cvae.html, "Evaluating the results"; MNIST with grey
#: pixels, 500-500 hidden units, 50 epochs with early stopping), by input quadrants.
PYRO_TUTORIAL_NLL = {
    "baseline": {1: 100.4, 2: 61.9, 3: 25.4},
    "cvae": {1: 71.8, 2: 51.0, 3: 24.2},
}
#: Test images and sampled completions per image in completions_q*.png.
FIGURE_IMAGES, FIGURE_SAMPLES = 8, 4


@dataclass
class CVAEConfig(RunConfig):
    """Quadrant completion with a conditional VAE and its deterministic baseline (Sohn et al.
    2015, section 4.1; Pyro's examples/cvae): given 1, 2 or 3 quadrants of a binarized digit
    as x, predict the others, y. The flags of ``pyrolvm train cvae``; ``None`` means the
    dataset's default."""

    DATASET_DEFAULTS: ClassVar[dict] = {
        "digits": dict(latent_dim=8, hidden=(128, 128), epochs=60, baseline_epochs=30, lr=3e-3),
        "mnist": dict(latent_dim=50, hidden=(500, 500), epochs=5, baseline_epochs=3, lr=1e-3),
    }

    out: str = "runs/cvae"
    """the run folder"""
    quadrants: tuple[Literal[1, 2, 3], ...] = (1, 2, 3)
    """numbers of observed input quadrants; one baseline and one CVAE are trained for each"""
    latent_dim: Count | None = None
    """latent dimensions (default: 8 digits, 50 mnist)"""
    hidden: Sizes | None = None
    """hidden sizes of every network (default: 128,128 digits, 500,500 mnist)"""
    activation: Literal[tuple(ACTIVATIONS)] = "relu"
    """hidden-layer nonlinearity"""
    epochs: Count | None = None
    """CVAE passes over the training images (default: 60 digits, 5 mnist)"""
    baseline_epochs: Count | None = None
    """baseline passes over the training images (default: 30 digits, 3 mnist)"""
    batch_size: Count = 100
    """images per step"""
    lr: PositiveFloat | None = None
    """Adam learning rate (default: 3e-3 digits, 1e-3 mnist)"""
    eval_samples: Count = 100
    """importance samples K of the CVAE's test log p(y | x)"""
    eval_batch_size: Count = 100
    """test images per evaluation call"""

    def check(self):
        if not self.quadrants or len(set(self.quadrants)) != len(self.quadrants):
            raise ConfigError(
                "--quadrants takes distinct values among 1 2 3, e.g. --quadrants 1 2 3"
            )
        if self.resume:
            raise ConfigError("cvae runs are short and not resumable: rerun with --overwrite")


def on_images(fn, mask):
    """``fn(x, y)`` called on whole images: x the pixels where ``mask`` (bool, (D,)) is True,
    y the others; so that the training loop's per-minibatch binarization draws x and y
    together."""

    def call(images):
        return fn(images[:, mask], images[:, ~mask])

    return call


def build(cfg, quadrants, image_shape, device="cpu"):
    """(input mask, baseline, CVAE, guide) for ``quadrants`` observed quadrants, on
    ``device``."""
    mask = quadrant_mask(image_shape, quadrants).to(device)
    nx, ny = int(mask.sum()), int((~mask).sum())
    baseline = BaselineNet(nx, ny, cfg.hidden, cfg.activation, name=f"baseline_q{quadrants}")
    model = CVAE(
        nx,
        ny,
        cfg.latent_dim,
        cfg.hidden,
        cfg.activation,
        baseline=baseline,
        name=f"cvae_q{quadrants}",
    )
    guide = CVAEGuide(
        nx, ny, cfg.latent_dim, cfg.hidden, cfg.activation, name=f"recognition_q{quadrants}"
    )
    return mask, baseline.to(device), model.to(device), guide.to(device)


def evaluate(parts, test, cfg):
    """Test -log p(y | x) of the baseline (exact) and of the CVAE (importance sampling with
    ``cfg.eval_samples`` samples from q(z | x, y), seeded by ``cfg.seed``), nats per image,
    with standard errors over test images."""
    mask, baseline, model, guide = parts
    pyro.set_rng_seed(cfg.seed)
    base = importance_sample(
        on_images(baseline, mask), on_images(no_latents, mask), test, num_samples=1
    )
    result = importance_sample(
        on_images(model, mask),
        on_images(guide, mask),
        test,
        num_samples=cfg.eval_samples,
        batch_size=cfg.eval_batch_size,
        progress=cfg.progress,
    )
    b_nll, b_se = mean_and_stderr(-base.log_likelihood)
    nll, se = mean_and_stderr(-result.log_likelihood)
    elbo, _ = mean_and_stderr(result.elbo)
    return {
        "baseline_nll": b_nll,
        "baseline_nll_stderr": b_se,
        "cvae_nll": nll,
        "cvae_nll_stderr": se,
        "cvae_elbo": elbo,
        "cvae_ess": result.ess.mean().item(),
    }


def completions_figure(path, parts, data, quadrants):
    """Save completions of the first test images: rows of inputs (output pixels grey), the
    baseline's prediction, FIGURE_SAMPLES CVAE samples (means of p(y | x, z), z ~ p(z | x)),
    and the truth."""
    mask, baseline, model, _ = parts
    images = data.test[:FIGURE_IMAGES]
    x = images[:, mask]

    def compose(y):
        out = images.clone()
        out[:, ~mask] = y
        return out

    rows = [compose(torch.full_like(images[:, ~mask], 0.5)), compose(baseline.predict(x))]
    rows += [compose(y) for y in model.sample(x, FIGURE_SAMPLES)]
    rows.append(images)
    plots.image_grid(
        path,
        torch.cat(rows),
        data.image_shape,
        f"{quadrants} quadrant(s) given: input / baseline / {FIGURE_SAMPLES} CVAE samples / truth",
        ncols=FIGURE_IMAGES,
    )


def train_cvae(config=None, data=None, **overrides):
    """Train and evaluate baseline and CVAE for each ``quadrants`` setting and write the run
    folder; ``pyrolvm train cvae`` in one call.

    Writes into ``config.out``: ``config.json``; ``metrics.json`` (per setting ``q1``, ``q2``,
    ``q3``: ``baseline_nll``, ``cvae_nll`` (nats per test image, -log p(y | x)) with
    ``*_stderr``, ``cvae_elbo``, ``cvae_ess``, training curves; ``eval_samples``; the
    published figures of Pyro's tutorial as ``pyro_tutorial_nll``); ``checkpoint.pt``; the
    figures ``completions_q*.png``.

    Raises:
        ConfigError, DataError: bad settings or data, or an occupied run folder.
        TrainingDiverged, Interrupted: as :func:`pyrolvm.inference.train`.
    """
    cfg = dataclasses.replace(config or CVAEConfig(), **overrides).resolved()
    data = on_device(load_data(cfg, "dynamic", data), resolve_device(cfg.device))
    config_dict = dataclasses.asdict(cfg) | {"data_dim": data.data_dim}
    with run_folder(cfg.out, "cvae", config_dict, cfg.resume, cfg.overwrite) as (folder, _):
        write_json(os.path.join(folder, "config.json"), config_dict)
        pyro.clear_param_store()
        pyro.set_rng_seed(cfg.seed)
        metrics = {"status": "ok", "complete": True, "eval_samples": cfg.eval_samples}
        states, figures = {}, []
        for q in cfg.quadrants:
            parts = build(cfg, q, data.image_shape, data.train.device)
            mask, baseline, model, guide = parts
            common = dict(
                batch_size=cfg.batch_size, transform=data.train_transform, progress=cfg.progress
            )
            try:
                base_history = train(
                    on_images(baseline, mask),
                    on_images(no_latents, mask),
                    data.train,
                    optim=make_optim(cfg.lr),
                    epochs=cfg.baseline_epochs,
                    **common,
                )
                history = train(
                    on_images(model, mask),
                    on_images(guide, mask),
                    data.train,
                    optim=make_optim(cfg.lr),
                    epochs=cfg.epochs,
                    **common,
                )
            except (TrainingDiverged, Interrupted) as exc:
                raise record_stop(folder, exc) from None
            result = evaluate(parts, data.test, cfg)
            result["baseline_train_ll"] = base_history["train_elbo"]
            result["train_elbo"] = history["train_elbo"]
            result["seconds"] = sum(base_history["seconds"]) + sum(history["seconds"])
            metrics[f"q{q}"] = result
            states[f"q{q}"] = {"model": model.state_dict(), "guide": guide.state_dict()}
            name = f"completions_q{q}.png"
            completions_figure(os.path.join(folder, name), parts, data, q)
            figures.append(name)
        metrics["pyro_tutorial_nll"] = PYRO_TUTORIAL_NLL
        metrics["figures"] = figures
        save_checkpoint(
            os.path.join(folder, CHECKPOINT),
            {"kind": "cvae", "config": config_dict, "states": states},
        )
        write_json(os.path.join(folder, "metrics.json"), metrics)
    return metrics


def evaluate_cvae(folder, eval_samples=None, data_root=None, progress=True, device="auto"):
    """Reload a CVAE run folder and recompute its test figures (with the run's K and seed, the
    numbers of its metrics.json).

    Returns:
        dict: per setting ``q1``... the ``evaluate`` figures; ``eval_samples``.

    Raises:
        ConfigError: no valid checkpoint in ``folder``, or one of another kind of run.
    """
    overrides = {} if eval_samples is None else {"eval_samples": eval_samples}
    overrides["device"] = device
    state, cfg, _ = reload_run(folder, "cvae", CVAEConfig, data_root, progress, **overrides)
    data = on_device(load_data(cfg, "dynamic"), resolve_device(cfg.device))
    pyro.clear_param_store()
    out = {"eval_samples": cfg.eval_samples}
    for q in cfg.quadrants:
        parts = build(cfg, q, data.image_shape, data.train.device)
        parts[2].load_state_dict(state["states"][f"q{q}"]["model"])
        parts[3].load_state_dict(state["states"][f"q{q}"]["guide"])
        out[f"q{q}"] = evaluate(parts, data.test, cfg)
    return out


def _rows(metrics):
    k = metrics["eval_samples"]
    rows = []
    for key in sorted(k2 for k2 in metrics if k2.startswith("q") and k2[1:].isdigit()):
        m, q = metrics[key], int(key[1:])
        rows.append(
            (
                f"{q} quadrant(s): -log p(y | x)",
                f"baseline {m['baseline_nll']:.2f} ± {m['baseline_nll_stderr']:.2f}, "
                f"CVAE (K={k}) {m['cvae_nll']:.2f} ± {m['cvae_nll_stderr']:.2f} nats "
                f"(Pyro tutorial: {PYRO_TUTORIAL_NLL['baseline'][q]} / "
                f"{PYRO_TUTORIAL_NLL['cvae'][q]})",
            )
        )
    return rows


def summary(metrics, cfg, folder):
    """The summary table printed at the end of ``pyrolvm train cvae``."""
    cfg = cfg.resolved()
    title = (
        f"CVAE quadrant completion on {cfg.dataset}: latent_dim={cfg.latent_dim}, "
        f"hidden={cfg.hidden}, {cfg.baseline_epochs} baseline + {cfg.epochs} CVAE epochs, "
        f"seed={cfg.seed}"
    )
    rows = _rows(metrics) + [
        (
            "run folder",
            f"{folder}  (config.json, metrics.json, {CHECKPOINT}, {', '.join(metrics['figures'])})",
        )
    ]
    return format_summary(title, rows)


def evaluation_rows(metrics):
    """The rows ``pyrolvm evaluate`` prints for a CVAE run."""
    return _rows(metrics)


KIND = register(
    RunKind(
        "cvae",
        CVAEConfig,
        train_cvae,
        evaluate_cvae,
        summary,
        evaluation_rows,
        description="quadrant completion with a conditional VAE and a baseline (Sohn et al. 2015)",
        evaluate_options=("eval_samples",),
    )
)
