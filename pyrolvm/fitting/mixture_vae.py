"""Unsupervised clustering with a mixture-prior VAE (VaDE-style): train with the component
enumerated, initialize the prior with a Gaussian mixture fitted to draws from q(z | x), train
on, and score the clusters against the labels."""

import time
from collections.abc import Sequence
from typing import Any

import pyro
import torch
from pyro.infer import TraceEnum_ELBO

from ..data import Dataset
from ..guides import AmortizedNormal
from ..inference import make_optim, train
from ..models.mixture_vae import MixturePriorVAE
from .mixture import fit_mixture


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
) -> tuple[MixturePriorVAE, AmortizedNormal, dict]:
    """Train a :class:`~pyrolvm.models.MixturePriorVAE` with an
    :class:`~pyrolvm.guides.AmortizedNormal` guide under
    ``TraceEnum_ELBO`` on dynamically binarized ``data.train``: ``warmup_epochs`` epochs, then
    the prior is set to a diagonal Gaussian mixture fitted (:func:`fit_mixture`) to one draw
    from q(z | x) of every training image, then ``epochs`` more epochs with a fresh Adam at
    ``lr * finetune_lr_ratio``.

    Args:
        data (pyrolvm.data.Dataset): images in [0, 1] with ``test_labels``.

    Returns:
        (model, guide, metrics): ``test_cluster_accuracy``, ``test_ari`` of the test images'
        MAP clusters (:func:`cluster_scores`), the same right after the prior's initialization
        (``init_``), ``train_elbo`` curve and ``seconds``.
    """
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    t0 = time.perf_counter()
    model = MixturePriorVAE(data.data_dim, latent_dim, num_components, hidden)
    guide = AmortizedNormal(data.data_dim, latent_dim, hidden, "relu")
    model.to(data.train.device)
    guide.to(data.train.device)
    loss = TraceEnum_ELBO(max_plate_nesting=1)
    optim = make_optim(lr)
    history = train(
        model,
        guide,
        data.train,
        loss,
        optim,
        epochs=warmup_epochs,
        batch_size=batch_size,
        transform=data.train_transform,
        progress=progress,
    )
    with torch.no_grad():
        # draws from q(z | x), not the means: the prior must cover the aggregate posterior,
        # whose spread includes the encoder's scales
        loc, scale = guide.encode(data.train)
        draws = loc + scale * torch.randn_like(loc)
    store = pyro.get_param_store().get_state()
    gmm = fit_mixture(draws.cpu(), num_components, "diag", epochs=100, seed=seed)
    pyro.get_param_store().set_state(store)  # fit_mixture used the param store
    model.set_prior(gmm.params["weights"], gmm.params["locs"], gmm.params["scales"])
    metrics: dict[str, Any] = cluster_scores(model, guide, data.test, data.test_labels, "init_")
    # a fresh optimizer (the old moments belong to the random prior) at a lower rate
    optim = make_optim(lr * finetune_lr_ratio)
    history = train(
        model,
        guide,
        data.train,
        loss,
        optim,
        epochs=epochs,
        batch_size=batch_size,
        transform=data.train_transform,
        progress=progress,
        history=history,
    )
    metrics.update(cluster_scores(model, guide, data.test, data.test_labels))
    metrics["train_elbo"] = history["train_elbo"]
    metrics["seconds"] = time.perf_counter() - t0
    return model, guide, metrics
