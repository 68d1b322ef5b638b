"""Unsupervised clustering with a mixture-prior VAE (VaDE-style): train with the component
enumerated, initialize the prior with a Gaussian mixture fitted to draws from q(z | x), train
on, and score the clusters against the labels."""

import time
from collections.abc import Callable, Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import Trace_ELBO, TraceEnum_ELBO

from ..data import Dataset
from ..errors import ConfigError
from ..guides import AmortizedNormal, empty_guide
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
    checkpoint: Callable[[dict], None] | None = None,
    resume_from: dict | None = None,
) -> tuple[MixturePriorVAE, AmortizedNormal, dict]:
    """Train a :class:`~pyrolvm.models.MixturePriorVAE` with an
    :class:`~pyrolvm.guides.AmortizedNormal` guide under
    ``TraceEnum_ELBO`` on dynamically binarized ``data.train``: ``warmup_epochs`` epochs, then
    the prior is set to a diagonal Gaussian mixture fitted (:func:`fit_mixture`) to one draw
    from q(z | x) of every training image, then ``epochs`` more epochs with a fresh Adam at
    ``lr * finetune_lr_ratio``.

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
        checkpoint (callable or None): called with ``{"phase": "warmup" | "finetune",
            "train": state}`` (``state`` of :func:`pyrolvm.inference.train`; the fine-tuning
            phase adds ``"init_metrics"``, the scores right after the prior's fit) wherever
            ``train`` checkpoints: at the end of every epoch and on SIGINT/SIGTERM.
        resume_from (dict or None): such a dict: the run continues from it and ends bitwise
            equal to the uninterrupted one (the prior's fit is repeated from the same random
            state when the warm-up had ended, skipped in the fine-tuning phase).

    Returns:
        (model, guide, metrics): ``test_cluster_accuracy``, ``test_ari`` of the test images'
        MAP clusters (:func:`cluster_scores`), the same right after the prior's initialization
        (``init_``), ``train_elbo`` curve (the warm-up's bound: the reconstruction term alone
        after an autoencoder pre-training) and ``seconds``.

    Raises:
        ConfigError: an unknown ``pretrain`` or ``prior_init``, or a ``resume_from`` of
            another phase.
        TrainingDiverged, Interrupted: as :func:`pyrolvm.inference.train` (``checkpoint`` was
            called first).
    """
    for value, choices, what in (
        (pretrain, PRETRAININGS, "pretraining"),
        (prior_init, PRIOR_INITS, "prior initialization"),
    ):
        if value not in choices:
            raise ConfigError(f"unknown {what} {value!r}: choose one of {', '.join(choices)}")
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    t0 = time.perf_counter()
    model = MixturePriorVAE(data.data_dim, latent_dim, num_components, hidden)
    guide = AmortizedNormal(data.data_dim, latent_dim, hidden, "relu")
    model.to(data.train.device)
    guide.to(data.train.device)
    loss = TraceEnum_ELBO(max_plate_nesting=1)
    optim = make_optim(lr)
    warm_up = (
        (autoencoder(model, guide), empty_guide, Trace_ELBO())
        if pretrain == "autoencoder"
        else (model, guide, loss)
    )
    phase = resume_from["phase"] if resume_from is not None else "warmup"
    if phase not in ("warmup", "finetune"):
        raise ConfigError(f"the checkpoint's phase {phase!r} is not one of a mixture-VAE fit")

    def save(name: str, **more: Any) -> Callable[[dict], None] | None:
        write = checkpoint
        if write is None:
            return None
        return lambda state: write({"phase": name, "train": state, **more})

    if phase == "warmup":
        history = train(
            *warm_up[:2],
            data.train,
            warm_up[2],
            optim,
            epochs=warmup_epochs,
            batch_size=batch_size,
            transform=data.train_transform,
            progress=progress,
            checkpoint=save("warmup"),
            resume_from=resume_from and resume_from["train"],
        )
        with torch.no_grad():
            # by default draws from q(z | x), not the means: the prior must cover the
            # aggregate posterior, whose spread includes the encoder's scales (VaDE fits the
            # means: after an autoencoder pre-training the scales are untrained)
            loc, scale = guide.encode(data.train)
            draws = loc + scale * torch.randn_like(loc) if prior_init == "draws" else loc
        store = pyro.get_param_store().get_state()
        gmm = fit_mixture(draws.cpu(), num_components, "diag", epochs=100, seed=seed)
        pyro.clear_param_store()  # fit_mixture used the param store: back to ours alone
        pyro.get_param_store().set_state(store)
        model.set_prior(gmm.params["weights"], gmm.params["locs"], gmm.params["scales"])
        metrics: dict[str, Any] = cluster_scores(model, guide, data.test, data.test_labels, "init_")
        finetune_from = None
    else:  # the fine-tuning phase: its state holds the fitted prior and the warm-up's curve
        assert resume_from is not None
        history, metrics = None, dict(resume_from["init_metrics"])
        finetune_from = resume_from["train"]
    # a fresh optimizer (the old moments belong to the random prior) at a lower rate
    history = train(
        model,
        guide,
        data.train,
        loss,
        make_optim(lr * finetune_lr_ratio),
        epochs=epochs,
        batch_size=batch_size,
        transform=data.train_transform,
        progress=progress,
        history=history,
        checkpoint=save("finetune", init_metrics=dict(metrics)),
        resume_from=finetune_from,
    )
    metrics.update(cluster_scores(model, guide, data.test, data.test_labels))
    metrics["train_elbo"] = history["train_elbo"]
    metrics["seconds"] = time.perf_counter() - t0
    return model, guide, metrics
