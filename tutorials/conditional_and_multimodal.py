# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Beyond p(x): missing pixels, conditional outputs and two modalities
#
# Three models that go past the plain VAE, each one `pyrolvm train ...` run (here its Python
# call), whose `metrics.json` holds what we tabulate:
#
# 1. **Missing data** (Mattei & Frellsen 2019, MIWAE; Nazábal et al. 2020, HI-VAE): a VAE
#    trained on images with half of the pixels missing completely at random. The likelihood
#    scores the observed pixels only (`Bernoulli(...).mask(m)`), the encoder reads the
#    zero-imputed image and the mask, the test NLL is the importance-sampled -log p(x_obs),
#    and the missing pixels are imputed by self-normalized importance sampling
#    (`pyrolvm.inference.impute`). We compare the imputation's squared error (the Brier
#    score, truth binary) with mean imputation.
# 2. **Conditional VAE** (Sohn, Lee & Yan 2015): quadrant completion. Given 1, 2 or 3
#    quadrants x of a digit, predict the others y; the deterministic baseline network and the
#    CVAE (conditional prior p(z | x) that also reads the baseline's guess, generation
#    p(y | x, z), recognition q(z | x, y)) are scored by -log p(y | x), the CVAE's by
#    importance sampling with K samples from q(z | x, y), beside the table of Pyro's CVAE
#    tutorial. The same model and guide with the label as x and the image as y are the
#    **class-conditional VAE**: -log p(image | label) and samples per class.
# 3. **Multimodal VAE** (Wu & Goodman 2018): image and label share z; the guide is the
#    product of the image expert, the label expert and the prior expert, trained on the joint
#    and on each modality alone. Image -> label accuracy, label -> image samples, and the
#    joint and conditional test log-likelihoods. Then the two modalities are the top and the
#    bottom half of the image: each half completed from the other, and the joint, marginal
#    and conditional log-likelihoods of the halves. Last, the mixture of the same experts
#    (MMVAE, Shi et al. 2019) against the product, on the same numbers.
#
# Run as a script: `PYTHONPATH=. python tutorials/conditional_and_multimodal.py` (full mode:
# MNIST at the short budget stated in each setting below), or with `PYROLVM_FAST=1` (digits,
# seconds). Figures and `conditional_and_multimodal.json` go to `PYROLVM_FIGURES` (default
# `tutorials/figures/`).

# %%
import json
import os
import shutil
import tempfile

import torch

from pyrolvm.runs import train_cvae, train_mvae, train_vae

torch.set_num_threads(1)
FAST = os.environ.get("PYROLVM_FAST", "0") == "1"
OUT = os.environ.get("PYROLVM_FIGURES", os.path.join("tutorials", "figures"))
os.makedirs(OUT, exist_ok=True)
DATASET = os.environ.get("PYROLVM_DATASET", "digits" if FAST else "mnist")
COMMON = dict(dataset=DATASET, progress=False, seed=0)
if DATASET == "mnist":
    COMMON["data_root"] = os.environ.get("PYROLVM_DATA_ROOT", os.path.join("shared", "data"))
SETTINGS = {
    "missing": dict(epochs=1, hidden=(32,), eval_samples=10)
    if FAST
    else dict(epochs=3, eval_samples=100),
    "cvae": dict(epochs=1, baseline_epochs=1, hidden=(32,), eval_samples=10)
    if FAST
    else dict(epochs=3, baseline_epochs=2, hidden=(256, 256), eval_samples=50),
    "cvae_label": dict(epochs=1, hidden=(32,), eval_samples=10)
    if FAST
    else dict(epochs=5, hidden=(256, 256), eval_samples=50),
    "mvae": dict(epochs=1, hidden=(32,), eval_samples=10)
    if FAST
    else dict(epochs=2, hidden=(256, 256), eval_samples=50),
    "mvae_halves": dict(epochs=1, hidden=(32,), eval_samples=10)
    if FAST
    else dict(epochs=1, hidden=(256, 256), eval_samples=20),
}
SETTINGS["mmvae"] = SETTINGS["mvae"]  # the same budget, to compare the two posteriors
WORK = tempfile.mkdtemp(prefix="pyrolvm_cond_")
results = {"dataset": DATASET, "settings": SETTINGS}


def keep(folder, names, prefix):
    """Copy a run's figures into OUT as PREFIX_NAME."""
    for name in names:
        shutil.copy(os.path.join(folder, name), os.path.join(OUT, f"{prefix}_{name}"))


# %% [markdown]
# ## 1. A VAE trained and evaluated with 50 % of the pixels missing
#
# `pyrolvm train vae --mask random --missing-rate 0.5`: the masks are drawn once per image
# with the run's seed (train and test differ), so every number below is reproducible.

# %%
folder = os.path.join(WORK, "missing")
m = train_vae(out=folder, mask="random", missing_rate=0.5, **COMMON, **SETTINGS["missing"])
keep(folder, ["imputation.png"], "missing")
results["missing"] = {
    k: m[k]
    for k in (
        "test_nll",
        "test_nll_stderr",
        "eval_samples",
        "imputation_mse",
        "imputation_mse_stderr",
        "mean_imputation_mse",
        "mean_imputation_mse_stderr",
        "missing_share",
        "test_all_missing",
    )
}
print("| imputation of the missing test pixels | squared error (Brier) |")
print("|---|---|")
print(
    f"| SNIS over q(z | x_obs), K = {m['eval_samples']} | {m['imputation_mse']:.4f} ± "
    f"{m['imputation_mse_stderr']:.4f} |"
)
print(
    f"| mean of the observed training pixels | {m['mean_imputation_mse']:.4f} ± "
    f"{m['mean_imputation_mse_stderr']:.4f} |"
)
print(f"\n-log p(x_obs) = {m['test_nll']:.2f} ± {m['test_nll_stderr']:.2f} nats per test image")

# %% [markdown]
# ![imputation](figures/missing_imputation.png)
#
# ## 2. Quadrant completion: CVAE against the deterministic baseline
#
# Pyro's CVAE tutorial (https://pyro.ai/examples/cvae.html, "Evaluating the results") trains
# 500-500 networks for up to 50 epochs on grey-level MNIST; our runs are shorter and on
# binarized digits, so the columns compare the *gap* between baseline and CVAE more than the
# values.

# %%
folder = os.path.join(WORK, "cvae")
c = train_cvae(out=folder, **COMMON, **SETTINGS["cvae"])
keep(folder, c["figures"], "cvae")
published = c["pyro_tutorial_nll"]
results["cvae"] = {k: v for k, v in c.items() if k.startswith("q")} | {
    "eval_samples": c["eval_samples"],
    "pyro_tutorial_nll": published,
}
print(
    f"| -log p(y given x), nats | baseline | CVAE (IS, K = {c['eval_samples']}) | gap | "
    "Pyro tutorial: baseline / CVAE |"
)
print("|---|---|---|---|---|")
for q in (1, 2, 3):
    r = c[f"q{q}"]
    print(
        f"| {q} quadrant(s) | {r['baseline_nll']:.2f} ± {r['baseline_nll_stderr']:.2f} | "
        f"{r['cvae_nll']:.2f} ± {r['cvae_nll_stderr']:.2f} | "
        f"{r['baseline_nll'] - r['cvae_nll']:.2f} | "
        f"{published['baseline'][q]} / {published['cvae'][q]} |"
    )

# %% [markdown]
# ![completions, 1 quadrant](figures/cvae_completions_q1.png)
#
# ### The class-conditional VAE
#
# `pyrolvm train cvae --condition label`: x is the one-hot label, y the image; the learned
# prior p(z | label) (`--prior standard` for N(0, I)), p(image | label, z) and
# q(z | image, label). Each row of the figure is one class, each column one z ~ p(z | label).

# %%
folder = os.path.join(WORK, "cvae_label")
cl = train_cvae(out=folder, condition="label", **COMMON, **SETTINGS["cvae_label"])
keep(folder, ["samples_per_class.png"], "cvae_label")
r = cl["label"]
results["cvae_label"] = {k: v for k, v in r.items() if k != "train_elbo"}
results["cvae_label"]["eval_samples"] = cl["eval_samples"]
print(f"| class-conditional VAE, nats per test image (K = {cl['eval_samples']}) | value |")
print("|---|---|")
print(f"| -log p(image given label), IS | {r['cvae_nll']:.2f} ± {r['cvae_nll_stderr']:.2f} |")
print(f"| test ELBO | {r['cvae_elbo']:.2f} |")

# %% [markdown]
# ![samples per class](figures/cvae_label_samples_per_class.png)
#
# ## 3. The multimodal VAE: image and label through one product of experts

# %%
folder = os.path.join(WORK, "mvae")
v = train_mvae(out=folder, **COMMON, **SETTINGS["mvae"])
keep(folder, ["label_to_image.png"], "mvae")
results["mvae"] = {k: val for k, val in v.items() if k not in ("train_elbo", "figures")}
print(f"image -> label accuracy: {100 * v['accuracy']:.2f} %")
print(f"| test, nats (IS, K = {v['eval_samples']}) | value |")
print("|---|---|")
for label, key in (
    ("-log p(image, label)", "joint_nll"),
    ("-log p(image)", "image_nll"),
    ("-log p(label | image)", "label_given_image_nll"),
    ("-log p(image | label)", "image_given_label_nll"),
):
    print(f"| {label} | {v[key]:.2f} ± {v[key + '_stderr']:.2f} |")

# %% [markdown]
# ![label to image](figures/mvae_label_to_image.png)
#
# ### Two halves of one image
#
# `pyrolvm train mvae --modalities halves`: the top and the bottom half are the modalities,
# with one expert each (`HalvesMVAEGuide`), the same product with the prior expert and the
# same sub-sampled ELBOs. Both conditionals are self-normalized over the given half's
# posterior q(z | half).

# %%
folder = os.path.join(WORK, "mvae_halves")
h = train_mvae(out=folder, modalities="halves", **COMMON, **SETTINGS["mvae_halves"])
keep(folder, h["figures"], "mvae_halves")
results["mvae_halves"] = {k: val for k, val in h.items() if k not in ("train_elbo", "figures")}
print(f"| test, nats (IS, K = {h['eval_samples']}) | value |")
print("|---|---|")
for label, key in (
    ("-log p(top, bottom)", "joint_nll"),
    ("-log p(top)", "top_nll"),
    ("-log p(bottom)", "bottom_nll"),
    ("-log p(bottom given top)", "bottom_given_top_nll"),
    ("-log p(top given bottom)", "top_given_bottom_nll"),
):
    print(f"| {label} | {h[key]:.2f} ± {h[key + '_stderr']:.2f} |")

# %% [markdown]
# ![top to bottom](figures/mvae_halves_top_to_bottom.png)
# ![bottom to top](figures/mvae_halves_bottom_to_top.png)
#
# ### A mixture of the same experts: MMVAE
#
# `pyrolvm train mvae --posterior moe` (Shi, Siddharth, Paige & Torr 2019): q(z | image,
# label) is the uniform mixture of the two experts (no prior expert), trained on the joint
# only, by stratified sampling (one objective per expert: z drawn from that expert, scored by
# the mixture's density). The same numbers as the product of experts above, at the same
# budget.

# %%
folder = os.path.join(WORK, "mmvae")
mo = train_mvae(out=folder, posterior="moe", **COMMON, **SETTINGS["mmvae"])
results["mmvae"] = {k: val for k, val in mo.items() if k not in ("train_elbo", "figures")}
print(f"| image and label, test (IS, K = {mo['eval_samples']}) | MVAE (PoE) | MMVAE (MoE) |")
print("|---|---|---|")
print(f"| image -> label accuracy | {100 * v['accuracy']:.2f} % | {100 * mo['accuracy']:.2f} % |")
for label, key in (
    ("-log p(image, label)", "joint_nll"),
    ("-log p(image)", "image_nll"),
    ("-log p(label given image)", "label_given_image_nll"),
    ("-log p(image given label)", "image_given_label_nll"),
):
    print(
        f"| {label} | {v[key]:.2f} ± {v[key + '_stderr']:.2f} | "
        f"{mo[key]:.2f} ± {mo[key + '_stderr']:.2f} |"
    )

# %%
with open(os.path.join(OUT, "conditional_and_multimodal.json"), "w") as f:
    json.dump(results, f, indent=2)
shutil.rmtree(WORK, ignore_errors=True)
