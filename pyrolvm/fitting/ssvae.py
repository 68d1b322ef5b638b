"""Semi-supervised training of M2 (Kingma et al. 2014): a few labelled images, many unlabelled
ones, the label enumerated in the unlabelled bound, and the auxiliary classification loss."""

from collections.abc import Callable, Sequence

import pyro
import torch
from pyro.infer import ELBO, Trace_ELBO, TraceEnum_ELBO
from pyro.optim import PyroOptim

from ..data import Dataset
from ..errors import ConfigError
from ..guides.ssvae import SSVAEGuide
from ..inference import make_optim, train
from ..models.ssvae import SSVAE

#: The ``labelled_schedule`` choices of :func:`fit_m2`.
LABELLED_SCHEDULES = ("every-step", "interleaved")


def split_labels(
    labels: torch.Tensor, num_labelled: int, num_classes: int = 10, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of ``num_labelled`` images balanced over the classes (``num_labelled / C`` each,
    as Kingma et al.) and of the rest, drawn with ``seed``.

    Returns:
        (labelled (num_labelled,), unlabelled (N - num_labelled,)) int64 index tensors on the
        CPU.

    Raises:
        ConfigError: ``num_labelled`` not a positive multiple of C, or more than a class holds.
    """
    if num_labelled < num_classes or num_labelled % num_classes:
        raise ConfigError(
            f"the number of labels must be a positive multiple of {num_classes} (balanced "
            f"classes), got {num_labelled}"
        )
    gen = torch.Generator().manual_seed(seed)
    labels = labels.cpu()  # the indices are drawn on the CPU: the same on every device
    per_class = num_labelled // num_classes
    chosen = []
    for c in range(num_classes):
        idx = (labels == c).nonzero().flatten()
        if len(idx) < per_class:
            raise ConfigError(f"class {c} has {len(idx)} images, fewer than {per_class} labels")
        chosen.append(idx[torch.randperm(len(idx), generator=gen, device="cpu")[:per_class]])
    labelled = torch.cat(chosen)
    mask = torch.ones(len(labels), dtype=torch.bool, device="cpu")
    mask[labelled] = False
    return labelled, mask.nonzero().flatten()


@torch.no_grad()
def accuracy(guide: SSVAEGuide, x: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of x (N, D) whose classifier argmax q(y | x) equals the label (N,), a float."""
    return (guide.classify(x).argmax(-1) == labels).double().mean().item()


def _empty_guide(*args):
    """The guide of the classification term: it has no latent sites."""


def _to_device(index: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU index tensor on ``device``; to a GPU from pinned memory without blocking (the host
    does not wait for the GPU's queue)."""
    if device.type == "cpu":
        return index
    if device.type == "cuda":
        index = index.pin_memory()
    return index.to(device, non_blocking=True)


def m2_objectives(
    model: SSVAE, guide: SSVAEGuide, enumerate: bool, aux_weight: float | None
) -> tuple[ELBO, list[tuple[Callable, Callable, ELBO]]]:
    """M2's objectives: the unlabelled bound (eq. 7: ``TraceEnum_ELBO`` with the label
    enumerated, or ``Trace_ELBO`` with it sampled), and the extra objectives of a labelled
    minibatch, the labelled bound (eq. 6) and, with ``aux_weight``, the classification loss
    ``aux_weight * -log q(y | x)`` (eq. 9)."""
    unsup = TraceEnum_ELBO(max_plate_nesting=1) if enumerate else Trace_ELBO()
    extra: list[tuple[Callable, Callable, ELBO]] = [(model, guide, Trace_ELBO())]
    if aux_weight is not None:
        aux = lambda x, y: guide.classifier_model(x, y, aux_weight)  # noqa: E731
        extra.append((aux, _empty_guide, Trace_ELBO()))
    return unsup, extra


def labelled_batches(
    train_x: torch.Tensor,
    train_labels: torch.Tensor,
    lab: torch.Tensor,
    unlab: torch.Tensor,
    batch_size: int,
    schedule: str,
    seed: int,
) -> Callable[[int, int], tuple[torch.Tensor, torch.Tensor] | None]:
    """``extra_batch(epoch, step)`` of :func:`pyrolvm.inference.train` for M2: the labelled
    minibatch (images, one-hot labels) of a step, or ``None`` for a step without one, on
    ``schedule`` (see :func:`fit_m2`), from the labelled rows ``lab`` (and ``unlab``, the
    unlabelled ones, which set the epoch's steps).

    Raises:
        ConfigError: an interleaved schedule with more labelled than unlabelled minibatches.
    """
    onehot = torch.nn.functional.one_hot(train_labels, int(train_labels.max()) + 1)
    onehot = onehot.to(train_x.dtype)
    lab_batch = min(batch_size, len(lab))
    lab_on_device = lab.to(train_x.device)

    # The labelled minibatches are chosen on train's data-order stream (the CPU RNG on every
    # device) and binarized by train's ``transform`` with the noise stream, like the
    # unlabelled ones: were they binarized here, a CPU run would draw that noise from the
    # order stream and a CUDA run from the GPU's generator, and the two would visit the data
    # in different orders.
    def labelled_batch(epoch, step):
        pick = torch.randperm(len(lab), device="cpu")[:lab_batch]  # the CPU RNG on every device
        li = lab_on_device[_to_device(pick, lab_on_device.device)]
        return train_x[li], onehot[li]

    if schedule != "interleaved":
        return labelled_batch
    steps, lab_steps = -(-len(unlab) // batch_size), -(-len(lab) // batch_size)
    if lab_steps > steps:
        raise ConfigError(
            f"the interleaved schedule needs fewer labelled minibatches ({lab_steps}) than "
            f"unlabelled ones ({steps}): use fewer labels or labelled_schedule='every-step'"
        )
    # the steps of an epoch that take a labelled minibatch: spread evenly, the j-th at
    # round((j + 1/2) * steps / lab_steps)
    at_step = {int((j + 0.5) * steps / lab_steps): j for j in range(lab_steps)}

    def interleaved_batch(epoch, step):
        j = at_step.get(step)
        if j is None:
            return None
        gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = lab[torch.randperm(len(lab), generator=gen, device="cpu")]
        li = _to_device(order[j * batch_size : (j + 1) * batch_size], lab_on_device.device)
        return train_x[li], onehot[li]

    return interleaved_batch


def fit_m2(
    train_x: torch.Tensor,
    train_labels: torch.Tensor,
    num_labelled: int,
    test: torch.Tensor | None = None,
    test_labels: torch.Tensor | None = None,
    latent_dim: int = 50,
    hidden: Sequence[int] = (500,),
    epochs: int = 10,
    batch_size: int = 100,
    lr: float = 1e-3,
    aux_loss: bool = True,
    aux_loss_multiplier: float | None = None,
    enumerate: bool = True,
    transform: Callable | None = torch.bernoulli,
    seed: int = 0,
    progress: bool = False,
    model: SSVAE | None = None,
    guide: SSVAEGuide | None = None,
    optim: PyroOptim | None = None,
    history: dict | None = None,
    callback: Callable | None = None,
    checkpoint: Callable | None = None,
    resume_from: dict | None = None,
    labelled_schedule: str = "every-step",
    valid: torch.Tensor | None = None,
    valid_labels: torch.Tensor | None = None,
) -> tuple[SSVAE, SSVAEGuide, dict]:
    """Train M2 on ``num_labelled`` balanced labelled images and the rest unlabelled, with
    :func:`pyrolvm.inference.train`: every step takes an unlabelled minibatch (eq. 7,
    :func:`m2_objectives`) and, on ``labelled_schedule`` (:func:`labelled_batches`), a labelled
    one (eq. 6, plus ``aux_loss_multiplier * -log q(y | x)`` of eq. 9 with ``aux_loss``):
    ``"every-step"`` (a random labelled minibatch in every step) or ``"interleaved"`` (Pyro's
    ``examples/vae/ss_vae_M2.py``: each labelled image once per epoch, its minibatches spread
    evenly over the epoch, in an order drawn from ``seed`` and the epoch). All terms are sums
    over their minibatch, as in Pyro's example; the multiplier defaults to ``0.1 * N``
    (Kingma et al., section 4). Seeded by ``seed`` when no ``model`` is given.

    Args:
        train_x (torch.Tensor): (N, D) images in [0, 1]; ``transform`` binarizes each minibatch.
        train_labels (torch.Tensor): (N,) int64 classes (only ``num_labelled`` are used).
        test, test_labels, valid, valid_labels: held-out images and classes, for per-epoch
            ``test_accuracy`` and ``validation_accuracy`` (to select a model by).
        model, guide, optim, history: continue training these (default: new ones, seeded).
        callback, checkpoint, resume_from, progress: as :func:`pyrolvm.inference.train`'s.

    Returns:
        (model, guide, history): per-epoch ``"train_elbo"`` (the unlabelled bound per image,
        nats), ``"train_loss"`` (mean per step of the losses summed), ``"seconds"``, and the
        accuracies.

    Raises:
        ConfigError: see :func:`split_labels` and :func:`labelled_batches`; an unknown
            ``labelled_schedule``.
        TrainingDiverged: the loss became NaN or infinite.
    """
    num_classes = int(train_labels.max()) + 1
    if labelled_schedule not in LABELLED_SCHEDULES:
        raise ConfigError(
            f"unknown labelled schedule {labelled_schedule!r}: choose one of "
            f"{', '.join(LABELLED_SCHEDULES)}"
        )
    if model is None:
        pyro.clear_param_store()
        pyro.set_rng_seed(seed)
    lab, unlab = split_labels(train_labels, num_labelled, num_classes, seed)
    d = train_x.shape[-1]
    model = model or SSVAE(d, num_classes, latent_dim, hidden)
    guide = guide or SSVAEGuide(d, num_classes, latent_dim, hidden, enumerate=enumerate)
    optim = optim or make_optim(lr)
    alpha = 0.1 * len(train_x) if aux_loss_multiplier is None else aux_loss_multiplier
    unsup_loss, extra = m2_objectives(model, guide, enumerate, alpha if aux_loss else None)
    extra_batch = labelled_batches(
        train_x, train_labels, lab, unlab, batch_size, labelled_schedule, seed
    )
    callbacks: list[Callable] = []
    for name, x, y in (("test", test, test_labels), ("validation", valid, valid_labels)):
        if x is not None and y is not None:
            callbacks.append(
                lambda e, h, x=x, y=y, key=f"{name}_accuracy": {key: accuracy(guide, x, y)}
            )
    callbacks += [callback] if callback is not None else []
    history = train(
        model,
        guide,
        train_x[unlab.to(train_x.device)],
        unsup_loss,
        optim,
        epochs=epochs,
        batch_size=batch_size,
        transform=transform,
        callback=callbacks,
        progress=progress,
        history=history,
        extra_objectives=extra,
        extra_batch=extra_batch,
        checkpoint=checkpoint,
        resume_from=resume_from,
    )
    return model, guide, history


def validation_split(data: Dataset, size: int) -> tuple:
    """(train images, train labels, validation images or None, validation labels or None):
    the last ``size`` training images held out, as Pyro's ss-vae example holds out MNIST's
    last 10000.

    Raises:
        ConfigError: ``size`` leaves no training image.
    """
    if not size:
        return data.train, data.train_labels, None, None
    if size >= len(data.train):
        raise ConfigError(
            f"--validation {size} leaves no training image ({len(data.train)} in all): "
            "hold out fewer"
        )
    cut = len(data.train) - size
    return data.train[:cut], data.train_labels[:cut], data.train[cut:], data.train_labels[cut:]


def at_best_validation(history: dict) -> dict:
    """``{"best_validation_accuracy", "best_validation_epoch",
    "test_accuracy_at_best_validation"}`` from per-epoch curves (the first epoch of the
    highest validation accuracy); ``{}`` without a validation curve."""
    valid = history.get("validation_accuracy")
    if not valid:
        return {}
    best = max(range(len(valid)), key=lambda i: (valid[i], -i))
    return {
        "best_validation_accuracy": valid[best],
        "best_validation_epoch": best + 1,
        "test_accuracy_at_best_validation": history["test_accuracy"][best],
    }
