"""Every baseline and latent type is selectable from the `pyrolvm` command and trains the
digits VAE for one epoch (every --elbo: tests/test_cli.py)."""

import json
import os

import pytest

from pyrolvm.cli import main

FAST = ["--epochs", "1", "--eval-samples", "10", "--no-progress", "--hidden", "16"]


def run(tmp_path, name, *flags):
    out = str(tmp_path / name)
    code = main(["train", "vae", "--out", out, *FAST, *flags])
    metrics = json.load(open(os.path.join(out, "metrics.json"))) if code == 0 else None
    return code, metrics, out


@pytest.mark.parametrize("baseline", ["none", "decaying_avg", "neural"])
def test_score_function_with_each_baseline(tmp_path, baseline):
    # --no-reparam makes tracegraph use REINFORCE; 1437 digits end in a smaller last batch,
    # which the decaying average has to survive
    code, metrics, out = run(tmp_path, baseline, "--elbo", "tracegraph", "--no-reparam",
                             "--baseline", baseline)
    assert code == 0 and metrics["status"] == "ok"
    config = json.load(open(os.path.join(out, "config.json")))
    assert config["baseline"] == baseline and config["reparameterized"] is False


@pytest.mark.parametrize("flags", [
    ["--latent", "bernoulli", "--elbo", "vimco", "--num-particles", "3"],
    ["--latent", "bernoulli", "--elbo", "tracegraph", "--baseline", "neural"],
    ["--latent", "categorical", "--num-categories", "3", "--elbo", "iwae",
     "--num-particles", "2", "--relaxation", "straight_through", "--temperature", "1.0"],
    ["--latent", "categorical", "--num-categories", "3", "--elbo", "trace",
     "--relaxation", "concrete"],
], ids=["bern-vimco", "bern-neural", "cat-st-iwae", "cat-concrete"])
def test_discrete_latents(tmp_path, flags, capsys):
    code, metrics, out = run(tmp_path, "run", "--latent-dim", "4", *flags)
    assert code == 0 and metrics["status"] == "ok", capsys.readouterr().err
    assert "latent=" in capsys.readouterr().out
    # `evaluate` reproduces the (discrete) test figures from the checkpoint
    assert main(["evaluate", out, "--no-progress"]) == 0
    assert f"{metrics['test_nll']:.2f}" in capsys.readouterr().out


@pytest.mark.parametrize("flags, message", [
    (["--baseline", "neural"], "--no-reparam"),
    (["--relaxation", "concrete"], "--latent bernoulli"),
    (["--latent", "bernoulli", "--relaxation", "concrete", "--baseline", "neural"],
     "--no-reparam"),
    (["--elbo", "vimco"], "num_particles >= 2"),
    (["--elbo", "dreg", "--num-particles", "2", "--latent", "bernoulli"], "rsample"),
])
def test_bad_combinations_give_one_line(tmp_path, capsys, flags, message):
    code, _, _ = run(tmp_path, "bad", *flags)
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
