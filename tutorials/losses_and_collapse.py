# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # The loss as a point of intervention: β, annealing, free bits, MMD, and the MIWAE family
#
# The same VAE (Bernoulli likelihood, MLP encoder and decoder, Gaussian latent) trained with
# different objectives, each one `pyrolvm train vae` run (here its Python call `train_vae`),
# whose `metrics.json` holds what we tabulate:
#
# 1. **Part 1: the KL term.** β ∈ {0.5, 1, 4} (Higgins et al. 2017), β = 1 with a linear KL
#    warm-up (Bowman et al. 2016), free bits (Kingma et al. 2016) and the MMD-VAE (Zhao et
#    al. 2019): test NLL, test ELBO, rate (KL), distortion, active units (Burda et al. 2016)
#    and the mutual information I_q(x; z) (Hoffman & Johnson 2016); the rate–distortion plane
#    (Alemi et al. 2018); the amortization gap of the default VAE against the per-datapoint
#    optimum (Cremer et al. 2018).
# 2. **Part 2: the MIWAE family** at a fixed budget of M·K = 8 particles (Rainforth et al.
#    2018): ELBO (M = 8, K = 1), IWAE (M = 1, K = 8), MIWAE and PIWAE (M = 2, K = 4), CIWAE
#    (β = 0.5, K = 8). Their claim: the encoders of MIWAE/PIWAE reach a better ELBO than
#    IWAE's, while IWAE's decoder reaches the better NLL.
#
# The decoder is the library's MLP (no autoregressive decoder exists in pyro-lvm yet), so
# posterior collapse shows only where the objective pushes for it (β = 4), not because the
# decoder can model x without z.
#
# Run as a script: `PYTHONPATH=. python tutorials/losses_and_collapse.py` (full mode: MNIST,
# a budget of `PYROLVM_EPOCHS` epochs per setting, default 2, stated in the output), or with
# `PYROLVM_FAST=1` (digits, seconds). `PYROLVM_DATASET=digits` runs the full settings on
# digits. Figures and `losses_and_collapse.json` go to `PYROLVM_FIGURES`
# (default `tutorials/figures/`).

# %%
import json
import os
import shutil
import tempfile
import time

import torch

from pyrolvm.plots_latent import rate_distortion
from pyrolvm.runs import train_vae

torch.set_num_threads(1)
FAST = os.environ.get("PYROLVM_FAST", "0") == "1"
OUT = os.environ.get("PYROLVM_FIGURES", os.path.join("tutorials", "figures"))
os.makedirs(OUT, exist_ok=True)
DATASET = os.environ.get("PYROLVM_DATASET", "digits" if FAST else "mnist")
EPOCHS = int(
    os.environ.get("PYROLVM_EPOCHS", "1" if FAST else ("2" if DATASET == "mnist" else "100"))
)
COMMON = dict(
    dataset=DATASET, epochs=EPOCHS, progress=False, seed=0, eval_samples=20 if FAST else 200
)
if FAST:
    COMMON["hidden"] = (16,)
GAP_POINTS = 4 if FAST else 100
RUNS = tempfile.mkdtemp(prefix="losses_and_collapse_")
print(
    f"dataset {DATASET}, {EPOCHS} epochs per setting, test NLL with "
    f"{COMMON['eval_samples']} importance samples; run folders in {RUNS}"
)


def run(name, **options):
    t0 = time.perf_counter()
    m = train_vae(out=os.path.join(RUNS, name), **COMMON, **options)
    row = {
        k: m[k]
        for k in (
            "test_nll",
            "test_nll_stderr",
            "test_elbo",
            "rate",
            "distortion",
            "active_units",
            "mutual_information",
        )
    }
    row.update({k: m[k] for k in m if k.endswith("_gap") or k.endswith("_gap_stderr")})
    row["seconds"] = time.perf_counter() - t0
    print(
        f"{name:24s} NLL {row['test_nll']:7.2f}  ELBO {row['test_elbo']:7.2f}  "
        f"R {row['rate']:6.2f}  D {row['distortion']:7.2f}  AU {row['active_units']:3d}  "
        f"MI {row['mutual_information']:5.2f}  ({row['seconds']:.0f} s)"
    )
    return row


# %% [markdown]
# ## Part 1: the KL term

# %%
warmup = max(1, EPOCHS // 2)
part1 = {
    "β = 0.5": run("beta0.5", elbo="beta", beta=0.5),
    "β = 1 (ELBO)": run("beta1", elbo="beta", beta=1.0, amortization_gap=GAP_POINTS),
    "β = 4": run("beta4", elbo="beta", beta=4.0),
    f"β = 1, linear warm-up {warmup} ep.": run(
        "annealed", elbo="beta", beta=1.0, anneal="linear", warmup_epochs=warmup
    ),
    "free bits λ = 0.5": run("freebits", elbo="freebits", free_bits=0.5),
    "MMD-VAE (w = 100, h = 1)": run("mmd", elbo="mmd", mmd_weight=100.0, bandwidth=1.0),
}

# %% [markdown]
# The rate–distortion plane: each objective picks a point; the dotted lines are the level
# sets of the negative ELBO, R + D.

# %%
rate_distortion(
    os.path.join(OUT, "rate_distortion.png"),
    [dict(rate=r["rate"], distortion=r["distortion"], label=k) for k, r in part1.items()],
    title=f"rate–distortion on {DATASET} ({EPOCHS} epochs each)",
)
gap = part1["β = 1 (ELBO)"]
print(
    f"amortization gap of the β = 1 VAE on {GAP_POINTS} test points: "
    f"{gap['amortization_gap']:.2f} ± {gap['amortization_gap_stderr']:.2f} nats; "
    f"approximation gap {gap['approximation_gap']:.2f} ± "
    f"{gap['approximation_gap_stderr']:.2f} nats"
)

# %% [markdown]
# ## Part 2: the MIWAE family at M·K = 8

# %%
part2 = {
    "ELBO (M=8, K=1)": run("elbo8", elbo="miwae", num_groups=8, num_particles=1),
    "IWAE (M=1, K=8)": run("iwae8", elbo="iwae", num_particles=8),
    "MIWAE (M=2, K=4)": run("miwae", elbo="miwae", num_groups=2, num_particles=4),
    "PIWAE (M=2, K=4)": run("piwae", elbo="piwae", num_groups=2, num_particles=4),
    "CIWAE (β=0.5, K=8)": run("ciwae", elbo="ciwae", beta=0.5, num_particles=8),
}
iwae, best_encoder = (
    part2["IWAE (M=1, K=8)"],
    max(part2["MIWAE (M=2, K=4)"]["test_elbo"], part2["PIWAE (M=2, K=4)"]["test_elbo"]),
)
print("MIWAE/PIWAE encoder ELBO better than IWAE's:", best_encoder > iwae["test_elbo"])
print(
    "IWAE NLL better than MIWAE's and PIWAE's:",
    iwae["test_nll"]
    < min(part2["MIWAE (M=2, K=4)"]["test_nll"], part2["PIWAE (M=2, K=4)"]["test_nll"]),
)


# %%
def table(rows):
    lines = [
        "| objective | test NLL | test ELBO | rate (KL) | distortion | active units | MI |",
        "|---|---|---|---|---|---|---|",
    ]
    for k, r in rows.items():
        lines.append(
            f"| {k} | {r['test_nll']:.2f} ± {r['test_nll_stderr']:.2f} | "
            f"{r['test_elbo']:.2f} | {r['rate']:.2f} | {r['distortion']:.2f} | "
            f"{r['active_units']} | {r['mutual_information']:.2f} |"
        )
    return "\n".join(lines)


print(table(part1))
print(table(part2))
with open(os.path.join(OUT, "losses_and_collapse.json"), "w") as f:
    json.dump(
        {
            "dataset": DATASET,
            "epochs": EPOCHS,
            "settings": COMMON | {"hidden": list(COMMON.get("hidden", ()))},
            "gap_points": GAP_POINTS,
            "part1": part1,
            "part2": part2,
        },
        f,
        indent=1,
    )
shutil.rmtree(RUNS)
