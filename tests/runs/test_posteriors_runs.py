"""`pyrolvm train vae` with the richer guides, priors, layers and likelihoods: the run folder
says what was used and what was scored, `evaluate` rebuilds the same model from the
checkpoint, `--resume` ends as the uninterrupted run, and bad combinations get one error."""

import os

import pytest
import torch
from helpers import cli_error
from test_reliability import KillAt, checkpoint, without_times

from pyrolvm.cli import main
from pyrolvm.errors import Interrupted
from pyrolvm.runs import evaluate_vae, train_vae
from pyrolvm.runs.common import read_json

FAST = dict(epochs=1, hidden=(16,), eval_samples=20, progress=False)


@pytest.mark.parametrize(
    "options, scored, bits",
    [
        (dict(guide="iaf", flows=2, prior="flow", elbo="dreg", num_particles=2), "binarized", 1),
        (dict(guide="fullcov", prior="vamp", pseudo_inputs=10, elbo="iwae"), "binarized", 1),
        (dict(guide="planar", flows=2, likelihood="continuous-bernoulli"), "density", 0),
        (dict(layers=2, likelihood="categorical", elbo="stl"), "17-level", 1),
    ],
)
def test_run_folder_says_what_was_used_and_evaluate_rebuilds_it(tmp_path, options, scored, bits):
    out = str(tmp_path / "run")
    metrics = train_vae(out=out, **FAST, **options)
    config = read_json(os.path.join(out, "config.json"))
    for key, value in options.items():
        assert config[key] == value
    assert scored in metrics["scored_on"]
    assert ("test_bits_per_dim" in metrics) == bool(bits)
    if bits:  # nats per datapoint over D ln 2
        assert metrics["test_bits_per_dim"] == pytest.approx(metrics["test_nll"] / (64 * 0.693147))
    assert metrics["prior"] == options.get("prior", "normal")
    assert metrics["layers"] == options.get("layers", 1)
    assert {"samples.png", "reconstructions.png"} <= set(os.listdir(out))
    again = evaluate_vae(out, progress=False)
    for key in ("test_nll", "test_elbo", "scored_on"):
        assert again[key] == metrics[key]


def test_resume_of_a_flow_guide_with_a_flow_prior_equals_the_uninterrupted_run(tmp_path):
    options = dict(guide="iaf", flows=2, prior="flow", epochs=2, hidden=(16,), eval_samples=20)
    full = train_vae(out=str(tmp_path / "full"), progress=False, **options)
    out = str(tmp_path / "run")
    with pytest.raises(Interrupted):
        train_vae(out=out, data=KillAt(20), progress=False, **options)  # mid-epoch 2
    resumed = train_vae(out=out, resume=True, progress=False, **options)
    assert without_times(resumed) == without_times(full)
    a, b = checkpoint(str(tmp_path / "full")), checkpoint(out)
    for part in ("model", "guide"):
        assert all(torch.equal(a["parts"][part][k], b["parts"][part][k]) for k in a["parts"][part])


def test_the_command_line_takes_the_new_flags(tmp_path, capsys):
    out = str(tmp_path / "cli")
    argv = ["train", "vae", "--out", out, "--epochs", "1", "--eval-samples", "10"]
    argv += ["--hidden", "16", "--no-progress", "--guide", "fullcov", "--prior", "vamp"]
    assert main([*argv, "--pseudo-inputs", "5"]) == 0
    printed = capsys.readouterr().out
    assert "guide=fullcov, prior=vamp (K=5)" in printed and "data scored" in printed
    assert main(["evaluate", out, "--no-progress"]) == 0
    assert "bits per dim" in capsys.readouterr().out


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--guide", "planar", "--elbo", "stl"], "use an invertible flow (e.g. IAF)"),
        (["--guide", "planar", "--elbo", "dreg"], "cannot evaluate its density"),
        (["--flows", "3"], "--flows is for --guide planar or iaf"),
        (["--pseudo-inputs", "3"], "--pseudo-inputs is for --prior vamp"),
        (["--prior", "vamp", "--guide", "iaf"], "--guide normal or fullcov"),
        (["--prior", "vamp", "--layers", "2"], "one stochastic layer"),
        (["--layers", "2", "--guide", "fullcov"], "its own guide and decoder"),
        (["--levels", "17"], "--likelihood categorical"),
        (["--likelihood", "categorical", "--levels", "16"], "17 for digits"),
        (["--likelihood", "continuous-bernoulli", "--binarize", "static"], "drop --binarize"),
        (["--guide", "iaf", "--amortization-gap", "5"], "--guide normal"),
        (
            ["--guide", "iaf", "--latent", "bernoulli"],
            "is `pyrolvm train sbn`, which has no flag --guide",
        ),
        (["--prior", "vamp", "--pseudo-inputs", "100000"], "exceeds"),
        (["--prior", "flow", "--latent-dim", "1"], "a flow prior needs latent_dim >= 2"),
    ],
)
def test_bad_combinations_give_one_error(tmp_path, capsys, flags, message):
    argv = ["train", "vae", "--out", str(tmp_path / "bad"), "--epochs", "1", "--no-progress"]
    assert message in cli_error(capsys, [*argv, *flags])
