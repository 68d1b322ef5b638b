"""One CVAE run, in one of two settings.

- ``--condition quadrants`` (Sohn, Lee & Yan 2015, section 4.1): MNIST quadrant completion.
  For each number of observed quadrants (1, 2, 3) the deterministic baseline network is
  fitted by maximum likelihood, then the CVAE on top of it (its prior network reads the
  baseline's prediction), and both are scored by the test conditional negative
  log-likelihood -log p(y | x) of the unobserved quadrants, the CVAE's by importance sampling
  with K samples.
- ``--condition label``: the class-conditional VAE, the same :class:`~pyrolvm.models.CVAE`
  and :class:`~pyrolvm.guides.CVAEGuide` with the one-hot label as the input and the image
  as the output: p(z | label) (learned, or ``--prior standard``: N(0, I)), p(image | label,
  z), q(z | image, label); scored by the test -log p(image | label), importance-sampled, and
  pictured by samples per class.

The CVAE trains with any objective of ``pyrolvm.inference.ELBOS`` (``--elbo``; the baseline,
which has no latent, is always fitted by maximum likelihood), and an interrupted run resumes
(``--resume``) to the numbers of the uninterrupted one.

``train_cvae(...)`` is ``pyrolvm train cvae`` in one Python call; ``evaluate_cvae(folder)`` is
``pyrolvm evaluate FOLDER``.
"""

import dataclasses
import os
from dataclasses import dataclass
from typing import ClassVar, Literal

import pyro
import torch
import torch.nn.functional as F

from .. import plots
from ..data import quadrant_mask
from ..devices import resolve_device
from ..errors import ConfigError, Interrupted, TrainingDiverged
from ..guides import CVAEGuide
from ..inference import importance_sample, make_optim, mean_and_stderr, train
from ..models import CVAE, BaselineNet, no_latents
from ..models.cvae import CVAE_PRIORS
from ..nets import ACTIVATIONS
from .common import (
    CHECKPOINT,
    format_summary,
    load_data,
    mask_columns,
    on_device,
    record_stop,
    reload_run,
    run_folder,
    save_checkpoint,
    write_json,
)
from .config import Count, PositiveFloat, Sizes, flag
from .objective import ObjectiveConfig
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
#: Samples per class (columns) in samples_per_class.png.
CLASS_SAMPLES = 10
#: Baseline epochs per dataset (quadrant completion only).
BASELINE_EPOCHS = {"digits": 30, "mnist": 3}


@dataclass
class CVAEConfig(ObjectiveConfig):
    """A conditional VAE (Sohn et al. 2015): quadrant completion against its deterministic
    baseline (given 1, 2 or 3 quadrants of a binarized digit as x, predict the others, y;
    Pyro's examples/cvae), or the class-conditional VAE (x the label, y the image). The flags
    of ``pyrolvm train cvae``; ``None`` means the dataset's default."""

    DATASET_DEFAULTS: ClassVar[dict] = {
        "digits": dict(latent_dim=8, hidden=(128, 128), epochs=60, lr=3e-3),
        "mnist": dict(latent_dim=50, hidden=(500, 500), epochs=5, lr=1e-3),
    }

    out: str = "runs/cvae"
    """the run folder"""
    condition: Literal["quadrants", "label"] = "quadrants"
    """what the CVAE conditions on: quadrants of the image (quadrant completion, Sohn et al.
    2015), or the label (the class-conditional VAE p(image | label, z))"""
    prior: Literal[CVAE_PRIORS] = "conditional"
    """p(z | x): the learned conditional prior network, or standard N(0, I) (then the
    baseline's prediction feeds nothing)"""
    quadrants: tuple[Literal[1, 2, 3], ...] | None = None
    """--condition quadrants: numbers of observed input quadrants; one baseline and one CVAE
    are trained for each (default 1 2 3)"""
    latent_dim: Count | None = None
    """latent dimensions (default: 8 digits, 50 mnist)"""
    hidden: Sizes | None = None
    """hidden sizes of every network (default: 128,128 digits, 500,500 mnist)"""
    activation: Literal[tuple(ACTIVATIONS)] = "relu"
    """hidden-layer nonlinearity"""
    epochs: Count | None = None
    """CVAE passes over the training images (default: 60 digits, 5 mnist)"""
    baseline_epochs: Count | None = None
    """--condition quadrants: baseline passes over the training images (default: 30 digits,
    3 mnist)"""
    batch_size: Count = 100
    """images per step"""
    lr: PositiveFloat | None = None
    """Adam learning rate (default: 3e-3 digits, 1e-3 mnist)"""
    eval_samples: Count = 100
    """importance samples K of the CVAE's test log p(y | x)"""
    eval_batch_size: Count = 100
    """test images per evaluation call"""

    def resolve_defaults(self, values):
        if values["condition"] == "label":
            given = [k for k in ("quadrants", "baseline_epochs") if values[k] is not None]
            if given:
                raise ConfigError(
                    "--condition label conditions on the label and trains no baseline: drop "
                    + ", ".join(flag(k) for k in given)
                )
            return
        if values["quadrants"] is None:
            values["quadrants"] = (1, 2, 3)
        if values["baseline_epochs"] is None:
            values["baseline_epochs"] = BASELINE_EPOCHS.get(
                values["dataset"], BASELINE_EPOCHS["digits"]
            )

    def check(self):
        if self.condition == "quadrants" and (
            not self.quadrants or len(set(self.quadrants)) != len(self.quadrants)
        ):
            raise ConfigError(
                "--quadrants takes distinct values among 1 2 3, e.g. --quadrants 1 2 3"
            )
        self.check_objective()

    def settings(self):
        """The run's settings in training order: ``q1``, ``q2``, ``q3`` (those of
        ``quadrants``) or ``label``."""
        if self.condition == "label":
            return ["label"]
        return [f"q{q}" for q in self.quadrants or ()]


def on_images(fn, mask):
    """``fn(x, y)`` called on whole images: x the pixels where ``mask`` (bool, (D,)) is True,
    y the others; so that the training loop's per-minibatch binarization draws x and y
    together."""

    inside, outside = mask_columns(mask)  # (found once: no sync per call)

    def call(images):
        return fn(images[:, inside], images[:, outside])

    return call


def on_labels(fn, num_classes):
    """``fn(x, y)`` called on (images, labels): x the one-hot label (in the images' dtype,
    shape (B, num_classes)), y the image; the training loop's binarization applies to the
    images, the first tensor."""

    def call(images, labels):
        return fn(F.one_hot(labels, num_classes).to(images.dtype), images)

    return call


@dataclass
class Setting:
    """One trained pair of a run: ``key`` (``q1``... or ``label``), the CVAE ``model`` and
    ``guide``, ``wrap`` (maps ``fn(x, y)`` to a function of the data tuple's rows), the
    ``baseline`` and the input ``mask`` (quadrant completion only)."""

    key: str
    model: CVAE
    guide: CVAEGuide
    wrap: object
    baseline: BaselineNet | None = None
    mask: torch.Tensor | None = None

    def data(self, data, split):
        """The ``split`` (``"train"`` or ``"test"``) tensors the wrapped functions take."""
        images = getattr(data, split)
        return images if self.mask is not None else (images, getattr(data, f"{split}_labels"))


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
        baseline=baseline if cfg.prior == "conditional" else None,
        name=f"cvae_q{quadrants}",
        prior=cfg.prior,
    )
    guide = CVAEGuide(
        nx, ny, cfg.latent_dim, cfg.hidden, cfg.activation, name=f"recognition_q{quadrants}"
    )
    return mask, baseline.to(device), model.to(device), guide.to(device)


def build_setting(cfg, key, data):
    """The :class:`Setting` ``key`` for the dataset ``data``, on its device."""
    device = data.train.device
    if key != "label":
        mask, baseline, model, guide = build(cfg, int(key[1:]), data.image_shape, device)
        wrap = lambda fn: on_images(fn, mask)  # noqa: E731
        return Setting(key, model, guide, wrap, baseline, mask)
    classes = num_classes(data)
    model = CVAE(
        classes,
        data.data_dim,
        cfg.latent_dim,
        cfg.hidden,
        cfg.activation,
        name="cvae_label",
        prior=cfg.prior,
    )
    guide = CVAEGuide(
        classes, data.data_dim, cfg.latent_dim, cfg.hidden, cfg.activation, name="recognition"
    )
    wrap = lambda fn: on_labels(fn, classes)  # noqa: E731
    return Setting(key, model.to(device), guide.to(device), wrap)


def num_classes(data):
    """Classes of a labelled dataset (the largest training label + 1).

    Raises:
        ConfigError: the dataset has no labels.
    """
    if getattr(data, "train_labels", None) is None:
        raise ConfigError(
            "--condition label needs a labelled dataset (digits or mnist): an .npz of images "
            "only has none; use --condition quadrants"
        )
    return int(data.train_labels.max()) + 1


def evaluate(setting, data, cfg):
    """Test -log p(y | x) of the CVAE (importance sampling with ``cfg.eval_samples`` samples
    from q(z | x, y), seeded by ``cfg.seed``) and, for quadrant completion, of the baseline
    (exact), nats per test image, with standard errors over test images; the CVAE's ELBO and
    effective sample size of the same draws."""
    wrap, test = setting.wrap, setting.data(data, "test")
    pyro.set_rng_seed(cfg.seed)
    out = {}
    if setting.baseline is not None:
        base = importance_sample(wrap(setting.baseline), wrap(no_latents), test, num_samples=1)
        out["baseline_nll"], out["baseline_nll_stderr"] = mean_and_stderr(-base.log_likelihood)
    result = importance_sample(
        wrap(setting.model),
        wrap(setting.guide),
        test,
        num_samples=cfg.eval_samples,
        batch_size=cfg.eval_batch_size,
        progress=cfg.progress,
    )
    nll, se = mean_and_stderr(-result.log_likelihood)
    elbo, _ = mean_and_stderr(result.elbo)
    return out | {
        "cvae_nll": nll,
        "cvae_nll_stderr": se,
        "cvae_elbo": elbo,
        "cvae_ess": result.ess.mean().item(),
    }


def completions_figure(path, setting, data, quadrants):
    """Save completions of the first test images: rows of inputs (output pixels grey), the
    baseline's prediction, FIGURE_SAMPLES CVAE samples (means of p(y | x, z), z ~ p(z | x)),
    and the truth."""
    mask, baseline, model = setting.mask, setting.baseline, setting.model
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


def samples_per_class_figure(path, setting, data, cfg):
    """Save CLASS_SAMPLES images per class, one row per class: the means of
    p(image | label, z) with z ~ p(z | label)."""
    classes = num_classes(data)
    labels = F.one_hot(torch.arange(classes, device=data.train.device), classes)
    samples = setting.model.sample(labels.to(data.train.dtype), CLASS_SAMPLES)  # (S, C, D)
    prior = "p(z | y)" if cfg.prior == "conditional" else "N(0, I)"
    plots.image_grid(
        path,
        samples.transpose(0, 1).reshape(-1, data.data_dim),
        data.image_shape,
        f"class-conditional VAE: one row per class y, means of p(x | y, z), z ~ {prior}",
        ncols=CLASS_SAMPLES,
    )


def figure(folder, setting, data, cfg):
    """Write the setting's figure, :func:`figure_name`, into ``folder``."""
    path = os.path.join(folder, figure_name(setting.key))
    if setting.key == "label":
        samples_per_class_figure(path, setting, data, cfg)
    else:
        completions_figure(path, setting, data, int(setting.key[1:]))


def train_cvae(config=None, data=None, **overrides):
    """Train and evaluate the CVAE of each setting (with its baseline, for quadrant
    completion) and write the run folder; ``pyrolvm train cvae`` in one call.

    Writes into ``config.out``: ``config.json``; ``metrics.json`` (per setting ``q1``, ``q2``,
    ``q3`` or ``label``: ``cvae_nll`` (nats per test image, -log p(y | x)) with its
    ``*_stderr``, ``cvae_elbo``, ``cvae_ess``, the training curves, and for quadrant completion
    ``baseline_nll``; ``eval_samples``; for quadrant completion the published figures of
    Pyro's tutorial as ``pyro_tutorial_nll``); ``checkpoint.pt`` (rewritten after every epoch:
    the finished settings' states and results, and the training state of the current one);
    the figures ``completions_q*.png`` or ``samples_per_class.png``. With ``resume`` an
    interrupted run continues from its checkpoint and ends as the uninterrupted run would.

    Raises:
        ConfigError, DataError: bad settings or data, or an occupied run folder.
        TrainingDiverged, Interrupted: as :func:`pyrolvm.inference.train`.
    """
    cfg = dataclasses.replace(config or CVAEConfig(), **overrides).resolved()
    data = on_device(load_data(cfg, "dynamic", data), resolve_device(cfg.device))
    if cfg.condition == "label":
        num_classes(data)  # a clear error before the folder is touched
    config_dict = dataclasses.asdict(cfg) | {"data_dim": data.data_dim}
    with run_folder(cfg.out, "cvae", config_dict, cfg.resume, cfg.overwrite) as (folder, saved):
        if saved is None:
            write_json(os.path.join(folder, "config.json"), config_dict)
        pyro.clear_param_store()
        pyro.set_rng_seed(cfg.seed)
        metrics = {"status": "ok", "complete": True, "eval_samples": cfg.eval_samples}
        # finished settings: {key: {"result", "model", "guide"}}; the one in training
        done = dict(saved.get("done", {})) if saved else {}
        current = saved.get("current") if saved else None
        figures = []
        for key in cfg.settings():
            if key in done:  # finished before the interruption: its figure is in the folder
                metrics[key] = done[key]["result"]
                figures.append(figure_name(key))
                continue
            resume = current if current is not None and current["key"] == key else None
            metrics[key] = fit_setting(cfg, key, data, folder, config_dict, done, resume)
            figures.append(figure_name(key))
        if cfg.condition == "quadrants":
            metrics["pyro_tutorial_nll"] = PYRO_TUTORIAL_NLL
        metrics["figures"] = figures
        save_checkpoint(
            os.path.join(folder, CHECKPOINT),
            {
                "kind": "cvae",
                "config": config_dict,
                "done": done,
                "current": None,
                "states": {k: {"model": d["model"], "guide": d["guide"]} for k, d in done.items()},
            },
        )
        write_json(os.path.join(folder, "metrics.json"), metrics)
    return metrics


def figure_name(key):
    """The file name of setting ``key``'s figure."""
    return "samples_per_class.png" if key == "label" else f"completions_{key}.png"


def fit_setting(cfg, key, data, folder, config_dict, done, resume):
    """Train setting ``key`` (its baseline first, for quadrant completion; from the state
    ``resume`` of its checkpoint if given), evaluate it, write its figure, and record it in
    ``done``; returns its metrics."""
    setting = build_setting(cfg, key, data)
    wrap, train_data = setting.wrap, setting.data(data, "train")
    path = os.path.join(folder, CHECKPOINT)

    def saver(phase, **extra):
        def save(state):
            save_checkpoint(
                path,
                {
                    "kind": "cvae",
                    "config": config_dict,
                    "epoch": len(state["history"]["train_elbo"]),
                    "done": done,
                    "current": {"key": key, "phase": phase, "train": state, **extra},
                },
            )

        return save

    common = dict(batch_size=cfg.batch_size, transform=data.train_transform, progress=cfg.progress)
    phase = resume["phase"] if resume is not None else None
    try:
        base_history = None
        if setting.baseline is not None:
            if phase == "cvae":  # the baseline finished before the interruption
                base_history = resume["baseline_history"]
                setting.baseline.load_state_dict(resume["baseline"])
            else:
                if phase == "baseline":  # the CVAE's initial values, drawn before the baseline
                    setting.model.load_state_dict(resume["init"]["model"])
                    setting.guide.load_state_dict(resume["init"]["guide"])
                # each phase's parameters alone in the store: a checkpoint restores exactly them
                pyro.clear_param_store()
                init = {"model": setting.model.state_dict(), "guide": setting.guide.state_dict()}
                base_history = train(
                    wrap(setting.baseline),
                    wrap(no_latents),
                    train_data,
                    optim=make_optim(cfg.lr),
                    epochs=cfg.baseline_epochs,
                    checkpoint=saver("baseline", init=init),
                    resume_from=resume["train"] if phase == "baseline" else None,
                    **common,
                )
        pyro.clear_param_store()
        history = train(
            wrap(setting.model),
            wrap(setting.guide),
            train_data,
            cfg.make_objective(),
            make_optim(cfg.lr),
            epochs=cfg.epochs,
            checkpoint=saver(
                "cvae",
                baseline_history=base_history,
                baseline=None if setting.baseline is None else setting.baseline.state_dict(),
            ),
            resume_from=resume["train"] if phase == "cvae" else None,
            **common,
        )
    except (TrainingDiverged, Interrupted) as exc:
        raise record_stop(folder, exc) from None
    result = evaluate(setting, data, cfg)
    result["train_elbo"] = history["train_elbo"]
    result["bound_name"] = (history.get("bound_name") or [None])[-1]  # the bound train_elbo holds
    result["seconds"] = sum(history["seconds"])
    if base_history is not None:
        result["baseline_train_ll"] = base_history["train_elbo"]
        result["seconds"] += sum(base_history["seconds"])
    figure(folder, setting, data, cfg)
    done[key] = {
        "result": result,
        "model": setting.model.state_dict(),
        "guide": setting.guide.state_dict(),
    }
    return result


def evaluate_cvae(folder, eval_samples=None, data_root=None, progress=True, device="auto"):
    """Reload a CVAE run folder and recompute its test figures (with the run's K and seed, the
    numbers of its metrics.json).

    Returns:
        dict: per setting ``q1``... or ``label`` the ``evaluate`` figures; ``eval_samples``.

    Raises:
        ConfigError: no valid checkpoint in ``folder``, one of another kind of run, or of an
            unfinished run.
    """
    overrides = {} if eval_samples is None else {"eval_samples": eval_samples}
    overrides["device"] = device
    state, cfg, _ = reload_run(folder, "cvae", CVAEConfig, data_root, progress, **overrides)
    if "states" not in state:
        raise ConfigError(
            f"{folder!r} holds an unfinished cvae run: finish it with `pyrolvm train cvae "
            "... --resume` (the same settings) before evaluating it"
        )
    data = on_device(load_data(cfg, "dynamic"), resolve_device(cfg.device))
    pyro.clear_param_store()
    out = {"eval_samples": cfg.eval_samples}
    for key in cfg.settings():
        setting = build_setting(cfg, key, data)
        setting.model.load_state_dict(state["states"][key]["model"])
        setting.guide.load_state_dict(state["states"][key]["guide"])
        out[key] = evaluate(setting, data, cfg)
    return out


def _rows(metrics):
    k = metrics["eval_samples"]
    rows = []
    if "label" in metrics:
        m = metrics["label"]
        rows.append(
            (
                f"-log p(image | label) (K={k})",
                f"{m['cvae_nll']:.2f} ± {m['cvae_nll_stderr']:.2f} nats "
                f"(test ELBO {m['cvae_elbo']:.2f})",
            )
        )
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
    what = (
        "class-conditional VAE"
        if cfg.condition == "label"
        else f"CVAE quadrant completion, {cfg.baseline_epochs} baseline +"
    )
    title = (
        f"{what} {cfg.epochs} CVAE epochs on {cfg.dataset}: latent_dim={cfg.latent_dim}, "
        f"hidden={cfg.hidden}, prior={cfg.prior}, {cfg.objective_label()}, seed={cfg.seed}"
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
        description="conditional VAE: quadrant completion against a baseline, or "
        "class-conditional (Sohn et al. 2015)",
        evaluate_options=("eval_samples",),
    )
)
