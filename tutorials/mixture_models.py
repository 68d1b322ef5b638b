# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Gaussian mixtures with enumerated assignments: SVI against EM
#
# A Gaussian mixture picks a component $z_n \sim \mathrm{Categorical}(\pi)$ and draws
# $x_n \mid z_n \sim \mathcal N(\mu_{z_n}, \Sigma_{z_n})$. The assignment is discrete, so there
# is no reparameterized gradient for it, and a score-function estimator would be noisy. Pyro's
# `TraceEnum_ELBO` sidesteps both: the model marks `z` with
# `infer={"enumerate": "parallel"}`, and the ELBO sums it out *exactly*, giving
#
# $$\log p(x_n \mid \theta) = \log \sum_k \pi_k\, \mathcal N(x_n; \mu_k, \Sigma_k)$$
#
# for every datapoint. With a point-mass (MAP) guide on $\theta = (\pi, \mu, \Sigma)$ the loss is
# exactly $-\sum_n \log p(x_n \mid \theta) - \log p(\theta)$, so SVI is gradient ascent on the
# same objective that EM climbs (plus weak priors). This tutorial
#
# 1. fits `pyrolvm.models.GaussianMixture` by SVI and scikit-learn's EM on the same data and
#    compares held-out log-likelihoods (nats per point);
# 2. chooses K by held-out log-likelihood and by BIC;
# 3. shows the posterior responsibilities $p(z_n \mid x_n)$ and `infer_discrete` assignments on
#    a 2-D projection;
# 4. trains the semi-supervised VAE M2 (Kingma et al. 2014), whose label is enumerated when
#    unobserved, with few labels and compares its test accuracy with the published figures;
# 5. clusters images with a VAE whose prior is a Gaussian mixture with the component enumerated
#    (VaDE-style, Jiang et al. 2017).
#
# Run it as a script (`python tutorials/mixture_models.py`) or open it as a notebook with
# jupytext. `PYROLVM_TUTORIAL_FAST=1` runs a small version (used by the tests);
# `PYROLVM_TUTORIAL_OUT=DIR` sets where the PNG figures go (default `tutorials/figures`).
# `PYROLVM_TUTORIAL_SECTIONS=m2,clustering` runs only some parts (`gmm`, `m2`, `clustering`;
# default all). In full mode sections 4 and 5 train on MNIST, read from `PYROLVM_DATA_ROOT`
# (default `/work/shared/data`, torchvision's `MNIST/raw` layout).

# %%
import json
import os
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyro  # noqa: E402
import torch  # noqa: E402
from pyro.infer import TraceEnum_ELBO  # noqa: E402
from sklearn.mixture import GaussianMixture as SKGaussianMixture  # noqa: E402

from pyrolvm import plots  # noqa: E402
from pyrolvm.data import load  # noqa: E402
from pyrolvm.errors import ConfigError  # noqa: E402
from pyrolvm.fitting import fit_mixture  # noqa: E402
from pyrolvm.guides import MixtureMAP  # noqa: E402
from pyrolvm.models import GaussianMixture  # noqa: E402
from pyrolvm.runs.gmm import project  # noqa: E402

FAST = os.environ.get("PYROLVM_TUTORIAL_FAST") == "1"
# as a script, next to this file; as a notebook (no __file__), next to the notebook
HERE = os.path.dirname(os.path.abspath(__file__)) if "__file__" in globals() else os.getcwd()
OUT = os.environ.get("PYROLVM_TUTORIAL_OUT", os.path.join(HERE, "figures"))
os.makedirs(OUT, exist_ok=True)
torch.set_num_threads(1)
pyro.set_rng_seed(0)
EPOCHS = 20 if FAST else 300
SECTIONS = set(os.environ.get("PYROLVM_TUTORIAL_SECTIONS", "gmm,m2,clustering").split(","))
if not SECTIONS.issubset({"gmm", "m2", "clustering"}):
    raise ConfigError(
        f"PYROLVM_TUTORIAL_SECTIONS takes a comma-separated subset of gmm, m2, "
        f"clustering; got {sorted(SECTIONS)}"
    )
DATA_ROOT = os.environ.get("PYROLVM_DATA_ROOT", "/work/shared/data")

# %% [markdown]
# ## Data: handwritten digits projected by PCA
#
# scikit-learn's 8x8 digits (1437 training, 360 test images), projected to 10 dimensions by a
# PCA fitted on the training split only; the test images go through the same projection.

# %%
data = load("digits")
xtrain, xtest, pca = project(data, 10)
print(
    f"train {tuple(xtrain.shape)}, test {tuple(xtest.shape)}, "
    f"variance kept {pca.explained_variance_ratio_.sum():.1%}"
)

# %% [markdown]
# ## The ELBO is the log-likelihood
#
# Before training anything: take EM's solution, hand it to a MAP guide, and check that
# `TraceEnum_ELBO`'s loss is minus the exact log-likelihood minus the log-prior.

# %%
if "gmm" in SECTIONS:
    K = 10
    em = SKGaussianMixture(K, covariance_type="full", n_init=1 if FAST else 5, random_state=0)
    t0 = time.perf_counter()
    em.fit(xtrain.double().numpy())
    em_seconds = time.perf_counter() - t0
    model = GaussianMixture.from_data(xtrain, K, "full")
    em_params = model.params_from_moments(em.weights_, em.means_, em.covariances_)
    guide = MixtureMAP(model, em_params)
    theta = guide.median()
    loss = TraceEnum_ELBO(max_plate_nesting=1).loss(model, guide, xtrain, torch.arange(len(xtrain)))
    log_lik = model.log_likelihood(xtrain, theta).double().sum().item()
    print(
        f"TraceEnum_ELBO loss {loss:.3f}; -(log-likelihood) {-log_lik:.3f}; difference "
        f"{loss + log_lik:.3f} nats = -log p(theta) (the priors)"
    )
    print(
        f"EM mean train log-likelihood: ours {log_lik / len(xtrain):.5f}, "
        f"sklearn score {em.score(xtrain.double().numpy()):.5f}"
    )

# %% [markdown]
# ## SVI with enumeration against EM
#
# `fit_mixture` starts from k-means clusters, as scikit-learn's EM does (random starts let
# components collapse onto a few points, pyro-ppl/pyro#635), takes full-batch Adam steps with
# a warmed-up, decaying learning rate, and records the exact training log-likelihood after
# every epoch. We also fit with minibatches of 200 under the subsampled plate, as one would for
# data too large for full-batch EM.

# %%
if "gmm" in SECTIONS:
    fits = {}
    settings = {
        "SVI full batch": dict(),
        "SVI minibatch 200": dict(batch_size=200, epochs=EPOCHS // 5),
    }
    for name, kw in settings.items():
        kw.setdefault("epochs", EPOCHS)
        fit = fit_mixture(xtrain, K, "full", seed=0, **kw)
        fits[name] = fit
        print(
            f"{name:>18}: test log-likelihood "
            f"{fit.model.log_likelihood(xtest, fit.params).mean():.3f} nats/point, "
            f"{fit.seconds:.1f} s"
        )
    em_test = em.score(xtest.double().numpy())
    print(
        f"{'sklearn EM':>18}: test log-likelihood {em_test:.3f} nats/point, {em_seconds:.1f} s "
        f"({em.n_iter_} EM iterations, best of {em.n_init})"
    )

# %%
if "gmm" in SECTIONS:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, fit in fits.items():
        curve = fit.history["train_log_likelihood"]
        steps_per_epoch = 1 if "full" in name else -(-len(xtrain) // 200)
        ax.plot([steps_per_epoch * (i + 1) for i in range(len(curve))], curve, label=name)
    ax.axhline(em.score(xtrain.double().numpy()), color="black", ls="--", label="EM (converged)")
    ax.set_xscale("log")
    ax.set_xlabel("optimizer steps")
    ax.set_ylabel("train log-likelihood (nats/point)")
    ax.set_ylim(em.score(xtrain.double().numpy()) - 1.5, em.score(xtrain.double().numpy()) + 0.3)
    ax.set_title("SVI with enumerated assignments reaches EM's optimum", fontsize=10)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(OUT, "mixture_svi_vs_em.png"), dpi=120)

# %% [markdown]
# ![mixture svi vs em](figures/mixture_svi_vs_em.png)
#
# *Training log-likelihood of SVI (full batch and minibatches) against optimizer steps, with EM's
# converged value. Full run.*

# %% [markdown]
# ## Where SVI starts matters
#
# Gradient ascent, like EM, stops at a local optimum. Random starts (K datapoints as centres)
# are the collapse that users meet (pyro-ppl/pyro#635); the k-means++ seeding alone is better;
# Lloyd's k-means from that seeding (the default, and scikit-learn's) is better still.

# %%
if "gmm" in SECTIONS:
    for init in ("random", "kmeans++", "kmeans"):
        fit = fit_mixture(xtrain, 3 if FAST else 12, "full", init=init, epochs=EPOCHS, seed=0)
        print(
            f"init {init:>8}: train {fit.restarts[0]:.3f}, test "
            f"{fit.model.log_likelihood(xtest, fit.params).mean():.3f} nats/point"
        )

# %% [markdown]
# ## How many components? Held-out log-likelihood and BIC
#
# For each K: our MAP fit and EM on the same 10-D projection, each the best of the same number
# of restarts (both methods climb to local optima; with a single start either can land in a
# visibly worse one at some K). The held-out log-likelihood keeps rising slowly with K while
# BIC, $-2 \sum_n \log p(x_n) + P \log N$, charges for the
# $P = (K - 1) + K D + K D (D + 1) / 2$ parameters and has a minimum.

# %%
if "gmm" in SECTIONS:
    ks = [1, 2] if FAST else [1, 2, 4, 6, 8, 10, 12, 15, 20]
    N_INIT = 1 if FAST else 3
    rows = []
    for k in ks:
        fit = fit_mixture(xtrain, k, "full", epochs=EPOCHS, n_init=N_INIT, seed=0)
        sk = SKGaussianMixture(k, covariance_type="full", n_init=N_INIT, random_state=0).fit(
            xtrain.double().numpy()
        )
        rows.append(
            dict(
                k=k,
                test=fit.model.log_likelihood(xtest, fit.params).mean().item(),
                bic=fit.model.bic(xtrain, fit.params),
                sk_test=sk.score(xtest.double().numpy()),
                sk_bic=sk.bic(xtrain.double().numpy()),
            )
        )
        print(
            f"K={k:>2}: test log-lik {rows[-1]['test']:8.3f} (EM {rows[-1]['sk_test']:8.3f})  "
            f"BIC {rows[-1]['bic']:9.1f} (EM {rows[-1]['sk_bic']:9.1f})"
        )

# %%
if "gmm" in SECTIONS:
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.5))
    a1.plot(ks, [r["test"] for r in rows], "o-", label="SVI, enumerated (MAP)")
    a1.plot(ks, [r["sk_test"] for r in rows], "s--", label="EM (scikit-learn)")
    a1.set_xlabel("K")
    a1.set_ylabel("test log-likelihood (nats/point)")
    a1.legend()
    a2.plot(ks, [r["bic"] for r in rows], "o-", label="SVI, enumerated (MAP)")
    a2.plot(ks, [r["sk_bic"] for r in rows], "s--", label="EM (scikit-learn)")
    best = min(rows, key=lambda r: r["bic"])
    a2.axvline(best["k"], color="gray", ls=":", label=f"min BIC: K={best['k']}")
    a2.set_xlabel("K")
    a2.set_ylabel("BIC (train)")
    a2.legend()
    for a in (a1, a2):
        a.grid(alpha=0.3)
    fig.suptitle(
        f"digits, PCA to 10 dimensions, full covariances, best of {N_INIT} starts each", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(os.path.join(OUT, "mixture_loglik_bic_vs_k.png"), dpi=120)

# %% [markdown]
# ![mixture loglik bic vs k](figures/mixture_loglik_bic_vs_k.png)
#
# *Test log-likelihood (left) and BIC (right) against the number of components K, SVI and EM. Full
# run.*

# %% [markdown]
# ## Responsibilities on a 2-D projection
#
# On the first two principal components the clusters overlap, and the responsibilities
# $p(z_n = k \mid x_n)$ show where. Left: points coloured by their MAP component (from
# `infer_discrete` with temperature 0, which equals the argmax of the responsibilities), with
# the components' 1 and 2 standard-deviation ellipses. Right: the largest responsibility of each
# point; pale points sit between components, where a draw from `infer_discrete` with
# temperature 1 changes from sample to sample.

# %%
if "gmm" in SECTIONS:
    x2, x2_test, _ = project(data, 2)
    fit2 = fit_mixture(x2, 6, "full", epochs=EPOCHS, seed=0)
    resp = fit2.model.responsibilities(x2, fit2.params)
    z_map = fit2.model.assign(x2, fit2.params, temperature=0)
    assert torch.equal(z_map, resp.argmax(-1))
    z_draws = torch.stack([fit2.model.assign(x2, fit2.params, temperature=1) for _ in range(20)])
    changes = (z_draws != z_map).float().mean(0)
    print(
        f"points whose sampled assignment differs from the MAP one in >= 1 of 20 draws: "
        f"{(changes > 0).float().mean():.1%}"
    )
    plots.mixture_clusters(
        os.path.join(OUT, "mixture_clusters_2d.png"),
        x2,
        z_map,
        fit2.params["locs"],
        fit2.model.covariances(fit2.params),
        "digits on principal axes 1-2: MAP components (K=6)",
    )

    fig, ax = plt.subplots(figsize=(5.5, 5))
    sc = ax.scatter(x2[:, 0], x2[:, 1], c=resp.max(-1).values, cmap="viridis", s=6, vmin=0, vmax=1)
    fig.colorbar(sc, ax=ax, label="max_k p(z = k | x)")
    ax.set_xlabel("projection 1")
    ax.set_ylabel("projection 2")
    ax.set_title("responsibility of the MAP component", fontsize=10)
    fig.tight_layout()
    fig.savefig(os.path.join(OUT, "mixture_responsibilities_2d.png"), dpi=120)

# %% [markdown]
# ![mixture clusters 2d](figures/mixture_clusters_2d.png)
#
# *Test points on the first two principal axes, coloured by their MAP component, with the
# components' ellipses. Full run.*

# %% [markdown]
# ![mixture responsibilities 2d](figures/mixture_responsibilities_2d.png)
#
# *Responsibility of the MAP component for each test point, on the 2-D projection. Full run.*

# %% [markdown]
# ## Semi-supervised M2
#
# M2 (Kingma, Rezende, Mohamed & Welling 2014) generates an image from a class $y$ and a style
# $z$: $p(x \mid y, z)\,p(y)\,p(z)$. With the label observed the bound is $\mathcal L(x, y)$
# (their eq. (6)); unobserved, $y$ is a latent with guide $q(y \mid x)$ and `TraceEnum_ELBO`
# sums it out exactly, giving $\mathcal U(x)$ (eq. (7)). The classifier $q(y \mid x)$ also gets
# the auxiliary loss $-\alpha \log q(y \mid x)$ on the labelled images (eq. (9)).
# `pyrolvm.fitting.fit_m2` alternates one unlabelled and one labelled minibatch per step
# (the same function as `pyrolvm train m2`). We train with a few label counts and report the
# classifier's test accuracy next to the published figures on MNIST: Pyro's ss-vae example
# (with the auxiliary loss) and Kingma et al.'s M2 (100 - their test error). Our runs are far
# shorter than theirs (they train for tens to hundreds of epochs). In fast mode this runs on
# the 8x8 digits, where the MNIST anchors are only a visual reference.

# %%
from pyrolvm.fitting import fit_m2  # noqa: E402
from pyrolvm.runs import M2Config  # noqa: E402

#: Published MNIST test accuracies (%) by number of labels.
M2_ANCHORS = {
    "Pyro ss-vae example": {100: 93.2, 600: 94.4, 1000: 94.9, 3000: 95.8},
    "Kingma et al. 2014, M2": {
        100: 100 - 11.97,
        600: 100 - 4.94,
        1000: 100 - 3.60,
        3000: 100 - 3.92,
    },
}
M2_DATASET = "digits" if FAST else "mnist"
M2_LABELS = [10, 50] if FAST else [100, 3000]
M2_EPOCHS = 2 if FAST else 5
if "m2" in SECTIONS:
    m2_data = load(M2_DATASET, root=None if FAST else DATA_ROOT, binarize="dynamic")
    m2_kw = {k: v for k, v in M2Config.DATASET_DEFAULTS[M2_DATASET].items() if k != "epochs"}
    m2_rows = []
    for n_labels in M2_LABELS:
        _, _, hist = fit_m2(
            m2_data.train,
            m2_data.train_labels,
            n_labels,
            m2_data.test,
            m2_data.test_labels,
            epochs=M2_EPOCHS,
            transform=m2_data.train_transform,
            seed=0,
            **m2_kw,
        )
        m2_rows.append(
            dict(
                labels=n_labels,
                test_accuracy=hist["test_accuracy"][-1],
                epochs=M2_EPOCHS,
                seconds=sum(hist["seconds"]),
            )
        )
    print(f"M2 on {M2_DATASET}, {M2_EPOCHS} epochs, settings {m2_kw}")
    print(f"{'labels':>7} | {'ours':>7} | {'Pyro ss-vae':>11} | {'Kingma M2':>9}")
    for r in m2_rows:
        anchors = [M2_ANCHORS[name].get(r["labels"]) for name in M2_ANCHORS]
        cells = [f"{a:.1f} %" if a is not None else "-" for a in anchors]
        print(
            f"{r['labels']:>7} | {100 * r['test_accuracy']:5.1f} % | {cells[0]:>11} | {cells[1]:>9}"
        )
    with open(os.path.join(OUT, "mixture_m2_accuracy.json"), "w") as f:
        json.dump(
            {
                "dataset": M2_DATASET,
                "settings": m2_kw,
                "rows": m2_rows,
                "anchors_mnist_percent": {
                    k: {str(n): a for n, a in v.items()} for k, v in M2_ANCHORS.items()
                },
            },
            f,
            indent=1,
        )

# %%
if "m2" in SECTIONS:
    counts = sorted(set(M2_LABELS) | set(M2_ANCHORS["Pyro ss-vae example"]))
    pos = {n: i for i, n in enumerate(counts)}
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(
        [pos[r["labels"]] for r in m2_rows],
        [100 * r["test_accuracy"] for r in m2_rows],
        width=0.6,
        color="tab:blue",
        label=f"pyrolvm M2, {M2_DATASET}, {M2_EPOCHS} epochs",
    )
    for r in m2_rows:
        ax.text(
            pos[r["labels"]],
            100 * r["test_accuracy"] + 0.5,
            f"{100 * r['test_accuracy']:.1f}",
            ha="center",
            fontsize=8,
        )
    for (name, anchors), marker in zip(M2_ANCHORS.items(), ("D", "x"), strict=True):
        ax.plot(
            [pos[n] for n in anchors],
            list(anchors.values()),
            marker,
            color="black",
            ls="none",
            label=f"{name} (MNIST, full training)",
        )
    ax.set_xticks(range(len(counts)), [str(n) for n in counts])
    ax.set_xlabel("number of labelled training images")
    ax.set_ylabel("test accuracy (%)")
    low = min([100 * r["test_accuracy"] for r in m2_rows] + [85])
    ax.set_ylim(max(0, low - 10), 100)
    ax.set_title("M2 test accuracy by number of labels", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(os.path.join(OUT, "mixture_m2_accuracy.png"), dpi=120)

# %% [markdown]
# ![mixture m2 accuracy](figures/mixture_m2_accuracy.png)
#
# *M2 test accuracy by number of labels, beside the published figures. Full run.*

# %% [markdown]
# ## Clustering with a mixture prior
#
# A VAE whose prior is a learned Gaussian mixture, $c \sim \mathrm{Cat}(\pi)$,
# $z \mid c \sim \mathcal N(\mu_c, \sigma_c^2)$, $x \mid z \sim$ Bernoulli (VaDE's generative
# model, Jiang et al. 2017): the component is enumerated in the model, so `TraceEnum_ELBO`
# uses the exact $\log p(z) = \log \sum_c \pi_c \mathcal N(z; \mu_c, \sigma_c^2)$.
# `pyrolvm.fitting.fit_mixture_vae` (what `pyrolvm train mixture-vae` runs) trains a few
# epochs, sets the prior to a Gaussian mixture fitted to draws from $q(z \mid x)$, and trains
# on. Each test image goes to its MAP cluster $\arg\max_c p(c \mid z = \text{encoder mean})$;
# we score the clusters without labels
# used in training: accuracy under the best one-to-one mapping of clusters to classes
# (Hungarian algorithm) and the adjusted Rand index. The figure shows the contingency matrix
# with clusters reordered by that mapping (the diagonal holds the correctly clustered images),
# and each component's mean $\mu_c$ decoded to an image.

# %%
from scipy.optimize import linear_sum_assignment  # noqa: E402

from pyrolvm.fitting import cluster, fit_mixture_vae  # noqa: E402

CLUSTER_DATASET = "digits" if FAST else "mnist"
if "clustering" in SECTIONS:
    c_data = load(CLUSTER_DATASET, root=None if FAST else DATA_ROOT, binarize="dynamic")
    c_kw = (
        dict(latent_dim=5, hidden=(128,), warmup_epochs=10, epochs=10, batch_size=50)
        if FAST
        else dict(latent_dim=10, hidden=(500, 500), warmup_epochs=3, epochs=5)
    )
    c_model, c_guide, c_metrics = fit_mixture_vae(c_data, num_components=10, seed=0, **c_kw)
    clusters = cluster(c_model, c_guide, c_data.test)
    labels = c_data.test_labels
    K_C = c_model.num_components
    n_classes = int(labels.max()) + 1
    table = torch.zeros(n_classes, K_C, dtype=torch.int64)  # rows: classes, columns: clusters
    table.index_put_((labels, clusters), torch.ones_like(labels), accumulate=True)
    rows_, cols_ = linear_sum_assignment(-table.numpy())
    order = list(cols_) + [c for c in range(K_C) if c not in set(cols_)]  # cluster for class j
    mapped = table[:, order]
    acc = mapped.diagonal().sum().item() / len(labels)
    assert abs(acc - c_metrics["test_cluster_accuracy"]) < 1e-9
    print(
        f"mixture-prior VAE on {CLUSTER_DATASET} ({c_kw}): test cluster accuracy {acc:.1%} "
        f"(right after the prior's initialization {c_metrics['init_test_cluster_accuracy']:.1%})"
        f", ARI {c_metrics['test_ari']:.3f}, {c_metrics['seconds']:.0f} s"
    )
    with open(os.path.join(OUT, "mixture_vae_clustering.json"), "w") as f:
        json.dump(
            {
                "dataset": CLUSTER_DATASET,
                "settings": c_kw,
                **{k: v for k, v in c_metrics.items() if k != "train_elbo"},
                "contingency_mapped": mapped.tolist(),
            },
            f,
            indent=1,
        )

# %%
if "clustering" in SECTIONS:
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4.6), gridspec_kw={"width_ratios": [1.3, 1]})
    im = a1.imshow(mapped.numpy(), cmap="Blues")
    for i in range(n_classes):
        for j in range(K_C):
            a1.text(
                j,
                i,
                int(mapped[i, j]),
                ha="center",
                va="center",
                fontsize=6,
                color="white" if mapped[i, j] > mapped.max() / 2 else "black",
            )
    a1.set_xticks(range(K_C), [str(c) for c in order])
    a1.set_yticks(range(n_classes))
    a1.set_xlabel("cluster (ordered by the class it is mapped to)")
    a1.set_ylabel("true class")
    fig.colorbar(im, ax=a1, fraction=0.046)
    with torch.no_grad():
        means = torch.sigmoid(c_model.decoder(c_model.prior_locs[order]))
    a2.imshow(
        plots._tile(means, c_data.image_shape, 5),
        cmap="gray_r",
        vmin=0,
        vmax=1,
        interpolation="nearest",
    )
    a2.set_title("decoded component means, in the same order", fontsize=9)
    a2.axis("off")
    fig.suptitle(
        f"mixture-prior VAE, {CLUSTER_DATASET} test set: cluster accuracy {acc:.1%}, "
        f"ARI {c_metrics['test_ari']:.3f}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(os.path.join(OUT, "mixture_vae_clusters.png"), dpi=120)
print("figures written to", OUT)

# %% [markdown]
# ![mixture vae clusters](figures/mixture_vae_clusters.png)
#
# *The mixture-prior VAE: clusters against classes, and the decoded component means. Full run.*
