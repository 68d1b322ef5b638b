"""The CVAE's two phases (Sohn, Lee & Yan 2015, section 4.1; Pyro's ``examples/cvae``): the
deterministic baseline network by maximum likelihood, then the CVAE whose conditional prior
network reads the baseline's prediction; how the data's rows feed ``fn(x, y)``; the test
figures of both."""

from collections.abc import Callable
from typing import Any

import pyro
import torch
import torch.nn.functional as F
from pyro.infer import ELBO

from ..data import mask_columns
from ..inference import importance_sample, mean_and_stderr
from ..models import no_latents
from .svi import fit_svi


def on_images(fn: Callable, mask: torch.Tensor) -> Callable:
    """``fn(x, y)`` called on whole images: x the pixels where ``mask`` (bool, (D,)) is True,
    y the others; so that the training loop's per-minibatch binarization draws x and y
    together."""

    inside, outside = mask_columns(mask)  # (found once: no sync per call)

    def call(images):
        return fn(images[:, inside], images[:, outside])

    return call


def on_labels(fn: Callable, num_classes: int) -> Callable:
    """``fn(x, y)`` called on (images, labels): x the one-hot label (in the images' dtype,
    shape (B, num_classes)), y the image; the training loop's binarization applies to the
    images, the first tensor."""

    def call(images, labels):
        return fn(F.one_hot(labels, num_classes).to(images.dtype), images)

    return call


def fit_baseline(
    baseline: Callable, data: Any, wrap: Callable = lambda fn: fn, **fit_options: Any
) -> dict:
    """Phase 1: the baseline network ``baseline(x, y)`` by maximum likelihood (the empty guide
    :func:`~pyrolvm.models.no_latents`), alone in Pyro's param store (cleared first), by
    :func:`~pyrolvm.fitting.fit_svi` on ``data`` fed through ``wrap``
    (:func:`on_images`, :func:`on_labels`)."""
    pyro.clear_param_store()
    return fit_svi(wrap(baseline), wrap(no_latents), data, **fit_options)


def fit_conditional(
    model: Callable,
    guide: Callable,
    data: Any,
    loss: ELBO | None = None,
    wrap: Callable = lambda fn: fn,
    **fit_options: Any,
) -> dict:
    """Phase 2: the CVAE ``model(x, y)`` and its guide under ``loss``, alone in Pyro's param
    store (cleared first: the baseline's parameters enter it again as the model's submodule,
    at their fitted values), by :func:`~pyrolvm.fitting.fit_svi` on ``data`` fed through
    ``wrap``."""
    pyro.clear_param_store()
    return fit_svi(wrap(model), wrap(guide), data, loss, **fit_options)


def conditional_scores(
    model: Callable,
    guide: Callable,
    baseline: Callable | None,
    test: Any,
    wrap: Callable = lambda fn: fn,
    num_samples: int = 100,
    seed: int = 0,
    **options: Any,
) -> dict[str, float]:
    """Test -log p(y | x) of the CVAE (importance sampling with ``num_samples`` draws from
    q(z | x, y), seeded by ``seed``; ``options`` of :func:`~pyrolvm.inference.importance_sample`)
    and of the ``baseline`` if given (exact), nats per test datapoint with their standard
    errors (``cvae_nll``, ``baseline_nll``, ``*_stderr``); the CVAE's ELBO and mean effective
    sample size of the same draws (``cvae_elbo``, ``cvae_ess``)."""
    pyro.set_rng_seed(seed)
    out = {}
    if baseline is not None:
        base = importance_sample(wrap(baseline), wrap(no_latents), test, num_samples=1)
        out["baseline_nll"], out["baseline_nll_stderr"] = mean_and_stderr(-base.log_likelihood)
    result = importance_sample(wrap(model), wrap(guide), test, num_samples=num_samples, **options)
    nll, se = mean_and_stderr(-result.log_likelihood)
    out |= {"cvae_nll": nll, "cvae_nll_stderr": se, "cvae_elbo": mean_and_stderr(result.elbo)[0]}
    return out | {"cvae_ess": result.ess.mean().item()}
