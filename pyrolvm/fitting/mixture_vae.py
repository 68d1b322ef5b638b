"""Unsupervised clustering with a mixture-prior VAE (VaDE-style): train with the component
enumerated, initialize the prior with a Gaussian mixture fitted to draws from q(z | x), train
on, and score the clusters against the labels."""

import time
from collections.abc import Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import Trace_ELBO, TraceEnum_ELBO

from ..data import Dataset
from ..errors import ConfigError
from ..guides import AmortizedNormal, empty_guide
from ..models.mixture_vae import MixturePriorVAE
from .mixture import fit_mixture
from .svi import fit_svi


def cluster_accuracy(labels: torch.Tensor, clusters: torch.Tensor) -> float:
    """Accuracy under the best one-to-one mapping of clusters to labels (Hungarian algorithm,
    ``scipy.optimize.linear_sum_assignment``), as in Xie et al. (2016) and Jiang et al. (2017).

    Args:
        labels, clusters (torch.Tensor): (N,) int64 classes and cluster indices.

    Returns:
        float in [0, 1].
    """
    from scipy.optimize import linear_sum_assignment

    k = int(max(labels.max(), clusters.max())) + 1
    labels, clusters = labels.cpu(), clusters.cpu()
    counts = torch.zeros(k, k, dtype=torch.int64)
    counts.index_put_((clusters, labels), torch.ones_like(labels), accumulate=True)
    rows, cols = linear_sum_assignment(-counts.numpy())
    return counts[rows, cols].sum().item() / len(labels)


@torch.no_grad()
def cluster(model: MixturePriorVAE, guide: AmortizedNormal, x: torch.Tensor) -> torch.Tensor:
    """MAP cluster of each row of x: argmax_c p(c | z = encoder mean), shape (N,)."""
    return model.cluster_posterior(guide.encode(x)[0]).argmax(-1)


def cluster_scores(
    model: MixturePriorVAE,
    guide: AmortizedNormal,
    x: torch.Tensor,
    labels: torch.Tensor,
    prefix: str = "",
) -> dict[str, float]:
    """``{prefix}test_cluster_accuracy`` (:func:`cluster_accuracy`) and ``{prefix}test_ari``
    (adjusted Rand index, ``sklearn.metrics.adjusted_rand_score``) of the MAP clusters of x."""
    from sklearn.metrics import adjusted_rand_score

    c = cluster(model, guide, x)
    return {
        f"{prefix}test_cluster_accuracy": cluster_accuracy(labels, c),
        f"{prefix}test_ari": float(adjusted_rand_score(labels.cpu().numpy(), c.cpu().numpy())),
    }


#: The ``pretrain`` choices of :func:`fit_mixture_vae`.
PRETRAININGS = ("vae", "autoencoder")
#: The ``prior_init`` choices of :func:`fit_mixture_vae`.
PRIOR_INITS = ("draws", "means")


def autoencoder(model: MixturePriorVAE, guide: AmortizedNormal):
    """The deterministic autoencoder of a mixture-prior VAE, as a Pyro model without latent
    sites: x is scored under the decoder at z = the encoder's mean, so its ``Trace_ELBO`` loss
    with :func:`~pyrolvm.guides.empty_guide` is the reconstruction loss (binary
    cross-entropy summed over the pixels, nats). VaDE's pre-training (Jiang et al. 2017,
    section 4.1) trains the encoder's mean and the decoder this way.

    Returns:
        callable: ``autoencoder(x)`` for x of shape (B, D), one ``pyro.plate("data", B)``.
    """

    def reconstruct(x):
        pyro.module(model.name, model)
        pyro.module(guide.name, guide)
        with pyro.plate("data", x.shape[0]):
            z = guide.encode(x)[0]
            pyro.sample("x", dist.Bernoulli(logits=model.decoder(z)).to_event(1), obs=x)

    return reconstruct


def warm_up(
    model: MixturePriorVAE,
    guide: AmortizedNormal,
    data: Dataset,
    pretrain: str = "vae",
    lr: float = 1e-3,
    **train_options: Any,
) -> dict:
    """Phase 1 of :func:`fit_mixture_vae`: the mixture-prior VAE under its ELBO (the component
    enumerated, the prior still random; ``pretrain="vae"``) or its deterministic
    ``autoencoder`` under the reconstruction loss (``"autoencoder"``, VaDE), on
    dynamically binarized ``data.train``, by :func:`~pyrolvm.fitting.fit_svi` with
    ``train_options`` (``epochs``, ``batch_size``, ``checkpoint``, ...).

    Raises:
        ConfigError: an unknown ``pretrain``.
    """
    check_choice(pretrain, PRETRAININGS, "pretraining")
    if pretrain == "autoencoder":
        pair, loss = (autoencoder(model, guide), empty_guide), Trace_ELBO()
    else:
        pair, loss = (model, guide), TraceEnum_ELBO(max_plate_nesting=1)
    return fit_svi(*pair, data.train, loss, lr=lr, transform=data.train_transform, **train_options)


def init_prior(
    model: MixturePriorVAE,
    guide: AmortizedNormal,
    data: Dataset,
    num_components: int,
    prior_init: str = "draws",
    seed: int = 0,
) -> dict[str, float]:
    """Phase 2 of :func:`fit_mixture_vae`: set the model's prior to a diagonal Gaussian mixture
    fitted (:func:`fit_mixture`, 100 epochs, seeded by ``seed``) to one draw from q(z | x) of
    every training image (``prior_init="draws"``) or to the encoder's means (``"means"``),
    Pyro's param store left as it was; returns the test clusters' scores right after
    (:func:`cluster_scores`, prefix ``init_``).

    Raises:
        ConfigError: an unknown ``prior_init``.
    """
    check_choice(prior_init, PRIOR_INITS, "prior initialization")
    with torch.no_grad():
        # by default draws from q(z | x), not the means: the prior must cover the aggregate
        # posterior, whose spread includes the encoder's scales (VaDE fits the means: after
        # an autoencoder pre-training the scales are untrained)
        loc, scale = guide.encode(data.train)
        draws = loc + scale * torch.randn_like(loc) if prior_init == "draws" else loc
    store = pyro.get_param_store().get_state()
    gmm = fit_mixture(draws.cpu(), num_components, "diag", epochs=100, seed=seed)
    pyro.clear_param_store()  # fit_mixture used the param store: back to ours alone
    pyro.get_param_store().set_state(store)
    model.set_prior(gmm.params["weights"], gmm.params["locs"], gmm.params["scales"])
    return cluster_scores(model, guide, data.test, data.test_labels, "init_")


def fine_tune(
    model: MixturePriorVAE,
    guide: AmortizedNormal,
    data: Dataset,
    lr: float = 1e-4,
    **train_options: Any,
) -> dict:
    """Phase 3 of :func:`fit_mixture_vae`: the mixture-prior VAE under its ELBO (the component
    enumerated) with a fresh Adam (the old moments belong to the random prior) at ``lr``,
    by :func:`~pyrolvm.fitting.fit_svi` with ``train_options`` (``history`` continues the
    warm-up's curve)."""
    loss = TraceEnum_ELBO(max_plate_nesting=1)
    return fit_svi(
        model, guide, data.train, loss, lr=lr, transform=data.train_transform, **train_options
    )


def check_choice(value: str, choices: tuple[str, ...], what: str) -> None:
    """Raise :class:`~pyrolvm.ConfigError` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ConfigError(f"unknown {what} {value!r}: choose one of {', '.join(choices)}")


def fit_mixture_vae(
    data: Dataset,
    num_components: int = 10,
    latent_dim: int = 10,
    hidden: Sequence[int] = (500, 500),
    warmup_epochs: int = 5,
    epochs: int = 20,
    batch_size: int = 100,
    lr: float = 1e-3,
    finetune_lr_ratio: float = 0.1,
    seed: int = 0,
    progress: bool = False,
    pretrain: str = "vae",
    prior_init: str = "draws",
) -> tuple[MixturePriorVAE, AmortizedNormal, dict]:
    """Train a :class:`~pyrolvm.models.MixturePriorVAE` with an
    :class:`~pyrolvm.guides.AmortizedNormal` guide under ``TraceEnum_ELBO`` on dynamically
    binarized ``data.train``: ``warmup_epochs`` epochs (:func:`warm_up`), then the prior set to
    a diagonal Gaussian mixture fitted to one draw from q(z | x) of every training image
    (:func:`init_prior`), then ``epochs`` more epochs with a fresh Adam at
    ``lr * finetune_lr_ratio`` (:func:`fine_tune`). (``pyrolvm train mixture-vae`` runs the
    three phases as resumable stages.)

    VaDE's protocol (Jiang et al. 2017, section 4.1) is ``pretrain="autoencoder"`` (the
    warm-up trains the deterministic ``autoencoder`` of this module: encoder means and decoder
    under the reconstruction loss) with ``prior_init="means"`` (the mixture is fitted to the
    encoder's means, the autoencoder's codes) and ``finetune_lr_ratio=1``.

    Args:
        data (pyrolvm.data.Dataset): images in [0, 1] with ``test_labels``.
        pretrain (str): ``"vae"`` (the warm-up trains the mixture-prior VAE itself under its
            ELBO, the prior still random) or ``"autoencoder"`` (above).
        prior_init (str): fit the mixture to one draw from q(z | x) per training image
            (``"draws"``) or to the encoder's means (``"means"``).

    Returns:
        (model, guide, metrics): ``test_cluster_accuracy``, ``test_ari`` of the test images'
        MAP clusters (:func:`cluster_scores`), the same right after the prior's initialization
        (``init_``), ``train_elbo`` curve (the warm-up's bound: the reconstruction term alone
        after an autoencoder pre-training) and ``seconds``.

    Raises:
        ConfigError: an unknown ``pretrain`` or ``prior_init``.
        TrainingDiverged, Interrupted: as :func:`pyrolvm.inference.train`.
    """
    check_choice(pretrain, PRETRAININGS, "pretraining")
    check_choice(prior_init, PRIOR_INITS, "prior initialization")
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    t0 = time.perf_counter()
    model = MixturePriorVAE(data.data_dim, latent_dim, num_components, hidden)
    guide = AmortizedNormal(data.data_dim, latent_dim, hidden, "relu")
    model.to(data.train.device)
    guide.to(data.train.device)
    options: dict[str, Any] = dict(batch_size=batch_size, progress=progress)
    history = warm_up(model, guide, data, pretrain, lr, epochs=warmup_epochs, **options)
    metrics: dict[str, Any] = init_prior(model, guide, data, num_components, prior_init, seed)
    lr_tune = lr * finetune_lr_ratio
    history = fine_tune(model, guide, data, lr_tune, epochs=epochs, history=history, **options)
    metrics.update(cluster_scores(model, guide, data.test, data.test_labels))
    metrics["train_elbo"] = history["train_elbo"]
    metrics["seconds"] = time.perf_counter() - t0
    return model, guide, metrics
