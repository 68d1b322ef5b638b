"""Training and scoring a two-modality VAE (Wu & Goodman 2018, "Multimodal Generative Models
for Scalable Weakly-Supervised Learning"; Shi et al. 2019, "Variational Mixture-of-Experts
Autoencoders"): how the data's rows feed ``fn(first, second)`` for each subset of the
modalities (:class:`Pairing`), the objectives of one training step (:func:`objectives`), and
the joint, marginal and conditional test log-likelihoods (:func:`multimodal_scores`)."""

from collections.abc import Callable
from typing import Any

import pyro
import torch
from pyro.infer import ELBO

from ..data import Dataset, mask_columns
from ..errors import ConfigError
from ..inference import importance_sample, mean_and_stderr

#: The two modalities' names, by ``modalities``: an image and its label, or the top and the
#: bottom half of an image.
MODALITIES = {"image-label": ("image", "label"), "halves": ("top", "bottom")}


def top_mask(image_shape: Any, device: Any = None) -> torch.Tensor:
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


def image_only(fn: Callable) -> Callable:
    """``fn`` called with the image alone: ``fn(image, None)``."""
    return lambda image, label=None: fn(image, None)


def label_only(fn: Callable) -> Callable:
    """``fn`` called with the label alone: ``fn(None, label)``."""
    return lambda image, label: fn(None, label)


class Pairing:
    """How the data rows feed ``fn(first, second)`` for each subset of the two modalities:
    ``joint(fn)``, ``first(fn)``, ``second(fn)`` are functions of the rows of ``data(split)``.
    For image-label the rows are (images, labels); for halves, whole images (so that the
    training loop's per-minibatch binarization draws both halves together), split by
    ``mask`` (True on the top half).

    Args:
        modalities (str): a key of ``MODALITIES``.
        data (pyrolvm.data.Dataset): the images (with labels, for ``"image-label"``).

    Raises:
        ConfigError: ``"halves"`` of data without an image shape.
    """

    def __init__(self, modalities: str, data: Dataset) -> None:
        self.modalities, self.names = modalities, MODALITIES[modalities]
        halves = modalities == "halves"
        self.mask = top_mask(data.image_shape, data.train.device) if halves else None
        self.dataset = data

    def data(self, split: str) -> Any:
        """The ``split`` (``"train"`` or ``"test"``) tensors."""
        images = getattr(self.dataset, split)
        if self.mask is not None:
            return images
        return images, getattr(self.dataset, f"{split}_labels")

    def joint(self, fn: Callable) -> Callable:
        """``fn`` of both modalities."""
        if self.mask is None:
            return fn
        top, bottom = mask_columns(self.mask)  # (found once: no sync per call)
        return lambda images: fn(images[:, top], images[:, bottom])

    def first(self, fn: Callable) -> Callable:
        """``fn`` of the first modality alone."""
        if self.mask is None:
            return image_only(fn)
        top, _ = mask_columns(self.mask)
        return lambda images: fn(images[:, top], None)

    def second(self, fn: Callable) -> Callable:
        """``fn`` of the second modality alone."""
        if self.mask is None:
            return label_only(fn)
        _, bottom = mask_columns(self.mask)
        return lambda images: fn(None, images[:, bottom])


def objectives(
    model: Callable, guide: Any, pairing: Pairing, posterior: str, objective: Callable[[], ELBO]
) -> list[tuple[Callable, Callable, ELBO]]:
    """The (model, guide, objective) triples of one training step, each with a fresh
    ``objective()``: for the product of experts (``posterior="poe"``) the joint and each
    modality alone (Wu & Goodman 2018, section 2.2: for two modalities the sub-sampled set is
    every subset); for the mixture (``"moe"``) the joint, one stratum per expert (Shi et al.
    2019, section 3)."""
    if posterior == "moe":
        return [
            (pairing.joint(model), pairing.joint(guide.stratum(m)), objective()) for m in (0, 1)
        ]
    return [
        (pairing.joint(model), pairing.joint(guide), objective()),
        (pairing.first(model), pairing.first(guide), objective()),
        (pairing.second(model), pairing.second(guide), objective()),
    ]


def multimodal_scores(
    model: Callable,
    guide: Callable,
    pairing: Pairing,
    num_samples: int,
    batch_size: int,
    seed: int,
) -> dict[str, float]:
    """Test figures of a two-modality model, nats per test datapoint with ``*_stderr``, for
    modalities a, b: importance-sampled (K = ``num_samples``, seeded by ``seed``, ``seed + 1``,
    ``seed + 2``) ``joint_nll`` -log p(a, b), ``{a}_nll`` -log p(a), ``{b}_nll`` -log p(b),
    and the conditionals ``{b}_given_{a}_nll`` -log p(b | a), the self-normalized estimate
    ``log sum_k w_k - log sum_k w_k p(b | z_k)`` with z_k ~ q(z | a) and w_k = p(a, z_k) /
    q(z_k | a) (the joint and the marginal importance-sampled with the *same* draws;
    consistent as K grows, not a bound), and ``{a}_given_{b}_nll`` = ``joint_nll -
    {b}_nll`` (q(z | label) is far too broad a proposal for the image's likelihood, while
    log p(label) is estimated well by it). For the halves both conditionals are the
    differences of the joint and the marginal, and the self-normalized estimates, far looser
    at small K (a half's likelihood is too sharp for the other half's posterior as a
    proposal), are ``*_snis_nll``; ``eval_samples``."""
    a, b = pairing.names
    test = pairing.data("test")
    options: dict[str, Any] = dict(num_samples=num_samples, batch_size=batch_size)
    pyro.set_rng_seed(seed)
    joint = importance_sample(pairing.joint(model), pairing.joint(guide), test, **options)
    joint = joint.log_likelihood
    # the same seed, so the same draws z_k ~ q(z | a) in both calls
    pyro.set_rng_seed(seed + 1)
    first = importance_sample(pairing.first(model), pairing.first(guide), test, **options)
    pyro.set_rng_seed(seed + 1)
    both = importance_sample(pairing.joint(model), pairing.first(guide), test, **options)
    pyro.set_rng_seed(seed + 2)
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
        values[f"{b}_given_{a}_snis_nll"] = values.pop(f"{b}_given_{a}_nll")
        pyro.set_rng_seed(seed + 2)
        both = importance_sample(pairing.joint(model), pairing.second(guide), test, **options)
        values[f"{a}_given_{b}_snis_nll"] = second.log_likelihood - both.log_likelihood
        values[f"{b}_given_{a}_nll"] = first.log_likelihood - joint
        values[f"{a}_given_{b}_nll"] = second.log_likelihood - joint
    out: dict[str, float] = {"eval_samples": num_samples}
    for name, value in values.items():
        out[name], out[name + "_stderr"] = mean_and_stderr(value)
    return out


def mvae_scores(
    model: Any,
    guide: Any,
    data: Dataset,
    modalities: str,
    num_samples: int,
    batch_size: int,
    seed: int,
) -> dict[str, float]:
    """:func:`multimodal_scores` of a two-modality VAE on ``data`` (its ``modalities``); for an
    image and its label, the label weighted 1, and ``accuracy`` (image -> label: argmax of
    p(label | z) at the mean of q(z | image))."""
    pairing = Pairing(modalities, data)
    if modalities == "halves":
        return multimodal_scores(model, guide, pairing, num_samples, batch_size, seed)
    weight, model.label_weight = model.label_weight, 1.0
    try:
        out = multimodal_scores(model, guide, pairing, num_samples, batch_size, seed)
        with torch.no_grad():
            loc = guide.encode(data.test, None)[0]
            accuracy = (model.label_logits(loc).argmax(-1) == data.test_labels).double().mean()
        return {"accuracy": accuracy.item()} | out
    finally:
        model.label_weight = weight
