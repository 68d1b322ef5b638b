"""``pyrolvm train sbn`` (and ``pyrolvm train vae --latent ...``): a sigmoid belief network
(Neal 1992; Mnih & Gregor 2014) with binary or one-hot latents, trained with score-function
gradients or a Concrete relaxation, scored by importance sampling of the discrete model."""

from dataclasses import dataclass
from typing import Annotated, Literal

from ..data import BINARIZATIONS
from ..guides import RELAXATIONS, AmortizedBernoulli, AmortizedCategorical
from ..models import LATENTS, SigmoidBeliefNet, scored_on
from . import vae_family as family
from .config import PositiveFloat, Range
from .registry import RunKind, register
from .template import Run


@dataclass
class SBNConfig(family.AmortizedConfig):
    """The flags of ``pyrolvm train sbn``; ``None``: the dataset's default."""

    out: str = "runs/sbn"
    binarize: Literal[BINARIZATIONS] = "dynamic"
    """binary pixels (none: the data's, 0 or 1)"""
    latent: Literal[LATENTS] = "bernoulli"
    """the --latent-dim latent variables"""
    num_categories: Annotated[int, Range(2)] = 10
    """--latent categorical: classes per variable"""
    relaxation: Literal[RELAXATIONS] = "none"
    """Concrete relaxation (none: score function)"""
    temperature: PositiveFloat = 0.5
    """the relaxation's temperature"""


def parts(run: Run) -> dict:
    """:class:`~pyrolvm.models.SigmoidBeliefNet` (with the relaxed prior under Concrete) and
    :class:`~pyrolvm.guides.AmortizedBernoulli` / :class:`~pyrolvm.guides.AmortizedCategorical`."""
    cfg, d = run.cfg, run.data.data_dim
    relaxed_prior = cfg.temperature if cfg.relaxation == "concrete" else None
    model = SigmoidBeliefNet(
        d,
        cfg.latent_dim,
        cfg.latent,
        cfg.num_categories,
        cfg.hidden,
        cfg.activation,
        run.data.train.mean(0),
        temperature=relaxed_prior,
    )
    options = dict(
        hidden=cfg.hidden,
        activation=cfg.activation,
        relaxation=cfg.relaxation,
        temperature=cfg.temperature,
        baseline=cfg.baseline,
    )
    if cfg.latent == "bernoulli":
        return {"model": model, "guide": AmortizedBernoulli(d, cfg.latent_dim, **options)}
    guide = AmortizedCategorical(d, cfg.latent_dim, cfg.num_categories, **options)
    return {"model": model, "guide": guide}


def score(run: Run) -> dict:
    """The importance-sampled test figures of the discrete model (a relaxed one evaluated
    without its relaxation), with bits per dimension."""
    return family.importance_figures(
        run, {"scored_on": scored_on("bernoulli", run.cfg.binarize, 256)}, discrete=True
    )


def title(metrics, cfg):
    """The summary's title."""
    parts = [f"latent={cfg.latent}"]
    if cfg.latent == "categorical":
        parts.append(f"num_categories={cfg.num_categories}")
    if cfg.relaxation != "none":
        parts.append(f"relaxation={cfg.relaxation} (temperature {cfg.temperature})")
    if cfg.baseline != "none":
        parts.append(f"baseline={cfg.baseline}")
    return (
        f"sigmoid belief net on {cfg.dataset}: binarize={cfg.binarize}, latent_dim="
        f"{cfg.latent_dim}, {', '.join(parts)}, {family.elbo_label(cfg)}, "
        f"{metrics['epochs']} epochs, seed={cfg.seed}"
    )


KIND = register(
    RunKind(
        "sbn",
        SBNConfig,
        "a sigmoid belief net: binary or categorical latents, score-function or relaxed",
        build=parts,
        stages=family.STAGES,
        score=score,
        report=family.report,
        figures=lambda run, metrics: family.pictures(run),
        title=title,
        summary_rows=lambda m, cfg: family.summary_rows(m, family.evaluation_rows(m)),
        evaluation_rows=family.evaluation_rows,
        data=lambda cfg, data=None: family.load_images(cfg, data, bernoulli=True),
        check=family.check,
        evaluate_options={
            "eval_samples": "importance samples K of the test log-likelihood (default: the run's)"
        },
        extendable=True,
        takes_over=(("vae", "latent", LATENTS),),
        tiny=dict(epochs=2, hidden=(16,), eval_samples=5),
    )
)
