"""The training loop: stochastic variational inference over minibatches held in memory."""

import math
import time

import pyro
import torch
from pyro.infer import SVI
from pyro.infer.util import is_validation_enabled
from tqdm.auto import tqdm

from ..errors import ConfigError, TrainingDiverged
from .batches import as_tuple
from .objectives import make_elbo


def make_optim(lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
    """Pyro's Adam (Kingma & Ba 2015) with the given learning rate, betas and eps."""
    if not lr > 0:
        raise ConfigError(f"the learning rate must be positive, got {lr}")
    return pyro.optim.Adam({"lr": lr, "betas": tuple(betas), "eps": eps})


def train(model, guide, data, loss=None, optim=None, *, epochs=1, batch_size=100,
          transform=None, callback=None, progress=True, history=None, check_every_step=False,
          extra_objectives=(), extra_batch=None):
    """Fit ``model``/``guide`` with ``pyro.infer.SVI`` on minibatches of ``data``.

    Each epoch visits the N datapoints once in a fresh random order (``torch``'s global RNG,
    seeded by ``pyro.set_rng_seed``), in minibatches of ``batch_size``; ``transform`` is
    applied to each minibatch's first tensor (e.g. ``torch.bernoulli`` for dynamic
    binarization). Model and guide are called as ``model(*batch)``. A learning-rate
    scheduler (``pyro.optim.PyroLRScheduler``, e.g. ``pyro.optim.LambdaLR``) given as ``optim``
    is stepped once at the end of every epoch.

    Models that need several objectives per step (M2: the unlabelled and labelled bounds and
    a classification loss) give the further ones as ``extra_objectives``: each
    ``(model, guide, loss)`` takes one SVI step with the same optimizer after the main one,
    called with ``extra_batch()`` (drawn once per step, e.g. a labelled minibatch) or, without
    it, with the main batch.

    Args:
        model, guide: Pyro callables following Pyro's rules (one batch plate).
        data (torch.Tensor or tuple of torch.Tensor): N datapoints along dim 0.
        loss (pyro.infer.ELBO or None): the objective; default ``Trace_ELBO()``.
        optim (pyro.optim.PyroOptim or None): default :func:`make_optim` ().
        epochs (int): passes over the data.
        batch_size (int): datapoints per step.
        transform (callable or None): maps a minibatch tensor to the tensor the model sees.
        callback (callable, list of callables, or None): ``callback(epoch, history)`` after
            each epoch (1-based); may return a dict of further per-epoch metrics, appended to
            ``history`` before the next callback runs.
        progress (bool): show a progress bar with the running ELBO.
        history (dict or None): curves to continue (e.g. from a checkpoint).
        check_every_step (bool): run Pyro's validation (site shapes, model/guide match,
            distribution supports) on every step. By default it runs on the first step only,
            where a static model shows any such error; later steps skip it, which halves the
            step time of small models. Has no effect when Pyro's validation is disabled.
        extra_objectives (sequence of (model, guide, pyro.infer.ELBO)): further objectives
            stepped after the main one in every step.
        extra_batch (callable or None): returns the tuple of tensors the extra objectives are
            called with, once per step (after the main batch is drawn).

    Returns:
        dict: per-epoch curves: ``"train_elbo"`` (mean over the epoch of the main objective's
        bound per datapoint, i.e. ``-loss / batch size``, nats), ``"seconds"`` (wall time of
        each epoch), with extra objectives ``"train_loss"`` (mean per step of all objectives'
        losses summed), and whatever ``callback`` returned.

    Raises:
        ConfigError: no data, ``batch_size < 1`` or ``epochs < 0``.
        DataError: ``data`` is not a tensor or tuple of tensors with the same number of rows.
        TrainingDiverged: the loss became NaN or infinite; ``exc.history`` holds the curves of
        the epochs completed before it. The parameters may already be non-finite: a checkpoint
        written by ``callback`` at the end of the last completed epoch is the last good state.
    """
    loss = loss if loss is not None else make_elbo("trace")
    optim = optim if optim is not None else make_optim()
    tensors = as_tuple(data)
    n = len(tensors[0])
    if n == 0:
        raise ConfigError("no training data")
    if int(batch_size) < 1 or int(epochs) < 0:
        raise ConfigError(f"batch_size must be >= 1 and epochs >= 0, got {batch_size}, {epochs}")
    if callback is None:
        callbacks = []
    else:
        callbacks = list(callback) if isinstance(callback, (list, tuple)) else [callback]
    svi = SVI(model, guide, optim, loss)
    extras = [SVI(m, g, optim, lo) for m, g, lo in extra_objectives]
    history = history if history is not None else {}
    for key in ("train_elbo", "seconds") + (("train_loss",) if extras else ()):
        history.setdefault(key, [])
    steps_per_epoch = math.ceil(n / batch_size)
    start_epoch = len(history["train_elbo"])
    validate, first = is_validation_enabled(), True
    bar = tqdm(total=epochs * steps_per_epoch, disable=not progress, unit="step",
               dynamic_ncols=True)
    try:
        for epoch in range(start_epoch + 1, start_epoch + epochs + 1):
            t0 = time.perf_counter()
            perm = torch.randperm(n)
            total, total_all, seen = 0.0, 0.0, 0
            for step in range(steps_per_epoch):
                idx = perm[step * batch_size:(step + 1) * batch_size]
                batch = tuple(d[idx] for d in tensors)
                if transform is not None:
                    batch = (transform(batch[0]),) + batch[1:]
                more = extra_batch() if extra_batch is not None else batch
                with pyro.validation_enabled(validate and (check_every_step or first)):
                    main = svi.step(*batch)
                    value = main + sum(e.step(*more) for e in extras)
                first = False
                if not math.isfinite(value):
                    raise TrainingDiverged(
                        f"the loss became {value} at epoch {epoch}, step {step + 1}: lower the "
                        "learning rate (--lr), check the data for extreme values, or use more "
                        "particles; the checkpoint of the last completed epoch is kept",
                        epoch=epoch, step=(epoch - 1) * steps_per_epoch + step + 1,
                    )
                total += main
                total_all += value
                seen += len(idx)
                bar.update(1)
                if step % 10 == 0 or step == steps_per_epoch - 1:
                    bar.set_postfix_str(f"epoch {epoch} elbo {-total / seen:.2f}", refresh=False)
            history["train_elbo"].append(-total / seen)
            if extras:
                history["train_loss"].append(total_all / steps_per_epoch)
            history["seconds"].append(time.perf_counter() - t0)
            if isinstance(optim, pyro.optim.PyroLRScheduler):
                optim.step()
            for cb in callbacks:
                for key, value in (cb(epoch, history) or {}).items():
                    history.setdefault(key, []).append(value)
    except TrainingDiverged as exc:
        exc.history = history
        raise
    finally:
        bar.close()
    return history
