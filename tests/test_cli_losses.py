"""`pyrolvm train vae` with the loss options, the latent diagnostics in metrics.json, and
`pyrolvm evaluate RUN --amortization-gap N`."""

import json
import os

import pytest
from helpers import cli_error

from pyrolvm.cli import main
from pyrolvm.runs.common import read_json

FAST = ["--epochs", "2", "--eval-samples", "20", "--no-progress", "--hidden", "16"]


def metrics_of(out):
    return json.load(open(os.path.join(out, "metrics.json")))


def test_annealed_beta_run_writes_the_latent_diagnostics(tmp_path, capsys):
    out = str(tmp_path / "beta")
    assert (
        main(
            [
                "train",
                "vae",
                "--elbo",
                "beta",
                "--beta",
                "4",
                "--anneal",
                "cyclical",
                "--warmup-epochs",
                "1",
                "--out",
                out,
                *FAST,
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "elbo=beta beta=4.0 anneal=cyclical warmup_epochs=1" in printed
    assert "active units" in printed and "mutual information" in printed
    m = metrics_of(out)
    assert len(m["kl_per_dim"]) == 8 and len(m["activity"]) == 8
    assert m["rate"] == pytest.approx(sum(m["kl_per_dim"]))
    assert m["rate"] + m["distortion"] == pytest.approx(-m["test_elbo"])
    assert 0 <= m["active_units"] <= 8
    assert m["mutual_information"] <= m["rate"] + 1e-6 or m["rate"] < 0.05
    assert read_json(os.path.join(out, "config.json"))["anneal"] == "cyclical"
    for name in ("latent_traversals.png", "interpolation.png"):
        assert name in m["figures"] and os.path.getsize(os.path.join(out, name)) > 1000


@pytest.mark.parametrize(
    "argv",
    [
        ["--elbo", "freebits", "--free-bits", "0.5"],
        ["--elbo", "mmd", "--mmd-weight", "10", "--bandwidth", "2"],
        ["--elbo", "renyi", "--alpha", "0.5", "--num-particles", "3"],
        ["--elbo", "piwae", "--num-groups", "2", "--num-particles", "2"],
        ["--elbo", "ciwae", "--beta", "0.3", "--num-particles", "3"],
    ],
    ids=["freebits", "mmd", "renyi", "piwae", "ciwae"],
)
def test_each_loss_option_trains(tmp_path, argv):
    out = str(tmp_path / "r")
    assert main(["train", "vae", *argv, "--out", out, *FAST[:1], "1", *FAST[2:]]) == 0
    assert metrics_of(out)["status"] == "ok"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--alpha", "0.5"], "--elbo trace does not take --alpha"),
        (["--elbo", "beta", "--free-bits", "1"], "--elbo beta does not take --free-bits"),
        (["--elbo", "beta", "--warmup-epochs", "3"], "--warmup-epochs needs --anneal"),
        (["--elbo", "ciwae", "--beta", "2"], "CIWAE's beta must lie in [0, 1]"),
        (["--elbo", "beta", "--beta", "-1"], "--beta must be >= 0"),
        (["--elbo", "beta", "--anneal", "cosine"], "invalid choice 'cosine'"),
    ],
)
def test_bad_loss_options_give_one_clear_error(tmp_path, capsys, argv, message):
    err = cli_error(capsys, ["train", "vae", "--out", str(tmp_path / "r"), *FAST, *argv])
    assert message in err
    assert not os.path.exists(tmp_path / "r")


def test_evaluate_amortization_gap(tmp_path, capsys):
    out = str(tmp_path / "vae")
    assert main(["train", "vae", "--out", out, *FAST]) == 0
    capsys.readouterr()
    assert main(["evaluate", out, "--amortization-gap", "4", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "amortization gap (4 test points)" in printed
    assert "approximation gap (4 test points)" in printed
    err = cli_error(capsys, ["evaluate", out, "--amortization-gap", "0"])
    assert "--amortization-gap must be >= 1" in err
