"""Semi-supervised training of M2 (Kingma et al. 2014): a few labelled images, many unlabelled
ones, the label enumerated in the unlabelled bound, and the auxiliary classification loss."""

import math
import time

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO

from ..errors import ConfigError, TrainingDiverged
from ..guides.ssvae import SSVAEGuide
from ..inference import make_optim
from ..models.ssvae import SSVAE


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
           aux_loss_multiplier=None, enumerate=True, transform=torch.bernoulli, seed=0):
    """Train M2 on ``num_labelled`` balanced labelled images and the rest unlabelled.

    Every step takes one unlabelled minibatch (bound U(x) of eq. (7), the label enumerated under
    ``TraceEnum_ELBO`` or sampled under ``Trace_ELBO``) and one labelled minibatch (bound
    L(x, y) of eq. (6), plus ``aux_loss_multiplier * -log q(y | x)`` of eq. (9) when
    ``aux_loss``). The multiplier defaults to ``0.1 * N`` as in Kingma et al., section 4.

    Args:
        train (torch.Tensor): (N, D) images in [0, 1]; ``transform`` binarizes each minibatch.
        train_labels (torch.Tensor): (N,) int64 classes (only ``num_labelled`` are used).
        test, test_labels: held-out images and classes for the per-epoch accuracy.

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
        history["loss"].append(total / steps)
        history["seconds"].append(time.perf_counter() - t0)
        if test is not None:
            history["test_accuracy"].append(accuracy(guide, test, test_labels))
    return model, guide, history
