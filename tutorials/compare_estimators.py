# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Comparing gradient estimators for deep latent-variable models
#
# On the same data (scikit-learn's 8x8 digits, dynamically binarized) and the same VAE, we
# train with every standard ELBO gradient estimator and compare them:
#
# 1. test ELBO and test NLL against epochs and wall-clock time for the pathwise (reparameterized)
#    estimator, the score function (REINFORCE) without baseline, with a decaying-average and
#    with a neural baseline, IWAE with K = 5 and 50, DReG with K = 5 and 50, and STL;
# 2. the signal-to-noise ratio of the encoder's and the decoder's gradients against K for IWAE
#    and DReG (Rainforth et al. 2018; Tucker et al. 2019);
# 3. discrete latents (a sigmoid belief network): score function, VIMCO, Concrete and
#    straight-through Gumbel-softmax;
# 4. naive Monte Carlo (samples from the prior) against importance sampling (samples from the
#    guide) for log p(x);
# 5. Pyro's SVI part III coin experiment: score-function steps to convergence with and without
#    a decaying-average baseline;
# 6. the study of part 1 as run folders and one `pyrolvm compare`, with paired differences.
#
# Run as a script: `PYTHONPATH=. python tutorials/compare_estimators.py` (full mode, about
# 15 minutes on 2 CPU cores; figures in `tutorials/figures/`), or with `PYROLVM_FAST=1` for
# the seconds-long smoke test. Set `PYROLVM_FIGURES` to write the figures elsewhere.

# %%
import json
import os
import shutil
import tempfile
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyro  # noqa: E402
import pyro.distributions as dist  # noqa: E402
import torch  # noqa: E402
from pyro.distributions import constraints  # noqa: E402
from pyro.infer import SVI, TraceGraph_ELBO  # noqa: E402

from pyrolvm.data import load  # noqa: E402
from pyrolvm.errors import TrainingDiverged  # noqa: E402
from pyrolvm.guides import AmortizedBernoulli, AmortizedNormal, non_reparameterized  # noqa: E402
from pyrolvm.inference import (  # noqa: E402
    IWAE,
    DReG,
    gradient_snr,
    importance_sample,
    make_elbo,
    make_optim,
    mean_and_stderr,
    train,
)
from pyrolvm.models import VAE, SigmoidBeliefNet  # noqa: E402
from pyrolvm.runs import compare_runs, train_vae  # noqa: E402

torch.set_num_threads(1)
FAST = os.environ.get("PYROLVM_FAST", "0") == "1"
OUT = os.environ.get("PYROLVM_FIGURES", os.path.join("tutorials", "figures"))
os.makedirs(OUT, exist_ok=True)
S = dict(  # settings: full mode, and the fast mode run by the test suite
    epochs=2 if FAST else 150,
    eval_every=1 if FAST else 10,
    eval_samples=10 if FAST else 200,
    final_eval_samples=20 if FAST else 2000,
    latent_dim=8,
    hidden=(32,) if FAST else (128, 128),
    lr=3e-3,
    snr_ks=(1, 5) if FAST else (1, 5, 50),
    snr_draws=3 if FAST else 200,
    sbn_units=20 if FAST else 200,
    sbn_epochs=2 if FAST else 150,
    is_ks=(1, 10) if FAST else (1, 10, 100, 1000, 10000),
    is_repeats=2 if FAST else 10,
    coin_seeds=(0,) if FAST else (0, 1, 2, 3, 4),
    coin_steps=50 if FAST else 10000,
    run_epochs=2 if FAST else 30,
)
results = {"settings": {k: list(v) if isinstance(v, tuple) else v for k, v in S.items()}}
data = load("digits", binarize="dynamic", seed=0)
print(
    f"digits: {len(data.train)} train, {len(data.test)} test, D = {data.data_dim}; "
    f"{'fast' if FAST else 'full'} mode"
)

# %% [markdown]
# ## 1. Continuous latents: nine estimators on one VAE
#
# Every estimator gets the same budget of **5 model evaluations per datapoint per step**
# (`num_particles=5` for the single-sample estimators, whose particles are averaged), except
# IWAE and DReG with K = 50, which use 50. The score-function runs use the same VAE with its
# guide's reparameterization switched off (`AmortizedNormal(reparameterized=False)`, a Normal
# without `rsample`), so `TraceGraph_ELBO` falls back to REINFORCE with the chosen baseline.

# %%
ESTIMATORS = {
    # name: (ELBO name, K, guide options)
    "pathwise": ("trace", 5, {}),
    "score, no baseline": ("tracegraph", 5, {"reparameterized": False}),
    "score, decaying avg": (
        "tracegraph",
        5,
        {"reparameterized": False, "baseline": "decaying_avg"},
    ),
    "score, neural": ("tracegraph", 5, {"reparameterized": False, "baseline": "neural"}),
    "IWAE K=5": ("iwae", 5, {}),
    "IWAE K=50": ("iwae", 50, {}),
    "DReG K=5": ("dreg", 5, {}),
    "DReG K=50": ("dreg", 50, {}),
    "STL": ("stl", 5, {}),
}


def evaluate(model, guide, num_samples, seed=0):
    """Test ELBO and NLL (nats per datapoint) by importance sampling with the guide."""
    pyro.set_rng_seed(seed)
    r = importance_sample(model, guide, data.test, num_samples=num_samples, batch_size=120)
    nll, nll_se = mean_and_stderr(-r.log_likelihood)
    return r.elbo.mean().item(), nll, nll_se


def fit(name, elbo_name, k, guide_options, seed=0):
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    model = VAE(data.data_dim, S["latent_dim"], S["hidden"], data_mean=data.train.mean(0))
    guide = AmortizedNormal(data.data_dim, S["latent_dim"], S["hidden"], **guide_options)
    curve = {"epoch": [], "seconds": [], "test_elbo": [], "test_nll": []}

    def callback(epoch, history):
        if epoch % S["eval_every"] == 0 or epoch == S["epochs"]:
            elbo, nll, _ = evaluate(model, guide, S["eval_samples"], seed=epoch)
            curve["epoch"].append(epoch)
            curve["seconds"].append(sum(history["seconds"]))  # training time only
            curve["test_elbo"].append(elbo)
            curve["test_nll"].append(nll)

    status = "ok"
    try:
        history = train(
            model,
            guide,
            data.train,
            make_elbo(elbo_name, k),
            make_optim(S["lr"]),
            epochs=S["epochs"],
            batch_size=100,
            transform=data.train_transform,
            callback=callback,
            progress=False,
        )
    except TrainingDiverged as exc:
        history, status = exc.history, "diverged"
    elbo, nll, nll_se = evaluate(model, guide, S["final_eval_samples"])
    seconds = history["seconds"]
    row = {
        "K": k,
        "status": status,
        "test_elbo": elbo,
        "test_nll": nll,
        "test_nll_se": nll_se,
        "seconds_per_epoch": sum(seconds) / max(1, len(seconds)),
        "curve": curve,
    }
    print(
        f"{name:>20}: test ELBO {elbo:8.2f}  test NLL {nll:7.2f} ± {nll_se:.2f}  "
        f"{row['seconds_per_epoch']:.3f} s/epoch  ({status})"
    )
    return model, guide, row


trained = {}
results["continuous"] = {}
for name, (elbo_name, k, options) in ESTIMATORS.items():
    model, guide, row = fit(name, elbo_name, k, options)
    trained[name] = (model, guide)
    results["continuous"][name] = row

# %%
fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharey="row")
for name, row in results["continuous"].items():
    c = row["curve"]
    style = "--" if name.startswith("score") else "-"
    for i, key in enumerate(("test_elbo", "test_nll")):
        axes[i, 0].plot(c["epoch"], c[key], style, label=name)
        axes[i, 1].plot(c["seconds"], c[key], style, label=name)
for i, label in enumerate(("test ELBO (nats)", "test NLL (nats)")):
    axes[i, 0].set_ylabel(label)
axes[1, 0].set_xlabel("epoch")
axes[1, 1].set_xlabel("training seconds (2 CPU cores, shared)")
axes[1, 0].set_ylim(top=min(60, axes[1, 0].get_ylim()[1]))
axes[0, 0].set_ylim(bottom=max(-60, axes[0, 0].get_ylim()[0]))
for ax in axes.flat:
    ax.grid(alpha=0.3)
handles, labels = axes[0, 0].get_legend_handles_labels()
fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=8)
fig.suptitle(f"VAE on digits (latent {S['latent_dim']}): test bounds by estimator", fontsize=11)
fig.tight_layout(rect=(0, 0.07, 1, 1))
fig.savefig(os.path.join(OUT, "estimators_curves.png"), dpi=120)
plt.close(fig)

# %% [markdown]
# ![estimators curves](figures/estimators_curves.png)
#
# *Test ELBO (top) and test NLL (bottom) of the nine estimators against epochs (left) and training
# seconds (right). Full run.*

# %% [markdown]
# ## 2. Gradient signal-to-noise ratio against K
#
# At the parameters reached by the pathwise run, we draw the gradient of the IWAE bound many
# times with the IWAE estimator and with DReG, and report the average over coordinates of
# |mean| / std (Rainforth et al. 2018, eq. 6), for the decoder (model) and the encoder
# (guide) separately. Rainforth et al. found the IWAE encoder SNR falling as 1/sqrt(K); DReG's
# should not.

# %%
model, guide = trained["pathwise"]
pyro.clear_param_store()
x_snr = data.train_transform(data.train[:100])
guide(x_snr)
model(x_snr)
snr = {"IWAE": {}, "DReG": {}}
for k in S["snr_ks"]:
    for label, cls in (("IWAE", IWAE), ("DReG", DReG)):
        pyro.set_rng_seed(k)
        stats = gradient_snr(model, guide, cls(k), x_snr, num_draws=S["snr_draws"])
        snr[label][k] = {g: stats[g].average_snr for g in ("model", "guide")}
        print(
            f"{label} K={k:>3}: encoder SNR {snr[label][k]['guide']:.3f}, "
            f"decoder SNR {snr[label][k]['model']:.3f}"
        )
results["snr"] = snr

fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
for ax, group, title in (
    (axes[0], "guide", "encoder (guide)"),
    (axes[1], "model", "decoder (model)"),
):
    for label, marker in (("IWAE", "o"), ("DReG", "s")):
        ks = sorted(snr[label])
        ax.plot(ks, [snr[label][k][group] for k in ks], marker=marker, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("K")
    ax.set_ylabel("average SNR")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
fig.tight_layout()
fig.savefig(os.path.join(OUT, "snr_vs_k.png"), dpi=120)
plt.close(fig)

# %% [markdown]
# ![snr vs k](figures/snr_vs_k.png)
#
# *Average gradient signal-to-noise ratio of the encoder (left) and the decoder (right) against K,
# IWAE and DReG. Full run.*

# %% [markdown]
# ## 3. Discrete latents: a sigmoid belief network
#
# A layer of binary latents (as in NVIL and VIMCO) with a linear decoder and a linear encoder.
# The score-function estimator (`TraceGraph_ELBO`, neural baseline, 5 particles averaged),
# VIMCO with K = 5, and the Concrete relaxation (relaxed prior and guide at temperature 0.5)
# and the straight-through Gumbel estimator (temperature 1) through Pyro's relaxed
# distributions. All are evaluated on the discrete model, by importance sampling with the
# discrete guide (the relaxed guides' encoders used as discrete proposals).

# %%
DISCRETE = {
    "score, neural": (
        lambda: TraceGraph_ELBO(num_particles=5, vectorize_particles=True),
        {"baseline": "neural"},
        None,
    ),
    "VIMCO K=5": (lambda: make_elbo("vimco", 5), {}, None),
    "Concrete": (
        lambda: make_elbo("trace", 5),
        {"relaxation": "concrete", "temperature": 0.5},
        0.5,
    ),
    "straight-through": (
        lambda: make_elbo("trace", 5),
        {"relaxation": "straight_through", "temperature": 1.0},
        None,
    ),
}
results["discrete"] = {}
for name, (make, options, model_temperature) in DISCRETE.items():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    sbn = SigmoidBeliefNet(
        data.data_dim, S["sbn_units"], data_mean=data.train.mean(0), temperature=model_temperature
    )
    q = AmortizedBernoulli(data.data_dim, S["sbn_units"], **options)
    curve = {"epoch": [], "test_nll": []}

    def sbn_callback(epoch, history):
        if epoch % S["eval_every"] == 0 or epoch == S["sbn_epochs"]:
            sbn.temperature, q.relaxation = None, "none"
            _, nll, _ = evaluate(sbn, q, S["eval_samples"], seed=epoch)
            sbn.temperature, q.relaxation = model_temperature, options.get("relaxation", "none")
            curve["epoch"].append(epoch)
            curve["test_nll"].append(nll)

    history = train(
        sbn,
        q,
        data.train,
        make(),
        make_optim(S["lr"]),
        epochs=S["sbn_epochs"],
        batch_size=100,
        transform=data.train_transform,
        callback=sbn_callback,
        progress=False,
    )
    sbn.temperature, q.relaxation = None, "none"
    elbo, nll, nll_se = evaluate(sbn, q, S["final_eval_samples"])
    sec = sum(history["seconds"]) / len(history["seconds"])
    results["discrete"][name] = {
        "test_elbo": elbo,
        "test_nll": nll,
        "test_nll_se": nll_se,
        "seconds_per_epoch": sec,
        "curve": curve,
    }
    print(
        f"{name:>18}: test ELBO {elbo:8.2f}  test NLL {nll:7.2f} ± {nll_se:.2f}  {sec:.3f} s/epoch"
    )

fig, ax = plt.subplots(figsize=(5.5, 3.4))
for name, row in results["discrete"].items():
    ax.plot(row["curve"]["epoch"], row["curve"]["test_nll"], label=name)
ax.set_xlabel("epoch")
ax.set_ylabel("test NLL (nats)")
ax.set_title(f"sigmoid belief network, {S['sbn_units']} binary latents", fontsize=10)
ax.grid(alpha=0.3)
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(os.path.join(OUT, "discrete.png"), dpi=120)
plt.close(fig)

# %% [markdown]
# ![discrete](figures/discrete.png)
#
# *Test NLL of the sigmoid belief network by estimator. Full run.*

# %% [markdown]
# ## 4. Naive Monte Carlo against importance sampling of log p(x)
#
# `importance_sample(..., proposal="prior")` draws z from p(z) (naive Monte Carlo),
# `proposal="guide"` from q(z|x). For 50 test images and a growing number of samples K we
# repeat each estimate of their mean log p(x) several times (different seeds) and plot the
# mean and spread. Both are stochastic lower bounds in expectation, converging from below;
# the prior needs orders of magnitude more samples.

# %%
model, guide = trained["pathwise"]
x_eval = data.test[:50]
naive = {"prior": {}, "guide": {}}
for proposal in ("prior", "guide"):
    for k in S["is_ks"]:
        values = []
        for rep in range(S["is_repeats"]):
            pyro.set_rng_seed(1000 + rep)
            r = importance_sample(
                model, guide, x_eval, num_samples=k, batch_size=50, proposal=proposal
            )
            values.append(r.log_likelihood.mean().item())
        v = torch.tensor(values)
        naive[proposal][k] = {"mean": v.mean().item(), "std": v.std().item() if len(v) > 1 else 0.0}
        print(
            f"{proposal:>5} K={k:>6}: mean log p(x) {v.mean():8.3f}  spread (std over "
            f"{len(v)} repeats) {naive[proposal][k]['std']:.3f}"
        )
results["naive_vs_is"] = naive

fig, ax = plt.subplots(figsize=(5.5, 3.4))
for proposal, label in (("prior", "naive MC (prior)"), ("guide", "importance sampling (guide)")):
    ks = sorted(naive[proposal])
    m = torch.tensor([naive[proposal][k]["mean"] for k in ks])
    s = torch.tensor([naive[proposal][k]["std"] for k in ks])
    ax.errorbar(ks, m, yerr=s, marker="o", capsize=3, label=label)
ax.set_xscale("log")
ax.set_xlabel("samples K")
ax.set_ylabel("estimated mean log p(x) (nats)")
ax.grid(alpha=0.3)
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(os.path.join(OUT, "naive_vs_is.png"), dpi=120)
plt.close(fig)

# %% [markdown]
# ![naive vs is](figures/naive_vs_is.png)
#
# *Estimated mean log p(x) of 50 test images against the number of samples K, with the prior (naive
# Monte Carlo) and the guide (importance sampling) as proposals. Full run.*

# %% [markdown]
# ## 5. Pyro's coin experiment (SVI part III)
#
# A Beta(10, 10) prior on a coin's fairness, 6 heads and 4 tails, and a Beta guide whose
# sampler is not reparameterized, so `TraceGraph_ELBO` uses the score function. As in Pyro's
# tutorial we count the Adam steps (lr 0.0005, betas (0.93, 0.999)) until both guide
# parameters are within 0.8 of the exact posterior Beta(16, 14), with and without the
# decaying-average baseline (beta 0.9). Pyro's tutorial reports 1932 against 4908 steps for
# one run; we repeat over several seeds.

# %%
coin_data = torch.cat([torch.ones(6), torch.zeros(4)])
alpha_n, beta_n = 10.0 + 6, 10.0 + 4


def coin_model(use_baseline):
    f = pyro.sample("latent_fairness", dist.Beta(10.0, 10.0))
    with pyro.plate("data", len(coin_data)):
        pyro.sample("obs", dist.Bernoulli(f), obs=coin_data)


def coin_guide(use_baseline):
    a = pyro.param("alpha_q", torch.tensor(15.0), constraint=constraints.positive)
    b = pyro.param("beta_q", torch.tensor(15.0), constraint=constraints.positive)
    baseline = {"use_decaying_avg_baseline": use_baseline, "baseline_beta": 0.90}
    pyro.sample(
        "latent_fairness", non_reparameterized(dist.Beta(a, b)), infer={"baseline": baseline}
    )


def steps_to_tolerance(use_baseline, seed, tolerance=0.8):
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    svi = SVI(
        coin_model,
        coin_guide,
        pyro.optim.Adam({"lr": 0.0005, "betas": (0.93, 0.999)}),
        TraceGraph_ELBO(),
    )
    for step in range(1, S["coin_steps"] + 1):
        svi.step(use_baseline)
        if (
            abs(pyro.param("alpha_q").item() - alpha_n) < tolerance
            and abs(pyro.param("beta_q").item() - beta_n) < tolerance
        ):
            return step
    return None  # not reached within the step budget


coin = {}
for use_baseline in (False, True):
    t0 = time.perf_counter()
    steps = [steps_to_tolerance(use_baseline, seed) for seed in S["coin_seeds"]]
    key = "decaying avg baseline" if use_baseline else "no baseline"
    coin[key] = steps
    print(f"{key:>22}: steps to tolerance per seed {steps} ({time.perf_counter() - t0:.1f} s)")
results["coin"] = coin

# %% [markdown]
# ## 6. The same study as run folders: `pyrolvm compare`
#
# Part 1 as a researcher runs it from the command line (the README's "Compare estimators from
# the command line"): four runs of the digits VAE at K = 5 for 30 epochs, each
# `pyrolvm train vae --elbo E --num-particles 5 --epochs 30 --out runs/E` (here its Python
# call, `train_vae`), and one `pyrolvm compare runs/trace runs/iwae runs/dreg runs/stl`
# (`compare_runs`). Its table names each run's training bound, and its last column is the
# **paired** difference of each run's test NLL to the first run's, point by point over the
# same 360 test digits: a standard error of a few hundredths of a nat where the runs' own
# are 0.2 (the spread between test digits, which every run shares, cancels).

# %%
run_root = tempfile.mkdtemp(prefix="pyrolvm-compare-")
settings = dict(num_particles=5, epochs=S["run_epochs"], progress=False)
if FAST:
    settings |= dict(hidden=S["hidden"], eval_samples=S["final_eval_samples"])
here = os.getcwd()
os.chdir(run_root)  # the folders as the command line names them: runs/trace, ...
try:
    folders = [f"runs/{elbo}" for elbo in ("trace", "iwae", "dreg", "stl")]
    for folder in folders:
        train_vae(elbo=folder.removeprefix("runs/"), out=folder, **settings)
    comparison = compare_runs(folders, out="comparison")
    print(comparison.table())
    results["compare"] = comparison.to_dict()
    for name in ("curves", "test_nll"):
        shutil.copy(
            os.path.join("comparison", f"{name}.png"),
            os.path.join(here, OUT, f"compare_{name}.png"),
        )
finally:
    os.chdir(here)
    shutil.rmtree(run_root)

# %% [markdown]
# ![compare curves](figures/compare_curves.png)
#
# *`curves.png` of `pyrolvm compare`: the test ELBO (K = 1) of every run on one axis; the
# training objectives on axes of their own (trace and STL train the ELBO, IWAE and DReG the
# IWAE-5 bound: never two bounds on one axis). Full run.*
#
# ![compare nll](figures/compare_test_nll.png)
#
# *`test_nll.png`: each run's test NLL with ± 1 standard error, and the paired differences to
# the first run with ± 1 paired standard error. Full run.*

# %% [markdown]
# ## Summary table

# %%
print(f"\n{'estimator':>22} {'K':>3} {'test ELBO':>10} {'test NLL':>16} {'s/epoch':>8}")
for name, row in results["continuous"].items():
    print(
        f"{name:>22} {row['K']:>3} {row['test_elbo']:>10.2f} "
        f"{row['test_nll']:>9.2f} ± {row['test_nll_se']:.2f} {row['seconds_per_epoch']:>8.3f}"
    )
for name, row in results["discrete"].items():
    print(
        f"{'SBN ' + name:>22} {'':>3} {row['test_elbo']:>10.2f} "
        f"{row['test_nll']:>9.2f} ± {row['test_nll_se']:.2f} {row['seconds_per_epoch']:>8.3f}"
    )
with open(os.path.join(OUT, "compare_estimators.json"), "w") as f:
    json.dump(results, f, indent=1, default=lambda o: None if o is None else str(o))
print(f"figures and compare_estimators.json in {OUT}")
