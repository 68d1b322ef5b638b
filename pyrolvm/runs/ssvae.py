"""Semi-supervised training of M2 (Kingma et al. 2014): a few labelled images, many unlabelled
ones, the label enumerated in the unlabelled bound, and the auxiliary classification loss."""

import dataclasses
import math
import os
import time
from dataclasses import dataclass

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO
from tqdm.auto import tqdm

from ..data import check_data, load
from ..errors import ConfigError, TrainingDiverged
from ..guides.ssvae import SSVAEGuide
from ..inference import make_optim
from ..models.ssvae import SSVAE
from .common import (
    CHECKPOINT,
    format_summary,
    run_dir,
    save_checkpoint,
    with_dataset_defaults,
    write_json,
)


def split_labels(labels, num_labelled, num_classes=10, seed=0):
    """Indices of ``num_labelled`` images balanced over the classes (``num_labelled / C`` each,
    as Kingma et al.) and of the rest, drawn with ``seed``.

    Returns:
        (labelled (num_labelled,), unlabelled (N - num_labelled,)) int64 index tensors.

    Raises:
        ConfigError: ``num_labelled`` not a positive multiple of C, or more than a class holds.
    """
    if num_labelled < num_classes or num_labelled % num_classes:
        raise ConfigError(
            f"the number of labels must be a positive multiple of {num_classes} (balanced "
            f"classes), got {num_labelled}")
    gen = torch.Generator().manual_seed(seed)
    per_class = num_labelled // num_classes
    chosen = []
    for c in range(num_classes):
        idx = (labels == c).nonzero().flatten()
        if len(idx) < per_class:
            raise ConfigError(f"class {c} has {len(idx)} images, fewer than {per_class} labels")
        chosen.append(idx[torch.randperm(len(idx), generator=gen)[:per_class]])
    labelled = torch.cat(chosen)
    mask = torch.ones(len(labels), dtype=torch.bool)
    mask[labelled] = False
    return labelled, mask.nonzero().flatten()


@torch.no_grad()
def accuracy(guide, x, labels):
    """Fraction of x whose classifier argmax q(y | x) equals the label."""
    return (guide.classify(x).argmax(-1) == labels).double().mean().item()


def fit_m2(train, train_labels, num_labelled, test=None, test_labels=None, latent_dim=50,
           hidden=(500,), epochs=10, batch_size=100, lr=1e-3, aux_loss=True,
           aux_loss_multiplier=None, enumerate=True, transform=torch.bernoulli, seed=0,
           progress=False):
    """Train M2 on ``num_labelled`` balanced labelled images and the rest unlabelled.

    Every step takes one unlabelled minibatch (bound U(x) of eq. (7), the label enumerated under
    ``TraceEnum_ELBO`` or sampled under ``Trace_ELBO``) and one labelled minibatch (bound
    L(x, y) of eq. (6), plus ``aux_loss_multiplier * -log q(y | x)`` of eq. (9) when
    ``aux_loss``). The multiplier defaults to ``0.1 * N`` as in Kingma et al., section 4.

    Args:
        train (torch.Tensor): (N, D) images in [0, 1]; ``transform`` binarizes each minibatch.
        train_labels (torch.Tensor): (N,) int64 classes (only ``num_labelled`` are used).
        test, test_labels: held-out images and classes for the per-epoch accuracy.
        progress (bool): show a progress bar over steps with the running loss and the last
            epoch's test accuracy.

    Returns:
        (model, guide, history) with per-epoch ``"loss"`` (mean per step) and
        ``"test_accuracy"``.

    Raises:
        ConfigError: see :func:`split_labels`.
        TrainingDiverged: the loss became NaN or infinite.
    """
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    num_classes = int(train_labels.max()) + 1
    lab, unlab = split_labels(train_labels, num_labelled, num_classes, seed)
    d = train.shape[-1]
    model = SSVAE(d, num_classes, latent_dim, hidden)
    guide = SSVAEGuide(d, num_classes, latent_dim, hidden, enumerate=enumerate)
    optim = make_optim(lr)
    unsup_loss = TraceEnum_ELBO(max_plate_nesting=1) if enumerate else Trace_ELBO()
    svi_unsup = SVI(model, guide, optim, unsup_loss)
    svi_sup = SVI(model, guide, optim, Trace_ELBO())
    alpha = 0.1 * len(train) if aux_loss_multiplier is None else aux_loss_multiplier
    svi_aux = SVI(lambda x, y: guide.classifier_model(x, y, alpha), lambda x, y: None, optim,
                  Trace_ELBO()) if aux_loss else None
    onehot = torch.nn.functional.one_hot(train_labels, num_classes).to(train.dtype)
    tf = transform or (lambda v: v)
    history = {"loss": [], "test_accuracy": [], "seconds": []}
    steps = math.ceil(len(unlab) / batch_size)
    lab_batch = min(batch_size, len(lab))
    bar = tqdm(total=epochs * steps, disable=not progress, unit="step", dynamic_ncols=True)
    for epoch in range(1, epochs + 1):
        t0, total = time.perf_counter(), 0.0
        perm = unlab[torch.randperm(len(unlab))]
        for step in range(steps):
            xu = tf(train[perm[step * batch_size:(step + 1) * batch_size]])
            li = lab[torch.randperm(len(lab))[:lab_batch]]
            xl, yl = tf(train[li]), onehot[li]
            value = svi_unsup.step(xu) + svi_sup.step(xl, yl)
            if svi_aux is not None:
                value += svi_aux.step(xl, yl)
            if not math.isfinite(value):
                raise TrainingDiverged(f"the loss became {value} at epoch {epoch}, step {step + 1}",
                                       epoch=epoch, step=(epoch - 1) * steps + step + 1)
            total += value
            bar.update(1)
            if step % 10 == 0:
                acc = history["test_accuracy"][-1] if history["test_accuracy"] else float("nan")
                bar.set_postfix_str(f"epoch {epoch} loss {total / (step + 1):.1f} "
                                    f"test acc {acc:.3f}", refresh=False)
        history["loss"].append(total / steps)
        history["seconds"].append(time.perf_counter() - t0)
        if test is not None:
            history["test_accuracy"].append(accuracy(guide, test, test_labels))
    bar.close()
    return model, guide, history


#: Per-dataset defaults for settings left as ``None``: MNIST follows Kingma et al. (2014),
#: section 4 (one hidden layer of 500 softplus units, 50 latent dimensions).
DATASET_DEFAULTS = {
    "digits": dict(latent_dim=8, hidden=(128,), epochs=20, lr=3e-3),
    "mnist": dict(latent_dim=50, hidden=(500,), epochs=10, lr=1e-3),
}


@dataclass
class M2Config:
    """Settings of one M2 run (the flags of ``pyrolvm train m2``); ``None`` means the
    dataset's default (:data:`DATASET_DEFAULTS`)."""

    dataset: str = "digits"
    data_root: str = None
    labels: int = 100
    latent_dim: int = None
    hidden: tuple = None
    epochs: int = None
    batch_size: int = 100
    lr: float = None
    aux_loss: bool = True
    aux_loss_multiplier: float = None
    enumerate: bool = True
    seed: int = 0
    out: str = "runs/m2"
    progress: bool = True

    def resolved(self):
        """A copy with every ``None`` replaced by its default."""
        values = with_dataset_defaults(self, DATASET_DEFAULTS)
        values["hidden"] = tuple(int(h) for h in values["hidden"])
        return M2Config(**values)


def train_m2(config=None, **overrides):
    """Train M2 with ``labels`` balanced labels on dynamically binarized images and write the
    run folder (``config.json``, ``metrics.json`` with the final and per-epoch
    ``test_accuracy``, ``checkpoint.pt``); ``pyrolvm train m2`` in one call.

    Returns:
        dict: the metrics.

    Raises:
        ConfigError, DataError: bad settings or data (nothing is written).
    """
    cfg = dataclasses.replace(config or M2Config(), **overrides).resolved()
    if int(cfg.epochs) < 1 or int(cfg.batch_size) < 1:
        raise ConfigError(f"--epochs and --batch-size must be >= 1, got {cfg.epochs}, "
                          f"{cfg.batch_size}")
    data = load(cfg.dataset, root=cfg.data_root, binarize="dynamic", seed=cfg.seed)
    check_data(data.train, "the training data")
    split_labels(data.train_labels, cfg.labels, int(data.train_labels.max()) + 1, cfg.seed)
    folder = run_dir(cfg.out)
    config_dict = dataclasses.asdict(cfg)
    write_json(os.path.join(folder, "config.json"), config_dict)
    model, guide, history = fit_m2(
        data.train, data.train_labels, cfg.labels, data.test, data.test_labels,
        latent_dim=cfg.latent_dim, hidden=cfg.hidden, epochs=cfg.epochs,
        batch_size=cfg.batch_size, lr=cfg.lr, aux_loss=cfg.aux_loss,
        aux_loss_multiplier=cfg.aux_loss_multiplier, enumerate=cfg.enumerate,
        transform=data.train_transform, seed=cfg.seed, progress=cfg.progress)
    save_checkpoint(os.path.join(folder, CHECKPOINT), {
        "kind": "m2", "config": config_dict, "history": history,
        "model": model.state_dict(), "guide": guide.state_dict()})
    metrics = {"status": "ok", "test_accuracy": history["test_accuracy"][-1],
               "test_error": 1 - history["test_accuracy"][-1], "epochs": len(history["loss"]),
               "seconds_per_epoch": sum(history["seconds"]) / len(history["seconds"]),
               "curves": history}
    write_json(os.path.join(folder, "metrics.json"), metrics)
    return metrics


def summary(metrics, cfg, folder):
    """The summary table printed at the end of ``pyrolvm train m2``."""
    cfg = cfg.resolved()
    title = (f"M2 on {cfg.dataset} with {cfg.labels} labels: latent_dim={cfg.latent_dim}, "
             f"hidden={cfg.hidden}, aux_loss={cfg.aux_loss}, label "
             f"{'enumerated' if cfg.enumerate else 'sampled'}, {metrics['epochs']} epochs, "
             f"seed={cfg.seed}")
    return format_summary(title, [
        ("test accuracy", f"{100 * metrics['test_accuracy']:.2f} %"),
        ("seconds per epoch", f"{metrics['seconds_per_epoch']:.1f}"),
        ("run folder", f"{folder}  (config.json, metrics.json, {CHECKPOINT})"),
    ])
