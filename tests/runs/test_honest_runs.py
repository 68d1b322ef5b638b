"""Runs that say what they show and can be extended (issue 27, items 6, 7 and 9), from the
command line on the digits with tiny networks:

- the summary, metrics.json and elbo_curve.png name the training objective's bound (``train
  IWAE-3 bound``), and no axis of the curve plots two different bounds as train and test;
- the latent diagnostics of every Gaussian-latent model (two layers, a VampPrior: Monte Carlo
  with their standard error), recomputed identically by ``pyrolvm evaluate``;
- a finished run extended with ``--resume --epochs N`` ends bitwise equal to the run trained
  for N epochs at once; shortening is refused, and so is extending a schedule spread over the
  epochs;
- ``--epochs 0`` is one clear error for every kind, and a summary without epochs prints;
- VIMCO on the reparameterized guide says it is IWAE.
"""

import json
import os
import re

import pytest
from helpers import cli_error

from pyrolvm.cli import main
from pyrolvm.plots import bound_panels
from pyrolvm.runs import RUNS
from pyrolvm.runs.vae import VAEConfig

FAST = ["--eval-samples", "20", "--no-progress", "--hidden", "16"]


def metrics_of(out):
    with open(os.path.join(out, "metrics.json")) as f:
        return json.load(f)


def train(capsys, out, *argv):
    assert main(["train", "vae", "--out", out, *FAST, *argv]) == 0
    return capsys.readouterr().out


def test_an_iwae_run_names_its_bound_and_plots_like_against_like(tmp_path, capsys):
    out = str(tmp_path / "iwae")
    printed = train(capsys, out, "--epochs", "2", "--elbo", "iwae", "--num-particles", "3")
    assert "train IWAE-3 bound" in printed and "train ELBO" not in printed
    m = metrics_of(out)
    assert m["bound_name"] == "IWAE-3 bound"
    curves = m["curves"]
    assert curves["bound_name"] == ["IWAE-3 bound"] * 2
    assert len(curves["test_bound"]) == len(curves["test_elbo"]) == 2
    # the IWAE-3 bound on the test set lies above its ELBO (the same model; Burda et al.)
    assert all(b > e for b, e in zip(curves["test_bound"], curves["test_elbo"], strict=True))
    panels = bound_panels(curves)
    assert [list(series) for _, _, series in panels] == [
        ["train IWAE-3 bound", "test IWAE-3 bound"],
        ["test ELBO"],
    ]
    assert os.path.getsize(os.path.join(out, "elbo_curve.png")) > 1000


def test_an_elbo_run_plots_train_and_test_elbo_together(tmp_path, capsys):
    out = str(tmp_path / "trace")
    printed = train(capsys, out, "--epochs", "1")
    assert "train ELBO" in printed
    m = metrics_of(out)
    assert m["bound_name"] == "ELBO" and "test_bound" not in m["curves"]
    assert [list(s) for _, _, s in bound_panels(m["curves"])] == [["train ELBO", "test ELBO"]]


@pytest.mark.parametrize(
    "argv, sites, method",
    [
        (["--layers", "2", "--latent-dim", "3", "--latent-dim2", "2"], 2, "monte carlo"),
        (["--prior", "vamp", "--pseudo-inputs", "10"], 1, "monte carlo"),
    ],
)
def test_latent_diagnostics_of_any_gaussian_latent_model_and_evaluate_recomputes_them(
    tmp_path, capsys, argv, sites, method
):
    out = str(tmp_path / "run")
    printed = train(capsys, out, "--epochs", "1", *argv)
    assert "rate / distortion" in printed and "Monte Carlo" in printed
    m = metrics_of(out)
    assert m["rate_method"] == method and len(m["latent_sites"]) == sites
    assert m["rate_stderr"] > 0 and m["rate"] + m["distortion"] == pytest.approx(-m["test_elbo"])
    assert main(["evaluate", out, "--no-progress"]) == 0
    evaluated = capsys.readouterr().out
    assert "rate / distortion" in evaluated and "mutual information" in evaluated
    from pyrolvm.runs import evaluate_vae

    again = evaluate_vae(out, progress=False)
    for key in ("rate", "rate_stderr", "distortion", "active_units", "mutual_information"):
        assert again[key] == m[key], key


def test_a_finished_run_is_extended_bitwise_as_if_trained_at_once(tmp_path, capsys):
    short, long_ = str(tmp_path / "short"), str(tmp_path / "long")
    train(capsys, short, "--epochs", "1", "--elbo", "iwae", "--num-particles", "2")
    err = cli_error(capsys, ["train", "vae", "--out", short, *FAST, "--epochs", "2"])
    assert "--resume" in err  # an occupied folder without --resume is still refused
    printed = train(
        capsys, short, "--epochs", "2", "--elbo", "iwae", "--num-particles", "2", "--resume"
    )
    assert "2 epochs" in printed
    train(capsys, long_, "--epochs", "2", "--elbo", "iwae", "--num-particles", "2")
    a, b = metrics_of(short), metrics_of(long_)
    assert a["epochs"] == 2 and a["curves"]["train_elbo"] == b["curves"]["train_elbo"]
    assert a["curves"]["test_bound"] == b["curves"]["test_bound"]
    assert a["test_nll"] == b["test_nll"] and a["rate"] == b["rate"]
    with open(os.path.join(short, "config.json")) as f:
        assert json.load(f)["epochs"] == 2
    # a run is extended, never shortened
    err = cli_error(
        capsys,
        ["train", "vae", "--out", short, *FAST, "--epochs", "1", "--elbo", "iwae"]
        + ["--num-particles", "2", "--resume"],
    )
    assert "can be extended, not shortened" in err and "--epochs 2" in err


def test_a_schedule_spread_over_the_epochs_cannot_be_extended(tmp_path, capsys):
    out = str(tmp_path / "burda")
    train(capsys, out, "--epochs", "1", "--lr-schedule", "burda")
    err = cli_error(
        capsys,
        ["train", "vae", "--out", out, *FAST, "--epochs", "2", "--lr-schedule", "burda"]
        + ["--resume"],
    )
    assert "cannot be extended" in err and "--lr-schedule burda" in err


@pytest.mark.parametrize("kind", sorted(RUNS))
def test_zero_epochs_is_one_clear_error_for_every_kind(tmp_path, capsys, kind):
    err = cli_error(capsys, ["train", kind, "--out", str(tmp_path / kind), "--epochs", "0"])
    assert "--epochs must be >= 1" in err
    assert not os.path.exists(tmp_path / kind)


def test_a_summary_without_epochs_prints():
    metrics = {
        "train_elbo": None,
        "bound_name": "ELBO",
        "test_elbo": -30.0,
        "test_nll": 29.0,
        "test_nll_stderr": 0.2,
        "test_ess": 3.0,
        "eval_samples": 10,
        "seconds_per_epoch": None,
        "epochs": 0,
        "figures": [],
    }
    text = RUNS["vae"].summary(metrics, VAEConfig(dataset="digits"), "runs/x")
    assert re.search(r"^train ELBO +n/a \(no epoch ran\)$", text, flags=re.M)
    assert re.search(r"^seconds per epoch +n/a \(no epoch ran\)$", text, flags=re.M)


def test_vimco_on_the_reparameterized_guide_says_it_is_iwae(tmp_path, capsys):
    argv = ["--epochs", "1", "--elbo", "vimco", "--num-particles", "2"]
    printed = train(capsys, str(tmp_path / "vimco"), *argv)
    assert "every latent reparameterized: IWAE's gradient" in printed
    printed = train(capsys, str(tmp_path / "score"), *argv, "--no-reparam")
    assert "IWAE's gradient" not in printed
