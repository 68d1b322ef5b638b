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

import os
from dataclasses import dataclass
from typing import ClassVar, Literal

import pyro
import torch
import torch.nn.functional as F

from .. import plots
from ..data import quadrant_mask
from ..errors import ConfigError
from ..fitting.conditional import fit_baseline, fit_conditional, on_images, on_labels
from ..guides import CVAEGuide
from ..inference import importance_sample, mean_and_stderr
from ..models import CVAE, BaselineNet, no_latents
from ..models.cvae import CVAE_PRIORS
from ..nets import ACTIVATIONS
from .config import Count, PositiveFloat, Sizes, flag
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


def figure_name(key):
    """The file name of setting ``key``'s figure."""
    return "samples_per_class.png" if key == "label" else f"completions_{key}.png"


def parts(run: Run) -> dict:
    """No part before the stages: each setting's networks are built by its first stage (after
    the earlier settings' evaluation, whose draws come first). A label-conditional run's
    data must have labels."""
    if run.cfg.condition == "label":
        num_classes(run.data)  # a clear error before the folder is touched
    return {}


def setting_of(run: Run, key: str) -> Setting:
    """The :class:`Setting` ``key`` of the run, built once, its networks registered as parts
    ``KEY.model``, ``KEY.guide`` and ``KEY.baseline`` (with the checkpoint's state)."""
    if key not in run.extra:
        built = build_setting(run.cfg, key, run.data)
        for name in ("model", "guide", "baseline"):
            if getattr(built, name) is not None:
                run.add(f"{key}.{name}", getattr(built, name))
        run.extra[key] = built
    return run.extra[key]


def options(run: Run) -> dict:
    """The training options of both phases."""
    cfg = run.cfg
    return dict(lr=cfg.lr, batch_size=cfg.batch_size, transform=run.data.train_transform)


def baseline_stage(key: str) -> Stage:
    """Phase 1 of setting ``key``: its baseline (:func:`~pyrolvm.fitting.fit_baseline`)."""

    def fit(run):
        s = setting_of(run, key)
        data, epochs = s.data(run.data, "train"), run.cfg.baseline_epochs
        return fit_baseline(s.baseline, data, s.wrap, epochs=epochs, **options(run), **run.hooks)

    return Stage(f"{key}.baseline", fit)


def cvae_stage(key: str) -> Stage:
    """Phase 2 of setting ``key``: its CVAE (:func:`~pyrolvm.fitting.fit_conditional`), then its
    test figures (:func:`evaluate`) and its figure."""

    def fit(run):
        cfg, s = run.cfg, setting_of(run, key)
        history = fit_conditional(
            s.model,
            s.guide,
            s.data(run.data, "train"),
            cfg.make_objective(),
            s.wrap,
            epochs=cfg.epochs,
            **options(run),
            **run.hooks,
        )
        result = evaluate(s, run.data, cfg)
        result["train_elbo"] = history["train_elbo"]
        result["bound_name"] = (history.get("bound_name") or [None])[-1]  # train_elbo's bound
        result["seconds"] = sum(history["seconds"])
        base = run.results.get(f"{key}.baseline")
        if base is not None:
            result["baseline_train_ll"] = base["train_elbo"]
            result["seconds"] += sum(base["seconds"])
        figure(run.folder, s, run.data, cfg)
        return result

    return Stage(key, fit)


def stages(cfg) -> list[Stage]:
    """Per setting (``q1``, ``q2``, ``q3`` or ``label``) its baseline (quadrant completion
    only) and its CVAE."""
    out = []
    for key in cfg.settings():
        out += [baseline_stage(key)] if key != "label" else []
        out.append(cvae_stage(key))
    return out


def score(run: Run) -> dict:
    """Per setting the :func:`evaluate` figures; ``eval_samples``."""
    out = {"eval_samples": run.cfg.eval_samples}
    for key in run.cfg.settings():
        out[key] = evaluate(setting_of(run, key), run.data, run.cfg)
    return out


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


def title(metrics, cfg):
    """The summary's title."""
    what = (
        "class-conditional VAE"
        if cfg.condition == "label"
        else f"CVAE quadrant completion, {cfg.baseline_epochs} baseline +"
    )
    return (
        f"{what} {cfg.epochs} CVAE epochs on {cfg.dataset}: latent_dim={cfg.latent_dim}, "
        f"hidden={cfg.hidden}, prior={cfg.prior}, {cfg.objective_label()}, seed={cfg.seed}"
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
