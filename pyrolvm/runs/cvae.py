"""``pyrolvm train cvae``: a conditional VAE (Sohn, Lee & Yan 2015): ``--condition
quadrants`` (section 4.1, Pyro's ``examples/cvae``: per number of observed quadrants, the
baseline then the CVAE, :mod:`pyrolvm.fitting.conditional`) or ``--condition label`` (the
class-conditional VAE), under any objective of ``pyrolvm.inference.ELBOS``."""

import os
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from .. import plots
from ..data import quadrant_mask
from ..errors import ConfigError
from ..fitting.conditional import (
    conditional_scores,
    fit_baseline,
    fit_conditional,
    on_images,
    on_labels,
)
from ..guides import CVAEGuide
from ..models import CVAE, BaselineNet
from ..models.cvae import CVAE_PRIORS
from ..nets import ACTIVATIONS
from .config import Count, Evaluation, Networks, Training, flag
from .objective import ObjectiveConfig
from .registry import RunKind, register
from .template import Run, Stage

__all__ = ["CVAEConfig", "on_images", "on_labels"]

#: Negative conditional log-likelihoods (nats per test image) published in Pyro's CVAE
#: tutorial (https://pyro.ai/examples/cvae.html, "Evaluating the results"; MNIST with grey
#: pixels, 500-500 hidden units, 50 epochs with early stopping), by input quadrants.
PYRO_TUTORIAL_NLL = {
    "baseline": {1: 100.4, 2: 61.9, 3: 25.4},
    "cvae": {1: 71.8, 2: 51.0, 3: 24.2},
}
#: Test images and sampled completions per image in completions_q*.png; samples per class
#: (columns) in samples_per_class.png.
FIGURE_IMAGES, FIGURE_SAMPLES, CLASS_SAMPLES = 8, 4, 10
#: Baseline epochs per dataset (quadrant completion only).
BASELINE_EPOCHS = {"digits": 30, "mnist": 3}


@dataclass
class CVAEConfig(Networks, Training, Evaluation, ObjectiveConfig):
    """The flags of ``pyrolvm train cvae``; ``None``: the dataset's default."""

    DATASET_DEFAULTS: ClassVar[dict] = {
        "digits": dict(latent_dim=8, hidden=(128, 128), epochs=60, lr=3e-3),
        "mnist": dict(latent_dim=50, hidden=(500, 500), epochs=5, lr=1e-3),
    }
    GROUPS = {"data": ("condition", "quadrants"), "training": ("baseline_epochs",)}

    out: str = "runs/cvae"
    condition: Literal["quadrants", "label"] = "quadrants"
    """x: observed quadrants (y the others) or the label"""
    prior: Literal[CVAE_PRIORS] = "conditional"
    """p(z | x)"""
    quadrants: tuple[Literal[1, 2, 3], ...] | None = None
    """observed quadrants, a pair per value (default 1 2 3)"""
    activation: Literal[tuple(ACTIVATIONS)] = "relu"
    """hidden-layer nonlinearity"""
    baseline_epochs: Count | None = None
    """--condition quadrants: baseline's (default 30; mnist 3)"""
    batch_size: Count = 100
    eval_samples: Count = 100

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
            values["baseline_epochs"] = BASELINE_EPOCHS.get(values["dataset"], 30)

    def check(self):
        quadrants = self.quadrants or ()
        if self.condition == "quadrants" and (
            not quadrants or len(set(quadrants)) < len(quadrants)
        ):
            raise ConfigError(
                "--quadrants takes distinct values among 1 2 3, e.g. --quadrants 1 2 3"
            )
        self.check_objective()

    def settings(self):
        """The run's settings in training order: ``q1``... (``quadrants``) or ``label``."""
        return ["label"] if self.condition == "label" else [f"q{q}" for q in self.quadrants or ()]


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


def build_setting(cfg, key, data):
    """The :class:`Setting` ``key`` for the dataset ``data``: for quadrant completion the input
    mask, the baseline, the CVAE whose prior network reads the baseline's prediction (unless
    ``--prior standard``) and its guide; for the label, the CVAE of the image given the
    one-hot label and its guide."""
    if key == "label":
        nx, ny, mask, name = num_classes(data), data.data_dim, None, "label"
    else:
        mask = quadrant_mask(data.image_shape, int(key[1:])).to(data.train.device)
        nx, ny, name = int(mask.sum()), int((~mask).sum()), key
    shape = (nx, ny, cfg.latent_dim, cfg.hidden, cfg.activation)
    baseline = None if mask is None else BaselineNet(nx, ny, *shape[3:], name=f"baseline_{key}")
    conditional = baseline if cfg.prior == "conditional" else None
    model = CVAE(*shape, baseline=conditional, name=f"cvae_{name}", prior=cfg.prior)
    guide = CVAEGuide(*shape, name="recognition" if mask is None else f"recognition_{key}")
    if mask is None:
        return Setting(key, model, guide, lambda fn: on_labels(fn, nx))
    return Setting(key, model, guide, lambda fn: on_images(fn, mask), baseline, mask)


def num_classes(data):
    """Classes of a labelled dataset (the largest training label + 1), else ConfigError."""
    if getattr(data, "train_labels", None) is None:
        raise ConfigError(
            "--condition label needs a labelled dataset (digits or mnist): an .npz of images "
            "only has none; use --condition quadrants"
        )
    return int(data.train_labels.max()) + 1


def evaluate(setting, data, cfg):
    """The setting's test figures (:func:`~pyrolvm.fitting.conditional.conditional_scores`,
    ``cfg.eval_samples`` samples seeded by ``cfg.seed``)."""
    options = dict(batch_size=cfg.eval_batch_size, progress=cfg.progress, seed=cfg.seed)
    parts = (setting.model, setting.guide, setting.baseline, setting.data(data, "test"))
    return conditional_scores(*parts, setting.wrap, cfg.eval_samples, **options)


def samples_per_class_figure(path, setting, data, cfg):
    """Save ``CLASS_SAMPLES`` images per class, one row per class: the means of
    p(image | label, z) with z ~ p(z | label)."""
    prior = "p(z | y)" if cfg.prior == "conditional" else "N(0, I)"
    title = f"class-conditional VAE: one row per class y, means of p(x | y, z), z ~ {prior}"
    classes, shape = num_classes(data), data.image_shape
    plots.class_samples(
        path, setting.model.sample, classes, data.train, shape, title, CLASS_SAMPLES
    )


def figure(folder, setting, data, cfg):
    """Write the setting's figure, :func:`figure_name`, into ``folder``: samples per class, or
    completions of the first test images (:func:`pyrolvm.plots.quadrant_completions`)."""
    path = os.path.join(folder, figure_name(setting.key))
    if setting.key == "label":
        return samples_per_class_figure(path, setting, data, cfg)
    images, parts = data.test[:FIGURE_IMAGES], (setting.mask, setting.baseline, setting.model)
    plots.quadrant_completions(
        path, images, *parts, setting.key[1:], data.image_shape, FIGURE_SAMPLES
    )


def figure_name(key):
    """The file name of setting ``key``'s figure."""
    return "samples_per_class.png" if key == "label" else f"completions_{key}.png"


def parts(run: Run) -> dict:
    """No part before the stages: each setting's networks are built by its first stage, after
    the earlier settings' evaluation, whose draws come first."""
    if run.cfg.condition == "label":
        num_classes(run.data)
    return {}


def setting_of(run: Run, key: str) -> Setting:
    """The :class:`Setting` ``key`` of the run, built once, its networks registered as parts
    ``KEY.model``, ``KEY.guide`` and ``KEY.baseline`` (with the checkpoint's state)."""
    if key not in run.extra:
        built = run.extra[key] = build_setting(run.cfg, key, run.data)
        for name in ("model", "guide", "baseline"):
            if getattr(built, name) is not None:
                run.add(f"{key}.{name}", getattr(built, name))
    return run.extra[key]


def stages(cfg) -> list[Stage]:
    """Per setting (``q1``... or ``label``) its baseline (quadrant completion only) and its
    CVAE, then its test figures and figure (:mod:`pyrolvm.fitting.conditional`)."""

    def options(run):
        cfg = run.cfg
        return dict(lr=cfg.lr, batch_size=cfg.batch_size, transform=run.data.train_transform)

    def baseline(key):
        def fit(run):
            s = setting_of(run, key)
            epochs, data = run.cfg.baseline_epochs, s.data(run.data, "train")
            return fit_baseline(
                s.baseline, data, s.wrap, epochs=epochs, **options(run), **run.hooks
            )

        return Stage(f"{key}.baseline", fit)

    def conditional(key):
        def fit(run):
            cfg, s = run.cfg, setting_of(run, key)
            data, loss = s.data(run.data, "train"), cfg.make_objective()
            history = fit_conditional(
                s.model, s.guide, data, loss, s.wrap, epochs=cfg.epochs, **options(run), **run.hooks
            )
            result = evaluate(s, run.data, cfg)
            result["train_elbo"] = history["train_elbo"]
            result["bound_name"] = (history.get("bound_name") or [None])[-1]  # train_elbo's
            result["seconds"] = sum(history["seconds"])
            base = run.results.get(f"{key}.baseline")
            if base is not None:
                result["baseline_train_ll"] = base["train_elbo"]
                result["seconds"] += sum(base["seconds"])
            figure(run.folder, s, run.data, cfg)
            return result

        return Stage(key, fit)

    out = []
    for key in cfg.settings():
        out += ([] if key == "label" else [baseline(key)]) + [conditional(key)]
    return out


def score(run: Run) -> dict:
    """Per setting the :func:`evaluate` figures; ``eval_samples``."""
    out = {key: evaluate(setting_of(run, key), run.data, run.cfg) for key in run.cfg.settings()}
    return {"eval_samples": run.cfg.eval_samples} | out


def report(run: Run) -> dict:
    """``metrics.json``: per setting its figures and curves (``cvae_nll``, -log p(y | x) in
    nats per test image, with ``*_stderr``, ``cvae_elbo``, ``cvae_ess``, ``train_elbo``, and for
    quadrant completion ``baseline_nll``, ``baseline_train_ll``); the published figures of
    Pyro's tutorial (``pyro_tutorial_nll``)."""
    metrics = {"eval_samples": run.cfg.eval_samples}
    metrics |= {key: run.results[key] for key in run.cfg.settings()}
    if run.cfg.condition == "quadrants":
        metrics["pyro_tutorial_nll"] = PYRO_TUTORIAL_NLL
    return metrics


def evaluation_rows(metrics):
    """The rows ``pyrolvm evaluate`` and the training summary print for a CVAE run."""
    k, rows = metrics["eval_samples"], []
    if "label" in metrics:
        m = metrics["label"]
        value = f"{m['cvae_nll']:.2f} ± {m['cvae_nll_stderr']:.2f} nats"
        rows.append((f"-log p(image | label) (K={k})", f"{value} (test ELBO {m['cvae_elbo']:.2f})"))
    for key in sorted(k2 for k2 in metrics if k2.startswith("q") and k2[1:].isdigit()):
        m, q = metrics[key], int(key[1:])
        published = f"{PYRO_TUTORIAL_NLL['baseline'][q]} / {PYRO_TUTORIAL_NLL['cvae'][q]}"
        rows.append(
            (
                f"{q} quadrant(s): -log p(y | x)",
                f"baseline {m['baseline_nll']:.2f} ± {m['baseline_nll_stderr']:.2f}, "
                f"CVAE (K={k}) {m['cvae_nll']:.2f} ± {m['cvae_nll_stderr']:.2f} nats "
                f"(Pyro tutorial: {published})",
            )
        )
    return rows


def title(metrics, cfg):
    """The summary's title."""
    what = "class-conditional VAE" if cfg.condition == "label" else "CVAE quadrant completion"
    baseline = "" if cfg.condition == "label" else f", {cfg.baseline_epochs} baseline +"
    return (
        f"{what}{baseline} {cfg.epochs} CVAE epochs on {cfg.dataset}: latent_dim="
        f"{cfg.latent_dim}, hidden={cfg.hidden}, prior={cfg.prior}, {cfg.objective_label()}, "
        f"seed={cfg.seed}"
    )


KIND = register(
    RunKind(
        "cvae",
        CVAEConfig,
        "conditional VAE: quadrant completion against a baseline, or class-conditional "
        "(Sohn et al. 2015)",
        build=parts,
        stages=stages,
        score=score,
        report=report,
        figures=lambda run, metrics: [figure_name(k) for k in run.cfg.settings()],
        title=title,
        evaluation_rows=evaluation_rows,
        evaluate_options={
            "eval_samples": "importance samples K of the test log-likelihoods (default: the run's)"
        },
        tiny=dict(quadrants=(1, 3), epochs=1, baseline_epochs=1, hidden=(16,), eval_samples=5),
    )
)
