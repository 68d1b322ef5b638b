"""``pyrolvm train m2``: the semi-supervised VAE M2 (Kingma et al. 2014) in one stage,
:func:`pyrolvm.fitting.fit_m2`, scored by its classifier's test accuracy (and the test
accuracy at the best validation accuracy, with ``--validation N``)."""

import os
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

from .. import plots
from ..fitting import accuracy, fit_m2, split_labels
from ..fitting.ssvae import LABELLED_SCHEDULES, at_best_validation, validation_split
from ..guides.ssvae import SSVAEGuide
from ..models.ssvae import SSVAE
from .config import Count, Networks, PositiveFloat, Range, RunConfig, Switch, Training
from .registry import RunKind, register
from .template import Run, Stage

__all__ = ["M2Config", "at_best_validation", "fit_m2", "split_labels", "validation_split"]


@dataclass
class M2Config(Networks, Training, RunConfig):
    """The flags of ``pyrolvm train m2``; ``None``: the dataset's default (MNIST: Kingma et
    al. 2014, section 4, 500 softplus units, 50 latent dimensions)."""

    DATASET_DEFAULTS: ClassVar[dict] = {
        "digits": dict(latent_dim=8, hidden=(128,), epochs=20, lr=3e-3),
        "mnist": dict(latent_dim=50, hidden=(500,), epochs=10, lr=1e-3),
    }
    GROUPS = {
        "data": ("labels", "validation"),
        "objective": ("aux_loss", "aux_loss_multiplier", "enumerate"),
        "training": ("labelled_schedule",),
    }

    out: str = "runs/m2"
    labels: Count = 100
    """labelled images, balanced (a multiple of 10)"""
    epochs: Count | None = None
    """passes over the unlabelled images"""
    batch_size: Count = 100
    """images per step, labelled and unlabelled"""
    aux_loss: bool = True
    """the classification loss (eq. 9)"""
    aux_loss_multiplier: PositiveFloat | None = None
    """its weight (default 0.1 N, Kingma et al.)"""
    enumerate: Annotated[bool, Switch("sample-labels")] = True
    """the label summed out (--sample-labels: sampled)"""
    labelled_schedule: Literal[LABELLED_SCHEDULES] = "every-step"
    """labelled minibatches (interleaved: Pyro's)"""
    binarize: Literal["dynamic", "none"] = "dynamic"
    """none: grey levels as Bernoulli targets (Pyro's)"""
    validation: Annotated[int, Range(low=0)] = 0
    """the last N training images held out"""


def build(cfg, data_dim, num_classes):
    """The M2 model and guide of a resolved config."""
    grey = cfg.binarize == "none"
    model = SSVAE(data_dim, num_classes, cfg.latent_dim, cfg.hidden, grey_targets=grey)
    guide = SSVAEGuide(data_dim, num_classes, cfg.latent_dim, cfg.hidden, enumerate=cfg.enumerate)
    return model, guide


def parts(run: Run) -> dict:
    """M2's model and guide, once the labelled images and the validation split are checked."""
    cfg, data = run.cfg, run.data
    classes = int(data.train_labels.max()) + 1
    run.extra["split"] = validation_split(data, cfg.validation)
    split_labels(run.extra["split"][1], cfg.labels, classes, cfg.seed)
    model, guide = build(cfg, data.data_dim, classes)
    return {"model": model, "guide": guide}


def fit(run: Run) -> dict:
    """The training stage: :func:`~pyrolvm.fitting.fit_m2` with the run's model and guide."""
    cfg, data = run.cfg, run.data
    train_x, train_labels, valid, valid_labels = run.extra["split"]
    names = "latent_dim hidden epochs batch_size lr aux_loss aux_loss_multiplier enumerate seed"
    options = {name: getattr(cfg, name) for name in names.split()}
    options |= dict(labelled_schedule=cfg.labelled_schedule, transform=data.train_transform)
    options |= dict(model=run.parts["model"], guide=run.parts["guide"])
    options |= dict(valid=valid, valid_labels=valid_labels)
    data_args = (train_x, train_labels, cfg.labels, data.test, data.test_labels)
    return fit_m2(*data_args, **options, **run.hooks)[2]


def score(run: Run) -> dict:
    """The classifier's test accuracy and error."""
    acc = accuracy(run.parts["guide"], run.data.test, run.data.test_labels)
    return {"test_accuracy": acc, "test_error": 1 - acc}


def report(run: Run) -> dict:
    """``metrics.json``: the last epoch's test accuracy, the one at the best validation
    accuracy, the curves."""
    history = run.results["train"]
    acc, seconds = history["test_accuracy"][-1], history["seconds"]
    return {
        "test_accuracy": acc,
        "test_error": 1 - acc,
        **at_best_validation(history),
        "epochs": len(history["train_elbo"]),
        "seconds_per_epoch": sum(seconds) / len(seconds),
        "curves": history,
    }


def figures(run: Run, metrics: dict) -> list[str]:
    """samples_per_class.png: one row per class y, one column per z ~ N(0, I)."""
    path, samples = os.path.join(run.folder or "", "samples_per_class.png"), run.parts["model"]
    title = "p(x | y, z): one row per class y, one column per z ~ N(0, I)"
    plots.image_grid(path, samples.sample_per_class(10), run.data.image_shape, title, ncols=10)
    return ["samples_per_class.png"]


KIND = register(
    RunKind(
        "m2",
        M2Config,
        "the semi-supervised VAE M2 (Kingma et al. 2014)",
        build=parts,
        stages=(Stage("train", fit),),
        score=score,
        report=report,
        figures=figures,
        title=lambda m, cfg: (
            f"M2 on {cfg.dataset} with {cfg.labels} labels: latent_dim={cfg.latent_dim}, "
            f"hidden={cfg.hidden}, aux_loss={cfg.aux_loss}, label "
            f"{'enumerated' if cfg.enumerate else 'sampled'}, binarize={cfg.binarize}, "
            f"{m['epochs']} epochs, seed={cfg.seed}"
        ),
        evaluation_rows=(("test accuracy", "{test_accuracy:.2%}"),),
        summary_rows=(
            ...,
            (
                "at best validation",
                "{test_accuracy_at_best_validation:.2%} (epoch {best_validation_epoch}, "
                "validation {best_validation_accuracy:.2%})",
            ),
            ("seconds per epoch", "{seconds_per_epoch:.1f}"),
        ),
        extendable=True,
        tiny=dict(labels=50, epochs=2, hidden=(16,)),
    )
)
