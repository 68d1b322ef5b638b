"""One MVAE run (Wu & Goodman 2018): images and labels as two modalities of one latent, a
product-of-experts guide, trained on the joint and on each modality alone (the MVAE's
sub-sampled ELBOs, all subsets for two modalities); evaluated by image -> label accuracy,
label -> image samples and importance-sampled joint, marginal and conditional test
log-likelihoods.

``train_mvae(...)`` is ``pyrolvm train mvae`` in one Python call; ``evaluate_mvae(folder)``
is ``pyrolvm evaluate FOLDER``.
"""

import dataclasses
import os
from dataclasses import dataclass
from typing import ClassVar, Literal

import pyro
import torch

from .. import plots
from ..devices import resolve_device
from ..errors import ConfigError, Interrupted, TrainingDiverged
from ..guides import MVAEGuide
from ..inference import importance_sample, make_elbo, make_optim, mean_and_stderr, train
from ..models import MVAE
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

__all__ = ["MVAEConfig", "evaluate_mvae", "train_mvae"]

#: Samples per class in label_to_image.png.
FIGURE_SAMPLES = 8


@dataclass
class MVAEConfig(RunConfig):
    """Train the multimodal VAE (Wu & Goodman 2018) on binarized images and their labels with
    a product-of-experts guide. The flags of ``pyrolvm train mvae``; ``None`` means the
    dataset's default."""

    DATASET_DEFAULTS: ClassVar[dict] = {
        "digits": dict(latent_dim=8, hidden=(128, 128), epochs=60, lr=3e-3, label_weight=5.0),
        "mnist": dict(latent_dim=20, hidden=(512, 512), epochs=5, lr=1e-3, label_weight=50.0),
    }

    out: str = "runs/mvae"
    """the run folder"""
    latent_dim: Count | None = None
    """latent dimensions (default: 8 digits, 20 mnist)"""
    hidden: Sizes | None = None
    """hidden sizes of the image expert and decoder (default: 128,128 digits, 512,512 mnist)"""
    activation: Literal[tuple(ACTIVATIONS)] = "relu"
    """hidden-layer nonlinearity"""
    epochs: Count | None = None
    """passes over the training data (default: 60 digits, 5 mnist)"""
    batch_size: Count = 100
    """datapoints per step"""
    lr: PositiveFloat | None = None
    """Adam learning rate (default: 3e-3 digits, 1e-3 mnist)"""
    label_weight: PositiveFloat | None = None
    """lambda, the weight of the label's log-likelihood in training (Wu & Goodman 2018,
    section 4: 50 on MNIST; default: 50 mnist, 5 digits); evaluation uses 1"""
    eval_samples: Count = 100
    """importance samples K of each test log-likelihood"""
    eval_batch_size: Count = 100
    """test datapoints per evaluation call"""

    def check(self):
        if self.resume:
            raise ConfigError("mvae runs are short and not resumable: rerun with --overwrite")


def build(cfg, data_dim, num_classes):
    """The MVAE model and its product-of-experts guide."""
    model = MVAE(
        data_dim, num_classes, cfg.latent_dim, cfg.hidden, cfg.activation, cfg.label_weight
    )
    guide = MVAEGuide(data_dim, num_classes, cfg.latent_dim, cfg.hidden, cfg.activation)
    device = resolve_device(cfg.device)
    return model.to(device), guide.to(device)


def image_only(fn):
    """``fn`` called with the image alone: ``fn(image, None)``."""
    return lambda image, label=None: fn(image, None)


def label_only(fn):
    """``fn`` called with the label alone: ``fn(None, label)``."""
    return lambda image, label: fn(None, label)


def evaluate(model, guide, data, cfg):
    """Test figures of an MVAE, seeded by ``cfg.seed``: ``accuracy`` (image -> label: argmax of
    p(label | z) at the mean of q(z | image)); importance-sampled (K = ``cfg.eval_samples``)
    ``joint_nll`` -log p(image, label), ``image_nll`` -log p(image), ``label_nll`` -log p(label),
    and the conditionals ``label_given_image_nll`` -log p(label | image) and
    ``image_given_label_nll`` -log p(image | label), nats per test datapoint, with
    ``*_stderr``. -log p(label | image) is the self-normalized estimate
    ``log sum_k w_k - log sum_k w_k p(label | z_k)`` with z_k ~ q(z | image) and
    w_k = p(image, z_k) / q(z_k | image) (the joint and the marginal importance-sampled with
    the *same* draws; consistent as K grows, not a bound). -log p(image | label) is
    ``joint_nll - label_nll``: q(z | label) is far too broad a proposal for the image's
    likelihood, while log p(label) is estimated well by it."""
    test = (data.test, data.test_labels)
    weight, model.label_weight = model.label_weight, 1.0
    try:
        return _evaluate(model, guide, data, test, cfg)
    finally:
        model.label_weight = weight


def _evaluate(model, guide, data, test, cfg):
    with torch.no_grad():
        loc = guide.encode(data.test, None)[0]
        accuracy = (model.label_logits(loc).argmax(-1) == data.test_labels).double().mean()
    options = dict(num_samples=cfg.eval_samples, batch_size=cfg.eval_batch_size)
    pyro.set_rng_seed(cfg.seed)
    joint = importance_sample(model, guide, test, **options).log_likelihood
    # the same seed, so the same draws z_k ~ q(z | image) in both calls
    pyro.set_rng_seed(cfg.seed + 1)
    image = importance_sample(image_only(model), image_only(guide), test, **options)
    pyro.set_rng_seed(cfg.seed + 1)
    both = importance_sample(model, image_only(guide), test, **options)
    pyro.set_rng_seed(cfg.seed + 2)
    label = importance_sample(label_only(model), label_only(guide), test, **options)
    marginals = {"image": image, "label": label}
    conditionals = {
        "image": image.log_likelihood - both.log_likelihood,
        "label": label.log_likelihood - joint,
    }
    out = {"accuracy": accuracy.item(), "eval_samples": cfg.eval_samples}
    for name, values in (
        ("joint_nll", -joint),
        ("image_nll", -marginals["image"].log_likelihood),
        ("label_nll", -marginals["label"].log_likelihood),
        ("label_given_image_nll", conditionals["image"]),
        ("image_given_label_nll", conditionals["label"]),
    ):
        out[name], out[name + "_stderr"] = mean_and_stderr(values)
    return out


def label_to_image_figure(path, model, guide, num_classes, image_shape):
    """Save FIGURE_SAMPLES images per class: means of p(image | z), z ~ q(z | label)."""
    labels = torch.arange(num_classes).repeat_interleave(FIGURE_SAMPLES)
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


def train_mvae(config=None, data=None, **overrides):
    """Train and evaluate an MVAE and write the run folder; ``pyrolvm train mvae`` in one call.

    Each step takes three SVI steps with one Adam optimizer: the ELBO of (image, label), of
    the image alone and of the label alone (Wu & Goodman 2018, section 2.2: for two
    modalities the sub-sampled set is every subset).

    Writes into ``config.out``: ``config.json``; ``metrics.json`` (the figures of
    ``pyrolvm.runs.mvae.evaluate``, ``train_elbo`` of the joint bound per epoch, the label
    weighted by ``label_weight``); ``checkpoint.pt``; ``label_to_image.png``.

    Raises:
        ConfigError, DataError: bad settings or data, or an occupied run folder.
        TrainingDiverged, Interrupted: as :func:`pyrolvm.inference.train`.
    """
    cfg = dataclasses.replace(config or MVAEConfig(), **overrides).resolved()
    data = on_device(load_data(cfg, "dynamic", data), resolve_device(cfg.device))
    num_classes = int(data.train_labels.max()) + 1
    config_dict = dataclasses.asdict(cfg) | {"data_dim": data.data_dim}
    with run_folder(cfg.out, "mvae", config_dict, cfg.resume, cfg.overwrite) as (folder, _):
        write_json(os.path.join(folder, "config.json"), config_dict)
        pyro.clear_param_store()
        pyro.set_rng_seed(cfg.seed)
        model, guide = build(cfg, data.data_dim, num_classes)
        elbo = make_elbo("trace")
        try:
            history = train(
                model,
                guide,
                (data.train, data.train_labels),
                elbo,
                make_optim(cfg.lr),
                epochs=cfg.epochs,
                batch_size=cfg.batch_size,
                transform=data.train_transform,
                progress=cfg.progress,
                extra_objectives=[
                    (image_only(model), image_only(guide), make_elbo("trace")),
                    (label_only(model), label_only(guide), make_elbo("trace")),
                ],
            )
        except (TrainingDiverged, Interrupted) as exc:
            raise record_stop(folder, exc) from None
        metrics = {"status": "ok", "complete": True, **evaluate(model, guide, data, cfg)}
        metrics["train_elbo"] = history["train_elbo"]
        metrics["seconds_per_epoch"] = sum(history["seconds"]) / max(1, len(history["seconds"]))
        label_to_image_figure(
            os.path.join(folder, "label_to_image.png"), model, guide, num_classes, data.image_shape
        )
        metrics["figures"] = ["label_to_image.png"]
        save_checkpoint(
            os.path.join(folder, CHECKPOINT),
            {
                "kind": "mvae",
                "config": config_dict,
                "model": model.state_dict(),
                "guide": guide.state_dict(),
            },
        )
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
    model, guide = build(cfg, data_dim, int(data.train_labels.max()) + 1)
    model.load_state_dict(state["model"])
    guide.load_state_dict(state["guide"])
    return evaluate(model, guide, data, cfg)


def evaluation_rows(metrics):
    """The rows ``pyrolvm evaluate`` prints for an MVAE run."""
    k = metrics["eval_samples"]

    def nll(key):
        return f"{metrics[key]:.2f} ± {metrics[key + '_stderr']:.2f} nats"

    return [
        ("image -> label accuracy", f"{100 * metrics['accuracy']:.2f} %"),
        (f"-log p(image, label) (K={k})", nll("joint_nll")),
        ("-log p(image)", nll("image_nll")),
        ("-log p(label | image)", nll("label_given_image_nll")),
        ("-log p(image | label)", nll("image_given_label_nll")),
    ]


def summary(metrics, cfg, folder):
    """The summary table printed at the end of ``pyrolvm train mvae``."""
    cfg = cfg.resolved()
    title = (
        f"MVAE (image + label, product of experts) on {cfg.dataset}: latent_dim="
        f"{cfg.latent_dim}, hidden={cfg.hidden}, {len(metrics['train_elbo'])} epochs, "
        f"seed={cfg.seed}"
    )
    rows = evaluation_rows(metrics) + [
        ("seconds per epoch", f"{metrics['seconds_per_epoch']:.1f}"),
        ("run folder", f"{folder}  (config.json, metrics.json, {CHECKPOINT}, label_to_image.png)"),
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
        description="a multimodal VAE over images and labels (Wu & Goodman 2018)",
        evaluate_options=("eval_samples",),
    )
)
