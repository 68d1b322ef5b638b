"""`pyrolvm train vae --mask ... --missing-rate ...` end to end on digits, and its errors."""

import os

import pytest
import torch
from helpers import cli_error

from pyrolvm.cli import main
from pyrolvm.data import load, make_mask
from pyrolvm.runs.common import read_json
from pyrolvm.runs.missing import TEST_MASK_SEED, mean_imputation

RUN = ["train", "vae", "--epochs", "2", "--hidden", "32", "--eval-samples", "20", "--no-progress"]


def test_missing_data_run_writes_imputation_figures_and_evaluate_reproduces(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main([*RUN, "--mask", "square", "--missing-rate", "0.25", "--out", out]) == 0
    printed = capsys.readouterr().out
    assert "imputation MSE (SNIS / mean)" in printed and "square mask" in printed
    metrics = read_json(os.path.join(out, "metrics.json"))
    assert os.path.getsize(os.path.join(out, "imputation.png")) > 1000
    assert "imputation.png" in metrics["figures"]
    # a 4 x 4 hole in every 8 x 8 test digit
    assert metrics["missing_share"] == 0.25 and metrics["test_all_missing"] == 0
    # the mean-imputation baseline, recomputed from the run's seeded masks: the Brier score of
    # the mean observed training pixel at the test set's missing pixels
    data = load("digits", binarize="dynamic", seed=0)
    train_mask = make_mask("square", len(data.train), (8, 8), 0.25, seed=0)
    test_mask = make_mask("square", len(data.test), (8, 8), 0.25, seed=TEST_MASK_SEED)
    baseline = mean_imputation(data.train, train_mask).expand_as(data.test)
    expected = ((baseline - data.test) ** 2)[~test_mask].double().mean().item()
    assert metrics["mean_imputation_mse"] == pytest.approx(expected, rel=1e-6)
    # SNIS imputation probabilities are a Brier score below 0.25 (a coin) after 2 epochs
    assert 0 < metrics["imputation_mse"] < 0.25
    capsys.readouterr()
    assert main(["evaluate", out]) == 0
    again = capsys.readouterr().out
    assert f"{metrics['imputation_mse']:.4f}" in again
    assert f"{metrics['test_nll']:.2f}" in again


def test_missing_rate_alone_means_random_mask(tmp_path, capsys):
    out = str(tmp_path / "r")
    assert main([*RUN, "--epochs", "1", "--missing-rate", "0.5", "--out", out]) == 0
    config = read_json(os.path.join(out, "config.json"))
    assert config["mask"] == "random" and config["missing_rate"] == 0.5
    metrics = read_json(os.path.join(out, "metrics.json"))
    # MCAR at 0.5 over 360 x 64 pixels: within 4 binomial SEs
    assert abs(metrics["missing_share"] - 0.5) < 4 * (0.25 / (360 * 64)) ** 0.5
    assert torch.isfinite(torch.tensor(metrics["test_nll"]))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--mask", "half", "--missing-rate", "0.3"], "drop --missing-rate"),
        (["--mask", "random", "--latent", "bernoulli"], "which has no flag --mask"),
        (["--missing-rate", "1.0"], "--missing-rate must be"),
    ],
)
def test_bad_missing_input(tmp_path, capsys, argv, message):
    err = cli_error(capsys, ["train", "vae", "--out", str(tmp_path / "r"), *argv])
    assert message in err
