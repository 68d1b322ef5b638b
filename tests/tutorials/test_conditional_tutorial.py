"""The conditional-and-multimodal tutorial runs end to end in fast mode and writes its
tables and figures."""

import math
import os

from helpers import run_tutorial_fast

from pyrolvm.runs.common import read_json


def test_tutorial_fast_mode(tmp_path):
    proc = run_tutorial_fast("conditional_and_multimodal.py", tmp_path)
    for name in (
        "missing_imputation.png",
        "cvae_completions_q1.png",
        "cvae_completions_q3.png",
        "mvae_label_to_image.png",
        "cvae_label_samples_per_class.png",
        "mvae_halves_top_to_bottom.png",
        "mvae_halves_bottom_to_top.png",
    ):
        assert os.path.getsize(tmp_path / name) > 1000, name
    results = read_json(tmp_path / "conditional_and_multimodal.json")
    assert 0 < results["missing"]["imputation_mse"] < 0.25  # a Brier score below a coin's
    assert set(results["cvae"]) >= {"q1", "q2", "q3", "pyro_tutorial_nll"}
    assert 0 < results["mvae"]["label_nll"] < math.log(10) + 0.5
    assert 0 < results["cvae_label"]["cvae_nll"] < 64 * math.log(2)
    assert 0 < results["mvae_halves"]["bottom_given_top_nll"] < 32 * math.log(2)
    assert "| -log p(bottom given top) |" in proc.stdout
    assert 0 <= results["mmvae"]["accuracy"] <= 1 and "| MVAE (PoE) | MMVAE (MoE) |" in proc.stdout
    assert "| SNIS over q(z | x_obs)" in proc.stdout and "| 1 quadrant(s) |" in proc.stdout
