# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Richer posteriors and priors: full covariance, flows, VampPrior, two stochastic layers
#
# Three of the four points of intervention in a VAE: the approximate posterior q(z | x), the
# prior p(z) and the depth of the latent hierarchy (the loss is the subject of
# `losses_and_collapse.py`). Each setting is one `pyrolvm train vae` run (here its Python
# call `train_vae`) that differs from the diagonal-Gaussian VAE in one flag:
#
# - guides: diagonal Gaussian (`--guide normal`), full covariance (`--guide fullcov`),
#   planar flows with 4 and 16 steps (`--guide planar --flows N`, Rezende & Mohamed 2015),
#   inverse autoregressive flows (`--guide iaf`, Kingma et al. 2016);
# - priors: standard normal, VampPrior (`--prior vamp --pseudo-inputs K`, Tomczak & Welling
#   2018), a real-NVP flow prior (`--prior flow`);
# - two stochastic layers (`--layers 2`, Burda et al. 2016, section 5).
#
# The table gives the test NLL (importance sampling with K samples from each run's own
# guide), the test ELBO, the KL term (the rate, E_q[log q(z | x) - log p(z)], estimated from
# 10 draws per test image) and the seconds per epoch. The figure at the end shows, for a
# model with a 2-D latent, each guide's q(z | x) for a few test images against the true
# posterior p(z | x) computed on a grid: what a flow buys.
#
# Run as a script: `PYTHONPATH=. python tutorials/posteriors_and_priors.py` (full mode:
# MNIST, the first `PYROLVM_TRAIN` = 10000 training and `PYROLVM_TEST` = 1000 test images,
# `PYROLVM_EPOCHS` = 5 epochs per setting, K = 1000, stated in the output), or with
# `PYROLVM_FAST=1` (digits, seconds). `PYROLVM_DATASET=digits` runs the full settings on
# all of digits for 100 epochs (the committed figures and the table of docs/posteriors.md).
# Figures and `posteriors_and_priors.json` go to `PYROLVM_FIGURES` (default `tutorials/figures/`).

# %%
import dataclasses
import json
import os
import shutil
import tempfile

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyro  # noqa: E402
import torch  # noqa: E402
from pyro import poutine  # noqa: E402

from pyrolvm.data import load  # noqa: E402
from pyrolvm.inference import importance_sample, mean_and_stderr  # noqa: E402
from pyrolvm.runs import (
    load_run,  # noqa: E402
    train_vae,  # noqa: E402
)

torch.set_num_threads(1)
FAST = os.environ.get("PYROLVM_FAST", "0") == "1"
OUT = os.environ.get("PYROLVM_FIGURES", os.path.join("tutorials", "figures"))
os.makedirs(OUT, exist_ok=True)
DATASET = os.environ.get("PYROLVM_DATASET", "digits" if FAST else "mnist")
MNIST = DATASET == "mnist"
EPOCHS = int(os.environ.get("PYROLVM_EPOCHS", "1" if FAST else ("5" if MNIST else "100")))
# default: the first 10000 / 1000 MNIST images, every digits image (1437 / 360)
N_TRAIN = int(os.environ.get("PYROLVM_TRAIN", "300" if FAST else ("10000" if MNIST else "0")))
N_TEST = int(os.environ.get("PYROLVM_TEST", "50" if FAST else ("1000" if MNIST else "0")))
K_EVAL = 20 if FAST else 1000
PSEUDO = 10 if FAST else 500

full = load(DATASET, binarize="dynamic", seed=0)
DATA = dataclasses.replace(
    full, train=full.train[: N_TRAIN or None], test=full.test[: N_TEST or None]
)
COMMON = dict(dataset=DATASET, epochs=EPOCHS, progress=False, seed=0, eval_samples=K_EVAL)
if FAST:
    COMMON["hidden"] = (16,)
RUNS = tempfile.mkdtemp(prefix="posteriors_and_priors_")
BUDGET = (
    f"{DATASET}, {DATA.train.shape[0]} training and {DATA.test.shape[0]} test images "
    f"(dynamically binarized; the test set binarized once), {EPOCHS} epochs per setting, "
    f"test NLL with K = {K_EVAL} importance samples"
)
print(f"budget: {BUDGET}; run folders in {RUNS}")


def reload(folder):
    """The trained model and guide of a run folder (as `pyrolvm evaluate` rebuilds them)."""
    parts = load_run(folder, device="cpu").parts
    return parts["model"], parts["guide"]


@torch.no_grad()
def rate(model, guide, x, draws=10):
    """E_q[log q(z | x) - log p(z)] per test image (nats), summed over the latent sites."""
    pyro.set_rng_seed(0)
    total = torch.zeros(x.shape[0])
    for _ in range(draws):
        q = poutine.trace(guide).get_trace(x)
        p = poutine.trace(poutine.replay(model, trace=q)).get_trace(x)
        for name, site in q.nodes.items():
            if site["type"] == "sample" and not site["is_observed"]:
                value = site["value"]
                total += site["fn"].log_prob(value) - p.nodes[name]["fn"].log_prob(value)
    return (total / draws).mean().item()


def run(name, **options):
    folder = os.path.join(RUNS, name.replace(" ", "_").replace(",", ""))
    m = train_vae(out=folder, data=DATA, **COMMON, **options)
    model, guide = reload(folder)
    # the per-image estimates of the run's evaluation (same seed, K and batches), kept for
    # the paired differences against the diagonal Gaussian on the same test images
    pyro.set_rng_seed(0)
    per_image[name] = -importance_sample(
        model, guide, DATA.test, num_samples=K_EVAL, batch_size=100
    ).log_likelihood
    row = dict(
        test_nll=m["test_nll"],
        test_nll_stderr=m["test_nll_stderr"],
        test_elbo=m["test_elbo"],
        kl=rate(model, guide, DATA.test),
        seconds_per_epoch=m["seconds_per_epoch"],
        scored_on=m["scored_on"],
    )
    print(
        f"{name:26s} NLL {row['test_nll']:7.2f} ± {row['test_nll_stderr']:.2f}  "
        f"ELBO {row['test_elbo']:8.2f}  KL {row['kl']:6.2f}  "
        f"{row['seconds_per_epoch']:6.1f} s/epoch"
    )
    return row, model


# %% [markdown]
# ## The table: one flag at a time

# %%
SETTINGS = {
    "diagonal Gaussian": {},
    "full covariance": dict(guide="fullcov"),
    "planar, 4 steps": dict(guide="planar", flows=4),
    "planar, 16 steps": dict(guide="planar", flows=16),
    "IAF, 4 steps": dict(guide="iaf", flows=4),
    f"VampPrior, K = {PSEUDO}": dict(prior="vamp", pseudo_inputs=PSEUDO),
    "flow prior, 2 steps": dict(prior="flow"),
    "two stochastic layers": dict(layers=2),
}
table, models, per_image = {}, {}, {}
for name, options in SETTINGS.items():
    table[name], models[name] = run(name, **options)
for name in SETTINGS:  # paired: the same test images, so the images' spread cancels
    diff, se = mean_and_stderr(per_image[name] - per_image["diagonal Gaussian"])
    table[name]["nll_minus_diagonal"], table[name]["nll_minus_diagonal_stderr"] = diff, se

# %%
lines = [
    f"Test NLL on {BUDGET}.",
    "",
    "| setting | test NLL (nats) | NLL − diagonal (paired) | test ELBO | KL (rate) | s / epoch |",
    "|---|---|---|---|---|---|",
]
for name, r in table.items():
    paired = f"{r['nll_minus_diagonal']:+.2f} ± {r['nll_minus_diagonal_stderr']:.2f}"
    lines.append(
        f"| {name} | {r['test_nll']:.2f} ± {r['test_nll_stderr']:.2f} | {paired} | "
        f"{r['test_elbo']:.2f} | {r['kl']:.2f} | {r['seconds_per_epoch']:.2f} |"
    )
print("\n".join(lines))

# %% [markdown]
# Samples from four of the models (the mean of p(x | z), z from each model's prior).

# %%
shown = ["diagonal Gaussian", "IAF, 4 steps", f"VampPrior, K = {PSEUDO}", "two stochastic layers"]
fig, axes = plt.subplots(1, len(shown), figsize=(3 * len(shown), 3.3))
h, w = DATA.image_shape
torch.manual_seed(0)
for ax, name in zip(axes, shown, strict=True):
    tiles = models[name].sample(16).reshape(4, 4, h, w)
    canvas = torch.full((4 * (h + 1) - 1, 4 * (w + 1) - 1), 0.15)  # 1-pixel grey gaps
    for r in range(4):
        for c in range(4):
            canvas[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = tiles[r, c]
    ax.imshow(canvas.numpy(), cmap="gray_r", vmin=0, vmax=1)
    ax.set_title(name, fontsize=9)
    ax.axis("off")
fig.suptitle(f"samples ({DATASET}, {EPOCHS} epochs)")
fig.tight_layout()
fig.savefig(os.path.join(OUT, "posteriors_samples.png"), dpi=100)
plt.close(fig)

# %% [markdown]
# ## What a flow buys: q(z | x) against the true posterior, 2-D latent
#
# A VAE with a 2-D latent on digits, trained once per guide. For three test images, the
# filled image is the guide's q(z | x) (its density on the grid; for planar flows, which have
# no inverse, a histogram of 20000 draws), the contour lines the true posterior
# p(z | x) ∝ p(x | z) p(z) of the same model, normalized on the grid. The title gives
# KL(q || p(z | x)) estimated from 2000 draws of q: the gap between that image's ELBO and
# its log p(x).

# %%
POST_EPOCHS = 2 if FAST else 100
digits = load("digits", binarize="dynamic", seed=0)
GUIDES = {
    "diagonal": {},
    "full covariance": dict(guide="fullcov"),
    "planar, 16 steps": dict(guide="planar", flows=16),
    "IAF, 4 steps": dict(guide="iaf", flows=4),
}
t = torch.linspace(-4, 4, 161)
zz = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
cell = (t[1] - t[0]) ** 2
images = digits.test[:3]
fig, axes = plt.subplots(len(GUIDES), 3, figsize=(9, 3 * len(GUIDES)))
posterior_kl = {}
for row, (name, options) in enumerate(GUIDES.items()):
    folder = os.path.join(RUNS, "2d_" + name.replace(" ", "_").replace(",", ""))
    train_vae(
        out=folder,
        dataset="digits",
        latent_dim=2,
        hidden=(64,),
        epochs=POST_EPOCHS,
        eval_samples=20,
        progress=False,
        seed=0,
        **options,
    )
    model, guide = reload(folder)
    posterior_kl[name] = []
    for col in range(3):
        x = images[col : col + 1]
        with torch.no_grad():
            log_joint = model.likelihood_dist(zz).log_prob(x) + model.prior.distribution().log_prob(
                zz
            )
            log_z = torch.logsumexp(log_joint, 0) + cell.log()
            true = (log_joint - log_z).exp().reshape(len(t), len(t))
            q = guide.posterior(x)
            pyro.set_rng_seed(col)
            draws = q.sample((2000,))
            log_q = q.log_prob(draws)  # at its own draws: defined for planar too (cached)
            log_true = (
                model.likelihood_dist(draws).log_prob(x)
                + model.prior.distribution().log_prob(draws)
                - log_z
            )
            kl = (log_q - log_true).mean().item()
            if options.get("guide") == "planar":
                many = q.sample((20000,)).reshape(-1, 2)
                bins = [len(t), len(t)]
                dens = torch.histogramdd(many, bins=bins, range=[-4.0, 4.0, -4.0, 4.0]).hist
                dens = dens / dens.sum() / (8 / len(t)) ** 2
            else:
                dens = q.log_prob(zz.unsqueeze(1)).squeeze(1).exp().reshape(len(t), len(t))
        posterior_kl[name].append(kl)
        ax = axes[row, col]
        ax.imshow(dens.T.numpy(), origin="lower", extent=(-4, 4, -4, 4), cmap="Blues")
        ax.contour(t.numpy(), t.numpy(), true.T.numpy(), levels=5, colors="k", linewidths=0.7)
        ax.set_title(f"{name}: KL {kl:.2f} nats", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
fig.suptitle(f"q(z | x) (filled) and p(z | x) (contours), digits, {POST_EPOCHS} epochs each")
fig.tight_layout()
fig.savefig(os.path.join(OUT, "posterior_densities.png"), dpi=100)
plt.close(fig)
for name, kls in posterior_kl.items():
    print(
        f"{name:18s} KL(q || p(z | x)) on the three test images: "
        + ", ".join(f"{k:.2f}" for k in kls)
    )

# %%
with open(os.path.join(OUT, "posteriors_and_priors.json"), "w") as f:
    json.dump(
        {
            "budget": BUDGET,
            "dataset": DATASET,
            "epochs": EPOCHS,
            "train_images": DATA.train.shape[0],
            "test_images": DATA.test.shape[0],
            "eval_samples": K_EVAL,
            "table": table,
            "posterior_epochs": POST_EPOCHS,
            "posterior_kl": posterior_kl,
        },
        f,
        indent=2,
    )
shutil.rmtree(RUNS, ignore_errors=True)
print(f"figures and posteriors_and_priors.json in {OUT}")

# %% [markdown]
# The committed figures of the full run:
#
# ![samples](figures/posteriors_samples.png)
#
# ![posterior densities](figures/posterior_densities.png)
