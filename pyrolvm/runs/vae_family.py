"""What the ``vae`` and ``sbn`` kinds share: their settings, the training stage (with the test
ELBO, and the objective's own bound, per epoch), the test figures and the summary rows."""

from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

import torch

from .. import plots
from ..devices import resolve_device
from ..errors import ConfigError
from ..fitting.scores import exact_discrete, importance_scores
from ..guides import BASELINES
from ..inference import (
    ELBO_NAME,
    SCHEDULES,
    bound_name,
    bound_on_data,
    importance_sample,
    is_elbo,
    trained_bound,
)
from ..inference.batches import rows
from ..nets import ACTIVATIONS
from . import missing
from .common import load_data, on_device
from .config import Evaluation, Networks, PositiveFloat, Range, Training
from .objective import ObjectiveConfig
from .registry import format_rows
from .template import Run, Stage

Beta = Annotated[float, Range(0, 1, high_open=True)]


@dataclass
class AmortizedConfig(Networks, Training, Evaluation, ObjectiveConfig):
    """The settings of the ``vae`` and ``sbn`` kinds. ``None``: the dataset's default (MNIST
    follows Burda et al. 2016, section 5: 784-200-200-50, tanh)."""

    DATASET_DEFAULTS: ClassVar[dict] = {
        "digits": dict(latent_dim=8, hidden=(128, 128), epochs=300, batch_size=100, lr=3e-3),
        "mnist": dict(latent_dim=50, hidden=(200, 200), epochs=10, batch_size=100, lr=2e-3),
    }
    GROUPS = {"objective": ("baseline",), "training": ("betas", "eps", "lr_schedule")}

    activation: Literal[tuple(ACTIVATIONS)] = "tanh"
    """hidden-layer nonlinearity"""
    baseline: Literal[BASELINES] = "none"
    """for tracegraph"""
    betas: tuple[Beta, Beta] = (0.9, 0.999)
    """Adam betas, each in [0, 1)"""
    eps: PositiveFloat = 1e-8
    """Adam eps"""
    lr_schedule: Literal[SCHEDULES] = "constant"
    """Adam's schedule (Burda et al. 2016's 8 stages)"""

    def epochs_fixed_because(self) -> str:
        fixed = self.lr_schedule != "constant"
        return f"--lr-schedule {self.lr_schedule} spreads over --epochs" if fixed else ""

    def check(self):
        self.check_objective()


def load_images(cfg, data, bernoulli: bool):
    """The run's images (``data``, or ``cfg.dataset`` binarized as ``cfg.binarize``), checked,
    on its device; for a Bernoulli likelihood in [0, 1] (in {0, 1} without binarization).

    Raises:
        ConfigError, DataError: as :func:`pyrolvm.data.load`; values a Bernoulli cannot score.
    """
    data = load_data(cfg, cfg.binarize, data, binary=bernoulli and cfg.binarize == "none")
    if bernoulli and not ((data.train >= 0) & (data.train <= 1)).all():
        raise ConfigError(
            "a Bernoulli likelihood with binarization needs pixel intensities in [0, 1]: "
            "rescale the data (e.g. x / 255) or use --likelihood gaussian"
        )
    return on_device(data, resolve_device(cfg.device))


def splits(run: Run):
    """(training data, test data) of the run: the images, with their masks for missing data."""
    masks, data = run.extra.get("masks"), run.data
    if masks is None:
        return data.train, data.test
    return (data.train, masks[0]), (data.test, masks[1])


def check(run: Run) -> None:
    """A step of the objective on copies of the model and guide at two training rows: what
    the objective, the guide or the model refuses (a planar flow under --elbo dreg, a mask the
    decoder cannot score) stops the run before its folder opens."""
    batch = list(rows(splits(run)[0], slice(0, 2)))
    if run.data.binarize == "dynamic":  # (a draw of its own: the data's transform may count)
        batch[0] = torch.bernoulli(batch[0])
    run.trial(run.parts["model"], run.parts["guide"], run.cfg.make_objective(), *batch)


def fit(run: Run) -> dict:
    """The training stage: one SVI fit, with the test ELBO (K = 1) after each epoch and, for
    an objective whose bound is not the ELBO, that bound on the test set."""
    cfg, model, guide = run.cfg, run.parts["model"], run.parts["guide"]
    train, test = splits(run)
    elbo = run.extra["objective"] = cfg.make_objective()

    def end_of_epoch(epoch, history):
        with torch.no_grad(), exact_discrete(model, guide):
            result = importance_sample(model, guide, test, num_samples=1, batch_size=1000)
        out = {"test_elbo_curve": result.elbo.mean().item()}
        if not is_elbo(bound_name(elbo)):  # the training objective's bound on test data
            seed = cfg.seed * 1_000_003 + epoch  # a stream of its own
            out["test_bound_curve"] = bound_on_data(elbo, model, guide, test, cfg.batch_size, seed)
        return out

    adam = dict(lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, lr_schedule=cfg.lr_schedule)
    transform, callback = run.data.train_transform, end_of_epoch
    options = dict(epochs=cfg.epochs, batch_size=cfg.batch_size, transform=transform)
    return run.fit(model, guide, train, elbo, **adam, **options, callback=callback)


STAGES = (Stage("train", fit),)


def importance_figures(run: Run, scoring: dict, discrete: bool) -> dict:
    """:func:`~pyrolvm.fitting.scores.importance_scores` of the run's test set, with
    ``eval_samples`` and ``scoring`` (what they score); the per-datapoint log-likelihoods in
    ``run.extra["test_log_likelihood"]`` (saved by the template)."""
    cfg, model, guide = run.cfg, run.parts["model"], run.parts["guide"]
    options = dict(progress=cfg.progress, discrete=discrete, keep=run.extra)
    out = importance_scores(
        model, guide, splits(run)[1], cfg.eval_samples, cfg.eval_batch_size, cfg.seed, **options
    )
    return out | {"eval_samples": cfg.eval_samples, **scoring}


def report(run: Run) -> dict:
    """``metrics.json`` of a trained run: the kind's test figures, ``train_elbo`` (the
    training objective's own bound, named in ``bound_name``) and the curves (``test_elbo``,
    ``test_bound`` where the bound is not the ELBO)."""
    history = run.results["train"]
    history["test_elbo"] = history.pop("test_elbo_curve", [])
    if "test_bound_curve" in history:
        history["test_bound"] = history.pop("test_bound_curve")
    final, seconds = run.kind.score(run), history["seconds"]
    return {
        "train_elbo": history["train_elbo"][-1] if history["train_elbo"] else None,
        "bound_name": trained_bound(history, run.extra.get("objective")),
        **final,
        "seconds_per_epoch": sum(seconds) / len(seconds) if seconds else None,
        "epochs": len(history["train_elbo"]),
        "curves": history,
    }


def pictures(run: Run) -> list[str]:
    """samples.png, reconstructions.png, elbo_curve.png (:func:`pyrolvm.plots.model_pictures`)."""
    model, guide, data = run.parts["model"], run.parts["guide"], run.data
    return plots.model_pictures(
        run.folder or "", model, guide, data.test, data.image_shape, run.results["train"]
    )


def elbo_label(cfg):
    """The objective, K and its options given on the command line, for the summary's title."""
    k = f" K={cfg.num_particles}" if cfg.num_particles > 1 else ""
    given = {k: v for k, v in cfg.elbo_options().items() if v is not None}
    return f"elbo={cfg.elbo}{k}" + "".join(f" {k}={v}" for k, v in given.items())


#: The rows of the importance-sampled figures (``pyrolvm evaluate``'s, first).
ROWS = (
    ("test ELBO", "{test_elbo:.2f} nats"),
    ("test NLL (K={eval_samples})", "{test_nll:.2f} ± {test_nll_stderr:.2f} nats"),
    ("test ESS (mean)", "{test_ess:.1f} of {eval_samples}"),
    ("test NLL in bits per dim", "{test_bits_per_dim:.4f} ± {test_bits_per_dim_stderr:.4f}"),
    ("data scored", "{scored_on}"),
)


def evaluation_rows(metrics, latent_rows=()):
    """The rows ``pyrolvm evaluate`` prints for a run of these kinds."""
    return format_rows(ROWS, metrics) + list(latent_rows) + format_rows(missing.ROWS, metrics)


def summary_rows(metrics, evaluation):
    """The training summary's rows: the training bound, ``evaluation``, the seconds."""
    train, seconds = metrics["train_elbo"], metrics["seconds_per_epoch"]
    none = "n/a (no epoch ran)"
    return [
        (
            f"train {metrics.get('bound_name') or ELBO_NAME}",
            none if train is None else f"{train:.2f} nats",
        ),
        *evaluation,
        ("seconds per epoch", none if seconds is None else f"{seconds:.2f}"),
    ]
