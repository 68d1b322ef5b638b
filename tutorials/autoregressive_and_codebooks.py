# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Beyond the Gaussian latent: exact-likelihood autoregressive models, VQ-VAE, interventions
#
# 1. **One NLL table.** A VAE and an IWAE (importance-sampled log p(x), a stochastic lower
#    bound), MADE (Germain et al. 2015) and a gated PixelCNN (van den Oord et al. 2016): exact
#    log-likelihoods, Pyro models with no latent variable and the empty guide, so the same
#    evaluator (`importance_sample` with K = 1) gives their exact NLL; and the two-stage VQ-VAE
#    (van den Oord et al. 2017) with a PixelCNN prior over its codes, whose figure is an upper
#    bound on the NLL (one term of the sum over code grids). All on the same binarized MNIST
#    test set, each trained on the same first `N_TRAIN` training images at a short budget
#    stated in the table (CPU, minutes: far from the papers' budgets).
# 2. **Samples side by side.**
# 3. **Interventions.** Huszár's three models with one joint p(x, y) and different
#    p(y | do(x)), with `pyro.poutine.do`, exactly and by sampling; then CEVAE
#    (`pyro.contrib.cevae`, Louizos et al. 2017) on data with a hidden confounder and a known
#    average treatment effect (ATE), against the naive and the regression estimates.
#
# Not here: an autoregressive (PixelVAE-style) decoder for the VAE.
#
# Run as a script: `PYROLVM_DATA_ROOT=DIR PYTHONPATH=. python
# tutorials/autoregressive_and_codebooks.py` (full mode: MNIST under DIR, the first
# `PYROLVM_TRAIN` training images, default 10000), or with `PYROLVM_FAST=1` (digits, seconds).
# Figures and `autoregressive_and_codebooks.json` go to `PYROLVM_FIGURES` (default
# `tutorials/figures/`).

# %%
import dataclasses
import json
import math
import os
import shutil
import tempfile
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from pyro import poutine  # noqa: E402

from pyrolvm.data import confounded_treatment, load  # noqa: E402
from pyrolvm.fitting import cevae_ate, naive_ate, regression_ate  # noqa: E402
from pyrolvm.models import HUSZAR_MODELS, conditional_y, interventional_y  # noqa: E402
from pyrolvm.runs import train_made, train_pixelcnn, train_vae, train_vqvae  # noqa: E402

torch.set_num_threads(1)
FAST = os.environ.get("PYROLVM_FAST", "0") == "1"
OUT = os.environ.get("PYROLVM_FIGURES", os.path.join("tutorials", "figures"))
os.makedirs(OUT, exist_ok=True)
DATASET = "digits" if FAST else "mnist"
N_TRAIN = int(os.environ.get("PYROLVM_TRAIN", "10000"))
RUNS = tempfile.mkdtemp(prefix="autoregressive_and_codebooks_")

data = load(DATASET, binarize="dynamic", seed=0)
if not FAST:
    data = dataclasses.replace(
        data, train=data.train[:N_TRAIN], train_labels=data.train_labels[:N_TRAIN]
    )
D = data.data_dim
print(
    f"dataset {DATASET}: {len(data.train)} training images (dynamic binarization), "
    f"{len(data.test)} test images (binarized once, seed 0); run folders in {RUNS}"
)

# %% [markdown]
# ## 1. The NLL table
#
# Settings (full mode; fast mode shrinks every network and trains one or two epochs):
# VAE and IWAE (K = 5): 784-200-200-50 tanh (Burda et al. 2016), 10 epochs, test NLL with
# K = 100 importance samples; MADE: one hidden layer of 500 (the paper's), 10 epochs, one
# mask, and 8 masks (order- and connectivity-agnostic) evaluated as the ensemble; PixelCNN:
# 4 gated layers of 16 channels, kernel 5, 2 epochs (its steps cost about 100 times MADE's on
# CPU); VQ-VAE: K = 32 codes of dimension 16 on a 7x7 grid, 10 epochs, then a 4-layer
# PixelCNN prior over the codes, 10 epochs.

# %%
common = dict(dataset=DATASET, progress=False, seed=0)
if FAST:
    budgets = {
        "vae": dict(epochs=2, hidden=(16,), latent_dim=4, eval_samples=10),
        "iwae": dict(epochs=2, hidden=(16,), latent_dim=4, eval_samples=10),
        "made": dict(epochs=2, hidden=(32,)),
        "made8": dict(epochs=2, hidden=(32,), num_masks=8),
        "pixelcnn": dict(epochs=1, channels=4, num_layers=2, kernel_size=3, num_samples=16),
        "vqvae": dict(epochs=2, prior_epochs=2, channels=8, prior_channels=8, num_codes=8),
    }
else:
    budgets = {
        "vae": dict(epochs=10, eval_samples=100),
        "iwae": dict(epochs=10, eval_samples=100),
        "made": dict(epochs=10),
        "made8": dict(epochs=10, num_masks=8),
        "pixelcnn": dict(epochs=2, channels=16, num_layers=4, kernel_size=5, num_samples=16),
        "vqvae": dict(epochs=10, prior_epochs=10),
    }
ANCHORS = {
    "vae": "86.76 (Burda et al. 2016, Table 1, k = 1; 3280 epochs)",
    "iwae": "85.54 (Burda et al. 2016, Table 1, k = 5)",
    "made": "88.04 (Germain et al. 2015, one mask; as cited by pytorch-generative)",
    "made8": "86.64 (Germain et al. 2015, best mask ensemble; papers-with-code listing)",
    "pixelcnn": "81.30 (van den Oord et al. 2016a, PixelRNN paper; cited by pytorch-generative)",
    "vqvae": "none on binarized MNIST",
}
rows = {}


def record(name, label, kind, metrics, nll_key="test_nll", se_key="test_nll_stderr"):
    rows[name] = {
        "model": label,
        "figure": kind,
        "test_nll": metrics[nll_key],
        "test_nll_stderr": metrics[se_key],
        "bits_per_dim": metrics[nll_key] / (D * math.log(2)),
        "epochs": metrics["epochs"],
        "seconds": round(time.perf_counter() - t0, 1),
        "published": ANCHORS[name],
    }
    print(f"{label}: {metrics[nll_key]:.2f} nats ({rows[name]['seconds']} s)")


def folder(name):
    return os.path.join(RUNS, name)


t0 = time.perf_counter()
m = train_vae(out=folder("vae"), data=data, **common, **budgets["vae"])
record("vae", "VAE (ELBO)", f"IS estimate, K = {m['eval_samples']}", m)
t0 = time.perf_counter()
m = train_vae(
    out=folder("iwae"), data=data, elbo="iwae", num_particles=5, **common, **budgets["iwae"]
)
record("iwae", "IWAE (K = 5)", f"IS estimate, K = {m['eval_samples']}", m)
t0 = time.perf_counter()
m = train_made(out=folder("made"), data=data, **common, **budgets["made"])
record("made", "MADE, 1 mask", "exact", m)
t0 = time.perf_counter()
m = train_made(out=folder("made8"), data=data, **common, **budgets["made8"])
record("made8", "MADE, 8 masks (ensemble)", "exact", m)
t0 = time.perf_counter()
m = train_pixelcnn(out=folder("pixelcnn"), data=data, **common, **budgets["pixelcnn"])
record("pixelcnn", "gated PixelCNN", "exact", m)
t0 = time.perf_counter()
vq = train_vqvae(out=folder("vqvae"), data=data, **common, **budgets["vqvae"])
record(
    "vqvae", "VQ-VAE + PixelCNN prior", "upper bound", vq, "test_nll_bound", "test_nll_bound_stderr"
)
rows["vqvae"]["codebook_perplexity"] = vq["codebook_perplexity"]
rows["vqvae"]["codes_used"] = vq["codes_used"]
rows["vqvae"]["recon_nll"] = vq["test_recon_nll"]
rows["vqvae"]["uniform_prior_bound"] = vq["uniform_prior_nll_bound"]

print()
print("| model | test NLL (nats) | bits/dim | figure | epochs | seconds | published |")
print("|---|---|---|---|---|---|---|")
for r in rows.values():
    print(
        f"| {r['model']} | {r['test_nll']:.2f} ± {r['test_nll_stderr']:.2f} | "
        f"{r['bits_per_dim']:.4f} | {r['figure']} | {r['epochs']} | {r['seconds']} | "
        f"{r['published']} |"
    )
print(
    f"VQ-VAE: reconstruction NLL {vq['test_recon_nll']:.2f} nats, codebook perplexity "
    f"{vq['codebook_perplexity']:.2f} ({vq['codes_used']} of the K codes used, "
    f"{vq['code_grid']} grid), bound with a uniform prior {vq['uniform_prior_nll_bound']:.2f} nats"
)

# %% [markdown]
# Reading the table: the VAE and IWAE rows are importance-sampled estimates (lower bounds on
# log p(x) in expectation, so their NLL is an over-estimate that shrinks with K); MADE and the
# PixelCNN rows are exact; the VQ-VAE row bounds the NLL from above by
# `-log p(x | z*) - log p(z*)`. Stage 1 of the VQ-VAE alone has no such figure (its loss is
# not an ELBO with a learned prior: with a uniform prior the bound is the last line above).
# Our budgets are minutes of CPU; the published figures come from hundreds of epochs.

# %% [markdown]
# ## 2. Samples side by side

# %%
panels = [
    ("vae", "VAE"),
    ("iwae", "IWAE"),
    ("made", "MADE"),
    ("made8", "MADE (8 masks)"),
    ("pixelcnn", "PixelCNN"),
    ("vqvae", "VQ-VAE + prior"),
]
fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.4))
for ax, (name, title) in zip(axes, panels, strict=True):
    ax.imshow(mpimg.imread(os.path.join(folder(name), "samples.png")))
    ax.set_title(title)
    ax.axis("off")
fig.suptitle(f"samples ({DATASET}, budgets of the table)")
fig.tight_layout()
fig.savefig(os.path.join(OUT, "autoregressive_samples.png"), dpi=110)
plt.close(fig)

# %% [markdown]
# ## 3. Interventions
#
# Huszár's three scripts share the joint p(x, y) (x ~ N(0, 1), y ~ N(1, 4), Cov = 1) and so
# the conditional p(y | x = 3) = N(4, 3). `poutine.do(model, {"x": 3})` cuts x from its
# causes and leaves everything else: y follows x in the first model, N(4, 3); it does not in
# the other two, N(1, 4). Exactly (closed form) and by sampling:

# %%
N_DO = 2000 if FAST else 20000
x0 = 3.0
interventions = {}
fig, axes = plt.subplots(1, 3, figsize=(12, 3.2), sharey=True)
grid = torch.linspace(-6, 10, 200)
for ax, (name, model) in zip(axes, HUSZAR_MODELS.items(), strict=True):
    intervened = poutine.do(model, data={"x": torch.full((N_DO,), x0)})
    y = intervened(N_DO)
    exact = interventional_y(name, x0)
    interventions[name] = {
        "exact_mean": exact.mean.item(),
        "exact_var": exact.variance.item(),
        "sampled_mean": y.mean().item(),
        "sampled_var": y.var().item(),
    }
    ax.hist(y.numpy(), bins=60, density=True, alpha=0.5, label="do(x=3), sampled")
    ax.plot(grid, exact.log_prob(grid).exp(), label="p(y | do(x=3)), exact")
    ax.plot(grid, conditional_y(x0).log_prob(grid).exp(), "--", label="p(y | x=3)")
    ax.set_title(name)
axes[0].legend(fontsize=7)
fig.tight_layout()
fig.savefig(os.path.join(OUT, "interventions.png"), dpi=110)
plt.close(fig)
print("| model | p(y | do(x=3)) exact mean / var | sampled mean / var |")
print("|---|---|---|")
for name, r in interventions.items():
    print(
        f"| {name} | {r['exact_mean']:.2f} / {r['exact_var']:.2f} | "
        f"{r['sampled_mean']:.2f} / {r['sampled_var']:.2f} |"
    )

# %% [markdown]
# ### CEVAE on a hidden confounder
#
# A binary confounder z drives both treatment and outcome; we see only noisy proxies x of it
# (`pyrolvm.data.confounded_treatment`: the design of Pyro's CEVAE example with a weaker
# treatment effect and more informative proxies). The true ATE is known exactly.

# %%
n_units = 300 if FAST else 2000
cevae_epochs = 2 if FAST else 30
t0 = time.perf_counter()
units = confounded_treatment(n_units, 10, seed=0)
estimates = {
    "naive (difference of means)": naive_ate(units.t, units.y),
    "regression on (t, x)": regression_ate(units.x, units.t, units.y),
    "CEVAE": cevae_ate(units.x, units.t, units.y, num_epochs=cevae_epochs, seed=0),
}
ate = {
    "true_ate": units.true_ate,
    "num_units": n_units,
    "cevae_epochs": cevae_epochs,
    "seconds": round(time.perf_counter() - t0, 1),
    "estimates": {k: {"ate": v, "error": v - units.true_ate} for k, v in estimates.items()},
}
print(f"true ATE {units.true_ate:.4f} ({n_units} units)")
print("| estimator | ATE | error |")
print("|---|---|---|")
for k, v in estimates.items():
    print(f"| {k} | {v:.4f} | {v - units.true_ate:+.4f} |")

# %%
with open(os.path.join(OUT, "autoregressive_and_codebooks.json"), "w") as f:
    json.dump(
        {
            "dataset": DATASET,
            "train_images": len(data.train),
            "test_images": len(data.test),
            "nll": rows,
            "interventions": interventions,
            "ate": ate,
        },
        f,
        indent=2,
    )
shutil.rmtree(RUNS, ignore_errors=True)
