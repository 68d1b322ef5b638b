"""The autoregressive-and-codebooks tutorial runs end to end in fast mode and writes its NLL
table, figures, interventional distributions and ATE estimates."""

import math
import os

from helpers import run_tutorial_fast

from pyrolvm.runs.common import read_json


def test_tutorial_fast_mode(tmp_path):
    proc = run_tutorial_fast("autoregressive_and_codebooks.py", tmp_path)
    for name in ("autoregressive_samples.png", "interventions.png"):
        assert os.path.getsize(tmp_path / name) > 1000
    results = read_json(tmp_path / "autoregressive_and_codebooks.json")
    names = {"vae", "iwae", "made", "made8", "pixelcnn", "vqvae", "pixelvae"}
    assert set(results["nll"]) == names
    for row in results["nll"].values():
        # digits: 64 binary pixels; every model beats twice the uniform model's 64 ln 2 nats
        assert 0 < row["test_nll"] < 2 * 64 * math.log(2)
        assert abs(row["bits_per_dim"] - row["test_nll"] / (64 * math.log(2))) < 1e-9
    collapse = results["collapse"]
    assert set(collapse) == {"vae", "vae_short", "pixelvae"}
    for row in collapse.values():  # one K for the whole table; ELBO = -(rate + distortion)
        assert row["eval_samples"] == collapse["pixelvae"]["eval_samples"]
        assert abs(row["test_elbo"] + row["rate"] + row["distortion"]) < 1e-6
        assert 0 <= row["active_units"] <= row["latent_dim"]
    assert collapse["pixelvae"]["test_nll"] == results["nll"]["pixelvae"]["test_nll"]
    assert "| decoder | test NLL |" in proc.stdout
    assert results["interventions"]["x causes y"]["exact_mean"] == 4.0
    assert results["interventions"]["confounded"]["exact_mean"] == 1.0
    assert abs(results["ate"]["true_ate"] - 0.1012) < 1e-3
    assert "| model | test NLL (nats) |" in proc.stdout
