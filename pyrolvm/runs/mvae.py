"""``pyrolvm train mvae``: a multimodal VAE (Wu & Goodman 2018) over an image and its label,
or the two halves of an image, with a product (or mixture) of experts as its guide, scored by
importance-sampled joint, marginal and conditional test log-likelihoods."""

import inspect
import os
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from .. import plots
from ..devices import resolve_device
from ..errors import ConfigError
from ..fitting.multimodal import MODALITIES, Pairing, mvae_scores, objectives, top_mask
from ..guides import HalvesMVAEGuide, MoEGuide, MVAEGuide
from ..inference import ELBOS, MultiSampleELBO
from ..models import MVAE, HalvesMVAE
from ..nets import ACTIVATIONS
from .config import Count, Evaluation, Networks, PositiveFloat, Training
from .objective import ObjectiveConfig
from .registry import RunKind, register
from .template import Run, Stage

__all__ = ["MVAEConfig", "Pairing", "evaluate"]

#: Samples per class in label_to_image.png.
FIGURE_SAMPLES = 8
#: Test images, and completions per image, in top_to_bottom.png and bottom_to_top.png.
FIGURE_IMAGES, FIGURE_COMPLETIONS = 8, 4
#: The label weight lambda per dataset (--modalities image-label only).
LABEL_WEIGHTS = {"digits": 5.0, "mnist": 50.0}


@dataclass
class MVAEConfig(Networks, Training, Evaluation, ObjectiveConfig):
    """The flags of ``pyrolvm train mvae``; ``None``: the dataset's default."""

    DATASET_DEFAULTS: ClassVar[dict] = {
        "digits": dict(latent_dim=8, hidden=(128, 128), epochs=60, lr=3e-3),
        "mnist": dict(latent_dim=20, hidden=(512, 512), epochs=5, lr=1e-3),
    }
    GROUPS = {"data": ("modalities",), "objective": ("label_weight",)}

    out: str = "runs/mvae"
    modalities: Literal[tuple(MODALITIES)] = "image-label"
    """the two modalities"""
    posterior: Literal["poe", "moe"] = "poe"
    """q(z | both): product (MVAE) or mixture (MMVAE)"""
    activation: Literal[tuple(ACTIVATIONS)] = "relu"
    """hidden-layer nonlinearity"""
    batch_size: Count = 100
    label_weight: PositiveFloat | None = None
    """image-label: the label's weight (default 5; mnist 50)"""
    eval_samples: Count = 100

    def resolve_defaults(self, values):
        if values["modalities"] != "image-label":
            if values["label_weight"] is not None:
                raise ConfigError("--label-weight is for --modalities image-label: drop it")
            return
        if values["label_weight"] is None:
            values["label_weight"] = LABEL_WEIGHTS.get(values["dataset"], LABEL_WEIGHTS["digits"])

    def check(self):
        factory = ELBOS[self.elbo]
        multi = inspect.isclass(factory) and issubclass(factory, MultiSampleELBO)
        if multi and self.modalities == "image-label" and self.label_weight != 1:
            raise ConfigError(
                f"--elbo {self.elbo} weighs one importance weight p(image, label, z) / q(z), "
                f"in which the label cannot carry a weight of its own (--label-weight "
                f"{self.label_weight:g}): add --label-weight 1, or use --elbo trace, meanfield "
                "or tracegraph"
            )
        self.check_objective()


def build(cfg, data_dim, num_classes, image_shape=None):
    """The MVAE model and its guide: the product of experts, or with ``--posterior moe`` the
    mixture of the same experts (for ``--modalities halves``, with the halves of
    ``image_shape``)."""
    device = resolve_device(cfg.device)
    if cfg.modalities == "halves":
        top = int(top_mask(image_shape, "cpu").sum())
        model = HalvesMVAE(top, data_dim - top, cfg.latent_dim, cfg.hidden, cfg.activation)
        guide = HalvesMVAEGuide(top, data_dim - top, cfg.latent_dim, cfg.hidden, cfg.activation)
    else:
        model = MVAE(
            data_dim, num_classes, cfg.latent_dim, cfg.hidden, cfg.activation, cfg.label_weight
        )
        guide = MVAEGuide(data_dim, num_classes, cfg.latent_dim, cfg.hidden, cfg.activation)
    if cfg.posterior == "moe":
        guide = MoEGuide(guide)
    return model.to(device), guide.to(device)


def evaluate(model, guide, data, cfg):
    """:func:`~pyrolvm.fitting.multimodal.mvae_scores` with ``cfg.eval_samples`` samples,
    seeded by ``cfg.seed``."""
    options = (cfg.eval_samples, cfg.eval_batch_size, cfg.seed)
    return mvae_scores(model, guide, data, cfg.modalities, *options)


def figures(run: Run, metrics: dict) -> list[str]:
    """label_to_image.png (``FIGURE_SAMPLES`` images per class: means of p(image | z),
    z ~ q(z | label)), or the completions of the first test images' halves
    (:func:`pyrolvm.plots.halves_completions`); drawn after the metrics."""
    model, guide, pairing = run.parts["model"], run.parts["guide"], run.extra["pairing"]
    folder, shape = run.folder or "", run.data.image_shape
    if pairing.mask is not None:
        images = run.data.test[:FIGURE_IMAGES]
        return plots.halves_completions(
            folder, model, guide, images, pairing.mask, shape, FIGURE_COMPLETIONS
        )
    labels = torch.arange(run.extra["classes"], device=run.device)
    with torch.no_grad():
        loc, scale = guide.encode(None, labels.repeat_interleave(FIGURE_SAMPLES))
        images = model.decode_image(loc + scale * torch.randn_like(loc))
    title, path = "label -> image: z ~ q(z | label), one row per class", folder
    plots.image_grid(
        os.path.join(path, "label_to_image.png"), images, shape, title, ncols=FIGURE_SAMPLES
    )
    return ["label_to_image.png"]


def parts(run: Run) -> dict:
    """The MVAE's model and guide (:func:`build`) and how the data feeds them
    (:class:`Pairing`: a clear error now for images without rows)."""
    cfg, data = run.cfg, run.data
    run.extra["pairing"] = Pairing(cfg.modalities, data)
    classes = int(data.train_labels.max()) + 1 if cfg.modalities == "image-label" else 0
    run.extra["classes"] = classes
    model, guide = build(cfg, data.data_dim, classes, data.image_shape)
    return {"model": model, "guide": guide}


def fit(run: Run) -> dict:
    """One SVI fit whose every step takes the steps of :func:`objectives` with one Adam."""
    cfg, pairing = run.cfg, run.extra["pairing"]
    model, guide = run.parts["model"], run.parts["guide"]
    steps = objectives(model, guide, pairing, cfg.posterior, cfg.make_objective)
    (model, guide, loss), extra = steps[0], steps[1:]
    options = dict(lr=cfg.lr, epochs=cfg.epochs, batch_size=cfg.batch_size)
    options |= dict(transform=run.data.train_transform, extra_objectives=extra)
    return run.fit(model, guide, pairing.data("train"), loss, **options)


def score(run: Run) -> dict:
    """The test figures of :func:`evaluate`."""
    return evaluate(run.parts["model"], run.parts["guide"], run.data, run.cfg)


def report(run: Run) -> dict:
    """``metrics.json``: the test figures, ``train_elbo`` per epoch (the joint bound for the
    product of experts, the first stratum's for the mixture; for image-label the label
    weighted by ``label_weight``) and the bound it is."""
    history = run.results["train"]
    return {
        **score(run),
        "train_elbo": history["train_elbo"],
        "bound_name": (history.get("bound_name") or [None])[-1],  # train_elbo's bound
        "epochs": len(history["train_elbo"]),
        "seconds_per_epoch": sum(history["seconds"]) / max(1, len(history["seconds"])),
    }


def evaluation_rows(metrics):
    """The rows ``pyrolvm evaluate`` prints for an MVAE run."""
    k = metrics["eval_samples"]
    a, b = ("image", "label") if "image_nll" in metrics else ("top", "bottom")

    def nll(key):
        return f"{metrics[key]:.2f} ± {metrics[key + '_stderr']:.2f} nats"

    rows = [("image -> label accuracy", f"{metrics['accuracy']:.2%}")] if a == "image" else []
    rows += [(f"-log p({a}, {b}) (K={k})", nll("joint_nll"))]
    rows += [(f"-log p({x})", nll(f"{x}_nll")) for x in (a, b)]
    rows += [(f"-log p({y} | {x})", nll(f"{y}_given_{x}_nll")) for x, y in ((a, b), (b, a))]
    snis = [(x, y) for x, y in ((a, b), (b, a)) if f"{y}_given_{x}_snis_nll" in metrics]
    return rows + [
        (f"-log p({y} | {x}), self-normalized", nll(f"{y}_given_{x}_snis_nll")) for x, y in snis
    ]


def title(metrics, cfg):
    """The summary's title."""
    what = "image + label" if cfg.modalities == "image-label" else "top + bottom half"
    posterior = "product of experts" if cfg.posterior == "poe" else "mixture of experts, MMVAE"
    return (
        f"MVAE ({what}, {posterior}) on {cfg.dataset}: latent_dim={cfg.latent_dim}, hidden="
        f"{cfg.hidden}, {cfg.objective_label()}, {metrics['epochs']} epochs, seed={cfg.seed}"
    )


KIND = register(
    RunKind(
        "mvae",
        MVAEConfig,
        "a multimodal VAE over images and labels, or image halves (Wu & Goodman 2018)",
        build=parts,
        stages=(Stage("train", fit),),
        score=score,
        report=report,
        figures=figures,
        title=title,
        summary_rows=(..., ("seconds per epoch", "{seconds_per_epoch:.1f}")),
        evaluation_rows=evaluation_rows,
        evaluate_options={
            "eval_samples": "importance samples K of the test log-likelihoods (default: the run's)"
        },
        extendable=True,
        tiny=dict(modalities="halves", epochs=2, hidden=(16,), eval_samples=5),
    )
)
