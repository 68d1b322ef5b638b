"""Every baseline and latent type is selectable from the `pyrolvm` command and trains the
digits VAE for one epoch (every --elbo: tests/test_cli.py)."""

import os

import pytest
from helpers import cli_error

from pyrolvm.cli import main
from pyrolvm.runs import evaluate_sbn
from pyrolvm.runs.common import read_json

FAST = ["--epochs", "1", "--eval-samples", "10", "--no-progress", "--hidden", "16"]


def run(tmp_path, name, *flags):
    out = str(tmp_path / name)
    code = main(["train", "vae", "--out", out, *FAST, *flags])
    metrics = read_json(os.path.join(out, "metrics.json")) if code == 0 else None
    return code, metrics, out


@pytest.mark.parametrize("baseline", ["none", "decaying_avg", "neural"])
def test_score_function_with_each_baseline(tmp_path, baseline):
    # --no-reparam makes tracegraph use REINFORCE; 1437 digits end in a smaller last batch,
    # which the decaying average has to survive
    code, metrics, out = run(
        tmp_path, baseline, "--elbo", "tracegraph", "--no-reparam", "--baseline", baseline
    )
    assert code == 0 and metrics["status"] == "ok"
    config = read_json(os.path.join(out, "config.json"))
    assert config["baseline"] == baseline and config["reparameterized"] is False


@pytest.fixture(scope="module")
def none_baseline_variance():
    return _encoder_gradient_variance("none")


def _encoder_gradient_variance(baseline):
    """Total variance of TraceGraph_ELBO's encoder gradient (REINFORCE, guide not
    reparameterized) on 100 digits, at the seeded initial encoder and decoder, after 60
    steps that train only the baseline (lr 0 for every other parameter)."""
    import pyro
    from pyro.infer import SVI, TraceGraph_ELBO

    from pyrolvm.data import load
    from pyrolvm.guides import AmortizedNormal
    from pyrolvm.inference import gradient_snr
    from pyrolvm.models import VAE

    ds = load("digits", binarize="static")
    x = ds.train[:100]
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    model = VAE(64, 4, (32,), data_mean=ds.train.mean(0))
    guide = AmortizedNormal(64, 4, (32,), reparameterized=False, baseline=baseline)
    elbo = TraceGraph_ELBO()
    optim = pyro.optim.Adam(lambda name: {"lr": 1e-2 if "baseline" in name else 0.0})
    svi = SVI(model, guide, optim, elbo)
    for _ in range(60):
        svi.step(x)
    names = [n for n in pyro.get_param_store() if n.startswith("encoder") and "baseline" not in n]
    assert names
    stats = gradient_snr(model, guide, elbo, x, num_draws=50, param_groups={"encoder": names})
    return stats["encoder"].variance.sum().item()


@pytest.mark.parametrize("baseline", ["decaying_avg", "neural"])
def test_each_baseline_lowers_the_score_function_gradient_variance(
    baseline, none_baseline_variance
):
    # Measured (seed 0): total encoder-gradient variance 8.9e6 without a baseline, 1.9e4 with
    # the decaying average, 1.4e5 with the neural baseline. Each variance is estimated from
    # 50 draws (relative standard error ~sqrt(2 / 49) = 0.2 per coordinate), so "at most
    # half" is a margin of many standard errors that still fails if a baseline is ignored.
    assert _encoder_gradient_variance(baseline) < 0.5 * none_baseline_variance


@pytest.mark.parametrize(
    "flags",
    [
        ["--latent", "bernoulli", "--elbo", "vimco", "--num-particles", "3"],
        ["--latent", "bernoulli", "--elbo", "tracegraph", "--baseline", "neural"],
        [
            "--latent",
            "categorical",
            "--num-categories",
            "3",
            "--elbo",
            "iwae",
            "--num-particles",
            "2",
            "--relaxation",
            "straight_through",
            "--temperature",
            "1.0",
        ],
        [
            "--latent",
            "categorical",
            "--num-categories",
            "3",
            "--elbo",
            "trace",
            "--relaxation",
            "concrete",
        ],
    ],
    ids=["bern-vimco", "bern-neural", "cat-st-iwae", "cat-concrete"],
)
def test_discrete_latents(tmp_path, flags, capsys):
    code, metrics, out = run(tmp_path, "run", "--latent-dim", "4", *flags)
    assert code == 0 and metrics["status"] == "ok", capsys.readouterr().err
    assert "latent=" in capsys.readouterr().out
    # `evaluate` reproduces the (discrete) test figures from the checkpoint
    assert main(["evaluate", out, "--no-progress"]) == 0
    assert f"{metrics['test_nll']:.2f}" in capsys.readouterr().out
    # With 4 latents (16 or 81 states) the test NLL is known exactly by enumeration. Measured:
    # the K = 10 estimate lies 0.005-0.02 nats above it (its bias, Var(w) / (2 K E[w]^2) per
    # point, with ESS ~ 8 of 10), the K = 500 one within 0.002 (ESS ~ 430 of 500: per-point
    # standard error ~0.02, 0.001 for the mean over 360 test digits, bias < 0.001).
    exact = _enumerated_test_nll(out)
    assert exact - 0.01 < metrics["test_nll"] < exact + 0.06
    assert evaluate_sbn(out, eval_samples=500, progress=False)["test_nll"] == pytest.approx(
        exact, abs=0.01
    )


def _enumerated_test_nll(out):
    """-mean log p(x) over the digits test set, summing p(z) p(x | z) over every latent state
    of the checkpoint's SigmoidBeliefNet (prior and likelihood written out here)."""
    import itertools

    import pyro.distributions as dist
    import torch

    from pyrolvm.data import load
    from pyrolvm.models import SigmoidBeliefNet

    state = torch.load(os.path.join(out, "checkpoint.pt"), weights_only=True)
    cfg = state["config"]
    net = SigmoidBeliefNet(
        cfg["data_dim"],
        cfg["latent_dim"],
        cfg["latent"],
        cfg["num_categories"],
        tuple(cfg["hidden"]),
        cfg["activation"],
    )
    net.load_state_dict(state["parts"]["model"])
    logits = net.prior_logits.detach()
    c = 2 if cfg["latent"] == "bernoulli" else cfg["num_categories"]
    states = torch.tensor(list(itertools.product(range(c), repeat=cfg["latent_dim"])))
    if cfg["latent"] == "bernoulli":
        z = states.to(logits.dtype)
        log_prior = (z * logits - torch.nn.functional.softplus(logits)).sum(-1)
    else:
        z = torch.nn.functional.one_hot(states, c).to(logits.dtype)
        log_prior = (z * logits.log_softmax(-1)).sum((-1, -2))
    x = load("digits", binarize=cfg["binarize"], seed=cfg["seed"]).test
    with torch.no_grad():
        out_logits = net.decoder(z.reshape(len(z), -1))  # (S, D)
        log_lik = dist.Bernoulli(logits=out_logits).log_prob(x.unsqueeze(1)).sum(-1)  # (N, S)
    return -(log_lik + log_prior).logsumexp(-1).mean().item()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--baseline", "neural"], "--no-reparam"),
        (["--relaxation", "concrete"], "no flag --relaxation (a flag of sbn)"),
        (
            ["--latent", "bernoulli", "--relaxation", "concrete", "--baseline", "neural"],
            "drop --relaxation or --baseline",
        ),
        (["--elbo", "vimco"], "num_particles >= 2"),
        (["--elbo", "dreg", "--num-particles", "2", "--latent", "bernoulli"], "rsample"),
    ],
)
def test_bad_combinations_give_one_line(tmp_path, capsys, flags, message):
    err = cli_error(capsys, ["train", "vae", "--out", str(tmp_path / "bad"), *FAST, *flags])
    assert message in err
