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
#    a 2-D projection.
#
# Run it as a script (`python tutorials/mixture_models.py`) or open it as a notebook with
# jupytext. `PYROLVM_TUTORIAL_FAST=1` runs a small version (used by the tests);
# `PYROLVM_TUTORIAL_OUT=DIR` sets where the PNG figures go (default `tutorials/figures`).

# %%
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
from pyrolvm.guides import MixtureMAP  # noqa: E402
from pyrolvm.models import GaussianMixture  # noqa: E402
from pyrolvm.runs.gmm import fit_mixture, project  # noqa: E402

FAST = os.environ.get("PYROLVM_TUTORIAL_FAST") == "1"
OUT = os.environ.get("PYROLVM_TUTORIAL_OUT",
                     os.path.join(os.path.dirname(os.path.abspath(__file__)), "figures"))
os.makedirs(OUT, exist_ok=True)
torch.set_num_threads(1)
pyro.set_rng_seed(0)
EPOCHS = 20 if FAST else 300

# %% [markdown]
# ## Data: handwritten digits projected by PCA
#
# scikit-learn's 8x8 digits (1437 training, 360 test images), projected to 10 dimensions by a
# PCA fitted on the training split only; the test images go through the same projection.

# %%
data = load("digits")
xtrain, xtest, pca = project(data, 10)
print(f"train {tuple(xtrain.shape)}, test {tuple(xtest.shape)}, "
      f"variance kept {pca.explained_variance_ratio_.sum():.1%}")

# %% [markdown]
# ## The ELBO is the log-likelihood
#
# Before training anything: take EM's solution, hand it to a MAP guide, and check that
# `TraceEnum_ELBO`'s loss is minus the exact log-likelihood minus the log-prior.

# %%
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
print(f"TraceEnum_ELBO loss {loss:.3f}; -(log-likelihood) {-log_lik:.3f}; difference "
      f"{loss + log_lik:.3f} nats = -log p(theta) (the priors)")
print(f"EM mean train log-likelihood: ours {log_lik / len(xtrain):.5f}, "
      f"sklearn score {em.score(xtrain.double().numpy()):.5f}")

# %% [markdown]
# ## SVI with enumeration against EM
#
# `fit_mixture` starts from k-means clusters, as scikit-learn's EM does (random starts let
# components collapse onto a few points, pyro-ppl/pyro#635), takes full-batch Adam steps with
# a warmed-up, decaying learning rate, and records the exact training log-likelihood after every epoch. We also fit with minibatches of
# 200 under the subsampled plate, as one would for data too large for full-batch EM.

# %%
fits = {}
for name, kw in {"SVI full batch": dict(), "SVI minibatch 200": dict(batch_size=200,
                                                                     epochs=EPOCHS // 5)}.items():
    kw.setdefault("epochs", EPOCHS)
    fit = fit_mixture(xtrain, K, "full", seed=0, **kw)
    fits[name] = fit
    print(f"{name:>18}: test log-likelihood "
          f"{fit.model.log_likelihood(xtest, fit.params).mean():.3f} nats/point, "
          f"{fit.seconds:.1f} s")
em_test = em.score(xtest.double().numpy())
print(f"{'sklearn EM':>18}: test log-likelihood {em_test:.3f} nats/point, {em_seconds:.1f} s "
      f"({em.n_iter_} EM iterations, best of {em.n_init})")

# %%
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
# ## Where SVI starts matters
#
# Gradient ascent, like EM, stops at a local optimum. Random starts (K datapoints as centres)
# are the collapse that users meet (pyro-ppl/pyro#635); the k-means++ seeding alone is better;
# Lloyd's k-means from that seeding (the default, and scikit-learn's) is better still.

# %%
for init in ("random", "kmeans++", "kmeans"):
    fit = fit_mixture(xtrain, 3 if FAST else 12, "full", init=init, epochs=EPOCHS, seed=0)
    print(f"init {init:>8}: train {fit.restarts[0]:.3f}, test "
          f"{fit.model.log_likelihood(xtest, fit.params).mean():.3f} nats/point")

# %% [markdown]
# ## How many components? Held-out log-likelihood and BIC
#
# For each K: our MAP fit and EM on the same 10-D projection, each the best of the same number
# of restarts (both methods climb to local optima; with a single start either can land in a
# visibly worse one at some K). The held-out log-likelihood keeps rising slowly with K while
# BIC, $-2 \sum_n \log p(x_n) + P \log N$, charges for the
# $P = (K - 1) + K D + K D (D + 1) / 2$ parameters and has a minimum.

# %%
ks = [1, 2] if FAST else [1, 2, 4, 6, 8, 10, 12, 15, 20]
N_INIT = 1 if FAST else 3
rows = []
for k in ks:
    fit = fit_mixture(xtrain, k, "full", epochs=EPOCHS, n_init=N_INIT, seed=0)
    sk = SKGaussianMixture(k, covariance_type="full", n_init=N_INIT,
                           random_state=0).fit(xtrain.double().numpy())
    rows.append(dict(
        k=k, test=fit.model.log_likelihood(xtest, fit.params).mean().item(),
        bic=fit.model.bic(xtrain, fit.params),
        sk_test=sk.score(xtest.double().numpy()), sk_bic=sk.bic(xtrain.double().numpy())))
    print(f"K={k:>2}: test log-lik {rows[-1]['test']:8.3f} (EM {rows[-1]['sk_test']:8.3f})  "
          f"BIC {rows[-1]['bic']:9.1f} (EM {rows[-1]['sk_bic']:9.1f})")

# %%
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
fig.suptitle(f"digits, PCA to 10 dimensions, full covariances, best of {N_INIT} starts each",
             fontsize=10)
fig.tight_layout()
fig.savefig(os.path.join(OUT, "mixture_loglik_bic_vs_k.png"), dpi=120)

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
x2, x2_test, _ = project(data, 2)
fit2 = fit_mixture(x2, 6, "full", epochs=EPOCHS, seed=0)
resp = fit2.model.responsibilities(x2, fit2.params)
z_map = fit2.model.assign(x2, fit2.params, temperature=0)
assert torch.equal(z_map, resp.argmax(-1))
z_draws = torch.stack([fit2.model.assign(x2, fit2.params, temperature=1) for _ in range(20)])
changes = (z_draws != z_map).float().mean(0)
print(f"points whose sampled assignment differs from the MAP one in >= 1 of 20 draws: "
      f"{(changes > 0).float().mean():.1%}")
plots.mixture_clusters(os.path.join(OUT, "mixture_clusters_2d.png"), x2, z_map,
                       fit2.params["locs"], fit2.model.covariances(fit2.params),
                       "digits on principal axes 1-2: MAP components (K=6)")

fig, ax = plt.subplots(figsize=(5.5, 5))
sc = ax.scatter(x2[:, 0], x2[:, 1], c=resp.max(-1).values, cmap="viridis", s=6, vmin=0, vmax=1)
fig.colorbar(sc, ax=ax, label="max_k p(z = k | x)")
ax.set_xlabel("projection 1")
ax.set_ylabel("projection 2")
ax.set_title("responsibility of the MAP component", fontsize=10)
fig.tight_layout()
fig.savefig(os.path.join(OUT, "mixture_responsibilities_2d.png"), dpi=120)
print("figures written to", OUT)
