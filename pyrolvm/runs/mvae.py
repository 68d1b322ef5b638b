"""One MVAE run (Wu & Goodman 2018): two modalities of one latent with a product-of-experts
guide, trained on the joint and on each modality alone (the MVAE's sub-sampled ELBOs: every
subset, for two modalities); the modalities are an image and its label
(``--modalities image-label``: image -> label accuracy, label -> image samples) or the top and
the bottom half of an image (``--modalities halves``: each half completed from the other);
evaluated by importance-sampled joint, marginal and conditional test log-likelihoods. It
trains with any objective of ``pyrolvm.inference.ELBOS`` that applies (``--elbo``) and
resumes (``--resume``) to the numbers of the uninterrupted run.

``train_mvae(...)`` is ``pyrolvm train mvae`` in one Python call; ``evaluate_mvae(folder)``
is ``pyrolvm evaluate FOLDER``.
"""

import dataclasses
import inspect
import os
from dataclasses import dataclass
from typing import ClassVar, Literal

import pyro
import torch

from .. import plots
from ..devices import resolve_device
from ..errors import ConfigError, Interrupted, TrainingDiverged
from ..guides import HalvesMVAEGuide, MoEGuide, MVAEGuide
from ..inference import (
    ELBOS,
    MultiSampleELBO,
    importance_sample,
    make_optim,
    mean_and_stderr,
    train,
)
from ..models import MVAE, HalvesMVAE
from ..nets import ACTIVATIONS
from .common import (
    CHECKPOINT,
    extended,
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
from .config import Count, PositiveFloat, Sizes
from .objective import ObjectiveConfig
from .registry import RunKind, register

__all__ = ["MVAEConfig", "evaluate_mvae", "train_mvae"]

#: Samples per class in label_to_image.png.
FIGURE_SAMPLES = 8
#: Test images, and completions per image, in top_to_bottom.png and bottom_to_top.png.
FIGURE_IMAGES, FIGURE_COMPLETIONS = 8, 4
#: The label weight lambda per dataset (--modalities image-label only).
LABEL_WEIGHTS = {"digits": 5.0, "mnist": 50.0}
#: The two modalities' names, by --modalities.
MODALITIES = {"image-label": ("image", "label"), "halves": ("top", "bottom")}


@dataclass
class MVAEConfig(ObjectiveConfig):
    """Train the multimodal VAE (Wu & Goodman 2018) with a product-of-experts guide, on
    binarized images and their labels or on the two halves of binarized images. The flags of
    ``pyrolvm train mvae``; ``None`` means the dataset's default."""

    DATASET_DEFAULTS: ClassVar[dict] = {
        "digits": dict(latent_dim=8, hidden=(128, 128), epochs=60, lr=3e-3),
        "mnist": dict(latent_dim=20, hidden=(512, 512), epochs=5, lr=1e-3),
    }

    out: str = "runs/mvae"
    """the run folder"""
    modalities: Literal[tuple(MODALITIES)] = "image-label"
    """the two modalities: an image and its label, or the top and the bottom half of an
    image"""
    posterior: Literal["poe", "moe"] = "poe"
    """q(z | both modalities): poe, the product of the experts and the prior expert, trained
    on every subset (MVAE, Wu & Goodman 2018); moe, their mixture, trained on the joint by
    stratified sampling (MMVAE, Shi et al. 2019)"""
    latent_dim: Count | None = None
    """latent dimensions (default: 8 digits, 20 mnist)"""
    hidden: Sizes | None = None
    """hidden sizes of the image experts and decoders (default: 128,128 digits, 512,512
    mnist)"""
    activation: Literal[tuple(ACTIVATIONS)] = "relu"
    """hidden-layer nonlinearity"""
    epochs: Count | None = None
    """passes over the training data (default: 60 digits, 5 mnist)"""
    batch_size: Count = 100
    """datapoints per step"""
    lr: PositiveFloat | None = None
    """Adam learning rate (default: 3e-3 digits, 1e-3 mnist)"""
    label_weight: PositiveFloat | None = None
    """--modalities image-label: lambda, the weight of the label's log-likelihood in training
    (Wu & Goodman 2018, section 4: 50 on MNIST; default: 50 mnist, 5 digits); evaluation uses
    1"""
    eval_samples: Count = 100
    """importance samples K of each test log-likelihood"""
    eval_batch_size: Count = 100
    """test datapoints per evaluation call"""

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


def objectives(cfg, model, guide, pairing):
    """The (model, guide, objective) triples of one training step: for the product of
    experts the joint and each modality alone (Wu & Goodman 2018, section 2.2: for two
    modalities the sub-sampled set is every subset); for the mixture the joint, one stratum
    per expert (Shi et al. 2019, section 3)."""
    if cfg.posterior == "moe":
        return [
            (pairing.joint(model), pairing.joint(guide.stratum(m)), cfg.make_objective())
            for m in (0, 1)
        ]
    return [
        (pairing.joint(model), pairing.joint(guide), cfg.make_objective()),
        (pairing.first(model), pairing.first(guide), cfg.make_objective()),
        (pairing.second(model), pairing.second(guide), cfg.make_objective()),
    ]


def top_mask(image_shape, device=None):
    """Bool mask of shape (D,) on ``device``: True on the image's top half (its first
    ``H // 2`` rows).

    Raises:
        ConfigError: no image shape of at least two rows (an .npz of flat vectors).
    """
    if image_shape is None or len(image_shape) < 2 or image_shape[0] < 2:
        raise ConfigError(
            f"--modalities halves splits images into a top and a bottom half; these data have "
            f"no image shape of two rows or more ({image_shape}): use --modalities image-label"
        )
    mask = torch.zeros(tuple(image_shape), dtype=torch.bool, device=device)
    mask[: image_shape[0] // 2] = True
    return mask.flatten()


def image_only(fn):
    """``fn`` called with the image alone: ``fn(image, None)``."""
    return lambda image, label=None: fn(image, None)


def label_only(fn):
    """``fn`` called with the label alone: ``fn(None, label)``."""
    return lambda image, label: fn(None, label)


class Pairing:
    """How the data rows feed ``fn(first, second)`` for each subset of the two modalities:
    ``joint(fn)``, ``first(fn)``, ``second(fn)`` are functions of the rows of ``data(split)``.
    For image-label the rows are (images, labels); for halves, whole images (so that the
    training loop's per-minibatch binarization draws both halves together), split by
    ``mask`` (True on the top half)."""

    def __init__(self, cfg, data):
        self.modalities, self.names = cfg.modalities, MODALITIES[cfg.modalities]
        self.mask = (
            top_mask(data.image_shape, data.train.device) if cfg.modalities == "halves" else None
        )
        self.dataset = data

    def data(self, split):
        """The ``split`` (``"train"`` or ``"test"``) tensors."""
        images = getattr(self.dataset, split)
        return (
            images if self.mask is not None else (images, getattr(self.dataset, f"{split}_labels"))
        )

    def joint(self, fn):
        if self.mask is None:
            return fn
        top, bottom = mask_columns(self.mask)  # (found once: no sync per call)
        return lambda images: fn(images[:, top], images[:, bottom])

    def first(self, fn):
        if self.mask is None:
            return image_only(fn)
        top, _ = mask_columns(self.mask)
        return lambda images: fn(images[:, top], None)

    def second(self, fn):
        if self.mask is None:
            return label_only(fn)
        _, bottom = mask_columns(self.mask)
        return lambda images: fn(None, images[:, bottom])


def evaluate(model, guide, data, cfg):
    """Test figures of an MVAE, seeded by ``cfg.seed``, nats per test datapoint with
    ``*_stderr``, for modalities a, b (image and label, or top and bottom): importance-sampled
    (K = ``cfg.eval_samples``) ``joint_nll`` -log p(a, b), ``{a}_nll`` -log p(a), ``{b}_nll``
    -log p(b), and the conditionals ``{b}_given_{a}_nll`` -log p(b | a), each the
    self-normalized estimate ``log sum_k w_k - log sum_k w_k p(b | z_k)`` with
    z_k ~ q(z | a) and w_k = p(a, z_k) / q(z_k | a) (the joint and the marginal
    importance-sampled with the *same* draws; consistent as K grows, not a bound).

    For image and label also ``accuracy`` (image -> label: argmax of p(label | z) at the mean
    of q(z | image)), and -log p(image | label) is ``joint_nll - label_nll``: q(z | label) is
    far too broad a proposal for the image's likelihood, while log p(label) is estimated well
    by it. For the halves likewise ``bottom_given_top_nll`` is ``joint_nll - top_nll`` and
    ``top_given_bottom_nll`` is ``joint_nll - bottom_nll``; the self-normalized estimates over
    q(z | top) and q(z | bottom) are ``bottom_given_top_snis_nll`` and
    ``top_given_bottom_snis_nll`` (far looser at small K: a half's likelihood is too sharp for
    the other half's posterior as a proposal)."""
    pairing = Pairing(cfg, data)
    if cfg.modalities == "halves":
        return _evaluate(model, guide, pairing, cfg)
    weight, model.label_weight = model.label_weight, 1.0
    try:
        out = _evaluate(model, guide, pairing, cfg)
        with torch.no_grad():
            loc = guide.encode(data.test, None)[0]
            accuracy = (model.label_logits(loc).argmax(-1) == data.test_labels).double().mean()
        return {"accuracy": accuracy.item()} | out
    finally:
        model.label_weight = weight


def _evaluate(model, guide, pairing, cfg):
    a, b = pairing.names
    test = pairing.data("test")
    options = dict(num_samples=cfg.eval_samples, batch_size=cfg.eval_batch_size)
    pyro.set_rng_seed(cfg.seed)
    joint = importance_sample(pairing.joint(model), pairing.joint(guide), test, **options)
    joint = joint.log_likelihood
    # the same seed, so the same draws z_k ~ q(z | a) in both calls
    pyro.set_rng_seed(cfg.seed + 1)
    first = importance_sample(pairing.first(model), pairing.first(guide), test, **options)
    pyro.set_rng_seed(cfg.seed + 1)
    both = importance_sample(pairing.joint(model), pairing.first(guide), test, **options)
    pyro.set_rng_seed(cfg.seed + 2)
    second = importance_sample(pairing.second(model), pairing.second(guide), test, **options)
    values = {
        "joint_nll": -joint,
        f"{a}_nll": -first.log_likelihood,
        f"{b}_nll": -second.log_likelihood,
        f"{b}_given_{a}_nll": first.log_likelihood - both.log_likelihood,
    }
    if pairing.mask is None:
        values[f"{a}_given_{b}_nll"] = second.log_likelihood - joint
    else:
        # an image half's likelihood is far too sharp for the other half's posterior as its
        # proposal: the self-normalized estimates are kept (``*_snis_nll``), the differences
        # of the joint and the marginal reported
        values[f"{b}_given_{a}_snis_nll"] = values.pop(f"{b}_given_{a}_nll")
        pyro.set_rng_seed(cfg.seed + 2)
        both = importance_sample(pairing.joint(model), pairing.second(guide), test, **options)
        values[f"{a}_given_{b}_snis_nll"] = second.log_likelihood - both.log_likelihood
        values[f"{b}_given_{a}_nll"] = first.log_likelihood - joint
        values[f"{a}_given_{b}_nll"] = second.log_likelihood - joint
    out = {"eval_samples": cfg.eval_samples}
    for name, value in values.items():
        out[name], out[name + "_stderr"] = mean_and_stderr(value)
    return out


def label_to_image_figure(path, model, guide, num_classes, image_shape):
    """Save FIGURE_SAMPLES images per class: means of p(image | z), z ~ q(z | label)."""
    ref = next(guide.parameters())
    labels = torch.arange(num_classes, device=ref.device).repeat_interleave(FIGURE_SAMPLES)
    with torch.no_grad():
        loc, scale = guide.encode(None, labels)
        images = model.decode_image(loc + scale * torch.randn_like(loc))
    plots.image_grid(
        path,
        images,
        image_shape,
        "label -> image: z ~ q(z | label), one row per class",
        ncols=FIGURE_SAMPLES,
    )


def halves_figure(path, model, guide, pairing, given):
    """Save completions of the first test images from their ``given`` half (``"top"`` or
    ``"bottom"``): rows of the given half (the other grey), FIGURE_COMPLETIONS completions
    (the other half's mean of p(half | z), z ~ q(z | given half)), and the truth."""
    images = pairing.dataset.test[:FIGURE_IMAGES]
    mask = pairing.mask if given == "top" else ~pairing.mask
    args = (images[:, pairing.mask], None) if given == "top" else (None, images[:, ~pairing.mask])
    with torch.no_grad():
        loc, scale = guide.encode(*args)
        z = loc + scale * torch.randn(
            (FIGURE_COMPLETIONS,) + loc.shape, dtype=loc.dtype, device=loc.device
        )
        top, bottom = model.decode(z)
    other = bottom if given == "top" else top

    def compose(fill):
        out = images.clone()
        out[:, ~mask] = fill
        return out

    rows = [compose(torch.full_like(images[:, ~mask], 0.5))]
    rows += [compose(o) for o in other]
    rows.append(images)
    missing = "bottom" if given == "top" else "top"
    plots.image_grid(
        path,
        torch.cat(rows),
        pairing.dataset.image_shape,
        f"{given} -> {missing}: the {given} half / {FIGURE_COMPLETIONS} completions, "
        f"z ~ q(z | {given}) / truth",
        ncols=FIGURE_IMAGES,
    )


def figures(folder, model, guide, pairing, num_classes):
    """Write the run's figures into ``folder``; returns their file names."""
    if pairing.mask is None:
        label_to_image_figure(
            os.path.join(folder, "label_to_image.png"),
            model,
            guide,
            num_classes,
            pairing.dataset.image_shape,
        )
        return ["label_to_image.png"]
    names = []
    for given in ("top", "bottom"):
        name = f"{given}_to_{'bottom' if given == 'top' else 'top'}.png"
        halves_figure(os.path.join(folder, name), model, guide, pairing, given)
        names.append(name)
    return names


def train_mvae(config=None, data=None, **overrides):
    """Train and evaluate an MVAE and write the run folder; ``pyrolvm train mvae`` in one call.

    Each step takes the SVI steps of ``pyrolvm.runs.mvae.objectives`` with one Adam
    optimizer: for the product of experts on both modalities, on the first alone and on the
    second alone (Wu & Goodman 2018, section 2.2: for two modalities the sub-sampled set is
    every subset); for the mixture one per stratum of the joint (Shi et al. 2019).

    Writes into ``config.out``: ``config.json``; ``metrics.json`` (the figures of
    ``pyrolvm.runs.mvae.evaluate``, ``train_elbo`` per epoch: the joint bound for the product
    of experts, the first stratum's for the mixture (for image-label the label weighted by
    ``label_weight``), ``epochs``); ``checkpoint.pt``
    (rewritten after every epoch, and on interruption); ``label_to_image.png``, or
    ``top_to_bottom.png`` and ``bottom_to_top.png``. With ``resume`` an interrupted run
    continues from its checkpoint and ends as the uninterrupted run would.

    Raises:
        ConfigError, DataError: bad settings or data, or an occupied run folder.
        TrainingDiverged, Interrupted: as :func:`pyrolvm.inference.train`.
    """
    cfg = dataclasses.replace(config or MVAEConfig(), **overrides).resolved()
    data = on_device(load_data(cfg, "dynamic", data), resolve_device(cfg.device))
    pairing = Pairing(cfg, data)  # a clear error now for images without rows
    num_classes = int(data.train_labels.max()) + 1 if cfg.modalities == "image-label" else 0
    config_dict = dataclasses.asdict(cfg) | {"data_dim": data.data_dim}
    with run_folder(
        cfg.out, "mvae", config_dict, cfg.resume, cfg.overwrite, extendable=("epochs",)
    ) as (folder, saved):
        if extended(saved, config_dict):  # a new run, or one given more --epochs
            write_json(os.path.join(folder, "config.json"), config_dict)
        pyro.clear_param_store()
        pyro.set_rng_seed(cfg.seed)
        model, guide = build(cfg, data.data_dim, num_classes, data.image_shape)

        def save(state):
            save_checkpoint(
                os.path.join(folder, CHECKPOINT),
                {
                    "kind": "mvae",
                    "config": config_dict,
                    "epoch": len(state["history"]["train_elbo"]),
                    "train": state,
                    "model": model.state_dict(),
                    "guide": guide.state_dict(),
                },
            )

        (main_model, main_guide, main_loss), *extra = objectives(cfg, model, guide, pairing)
        try:
            history = train(
                main_model,
                main_guide,
                pairing.data("train"),
                main_loss,
                make_optim(cfg.lr),
                epochs=cfg.epochs,
                batch_size=cfg.batch_size,
                transform=data.train_transform,
                progress=cfg.progress,
                extra_objectives=extra,
                checkpoint=save,
                resume_from=saved and saved["train"],
            )
        except (TrainingDiverged, Interrupted) as exc:
            raise record_stop(folder, exc) from None
        metrics = {"status": "ok", "complete": True, **evaluate(model, guide, data, cfg)}
        metrics["train_elbo"] = history["train_elbo"]
        metrics["bound_name"] = (history.get("bound_name") or [None])[-1]  # train_elbo's bound
        metrics["epochs"] = len(history["train_elbo"])
        metrics["seconds_per_epoch"] = sum(history["seconds"]) / max(1, len(history["seconds"]))
        # after the metrics are computed: the figures' draws touch no reported number
        metrics["figures"] = figures(folder, model, guide, pairing, num_classes)
        write_json(os.path.join(folder, "metrics.json"), metrics)
    return metrics


def evaluate_mvae(folder, eval_samples=None, data_root=None, progress=True, device="auto"):
    """Reload an MVAE run folder and recompute its test figures (``pyrolvm.runs.mvae.evaluate``).

    Raises:
        ConfigError: no valid checkpoint in ``folder``, or one of another kind of run.
    """
    overrides = {} if eval_samples is None else {"eval_samples": eval_samples}
    overrides["device"] = device
    state, cfg, data_dim = reload_run(folder, "mvae", MVAEConfig, data_root, progress, **overrides)
    data = on_device(load_data(cfg, "dynamic"), resolve_device(cfg.device))
    pyro.clear_param_store()
    num_classes = int(data.train_labels.max()) + 1 if cfg.modalities == "image-label" else 0
    model, guide = build(cfg, data_dim, num_classes, data.image_shape)
    model.load_state_dict(state["model"])
    guide.load_state_dict(state["guide"])
    return evaluate(model, guide, data, cfg)


def evaluation_rows(metrics):
    """The rows ``pyrolvm evaluate`` prints for an MVAE run."""
    k = metrics["eval_samples"]
    a, b = ("image", "label") if "image_nll" in metrics else ("top", "bottom")

    def nll(key):
        return f"{metrics[key]:.2f} ± {metrics[key + '_stderr']:.2f} nats"

    rows = (
        [("image -> label accuracy", f"{100 * metrics['accuracy']:.2f} %")] if a == "image" else []
    )
    return (
        rows
        + [
            (f"-log p({a}, {b}) (K={k})", nll("joint_nll")),
            (f"-log p({a})", nll(f"{a}_nll")),
            (f"-log p({b})", nll(f"{b}_nll")),
            (f"-log p({b} | {a})", nll(f"{b}_given_{a}_nll")),
            (f"-log p({a} | {b})", nll(f"{a}_given_{b}_nll")),
        ]
        + [
            (f"-log p({y} | {x}), self-normalized", nll(f"{y}_given_{x}_snis_nll"))
            for x, y in ((a, b), (b, a))
            if f"{y}_given_{x}_snis_nll" in metrics
        ]
    )


def summary(metrics, cfg, folder):
    """The summary table printed at the end of ``pyrolvm train mvae``."""
    cfg = cfg.resolved()
    what = "image + label" if cfg.modalities == "image-label" else "top + bottom half"
    posterior = "product of experts" if cfg.posterior == "poe" else "mixture of experts, MMVAE"
    title = (
        f"MVAE ({what}, {posterior}) on {cfg.dataset}: latent_dim="
        f"{cfg.latent_dim}, hidden={cfg.hidden}, {cfg.objective_label()}, "
        f"{len(metrics['train_elbo'])} epochs, seed={cfg.seed}"
    )
    files = ", ".join(metrics["figures"])
    rows = evaluation_rows(metrics) + [
        ("seconds per epoch", f"{metrics['seconds_per_epoch']:.1f}"),
        ("run folder", f"{folder}  (config.json, metrics.json, {CHECKPOINT}, {files})"),
    ]
    return format_summary(title, rows)


KIND = register(
    RunKind(
        "mvae",
        MVAEConfig,
        train_mvae,
        evaluate_mvae,
        summary,
        evaluation_rows,
        description="a multimodal VAE over images and labels, or image halves (Wu & Goodman 2018)",
        evaluate_options=("eval_samples",),
    )
)
