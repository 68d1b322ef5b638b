"""The posteriors-and-priors tutorial runs end to end in fast mode and writes its table and
figures."""

import os

from helpers import run_tutorial_fast

from pyrolvm.runs.common import read_json


def test_tutorial_fast_mode(tmp_path):
    proc = run_tutorial_fast("posteriors_and_priors.py", tmp_path)
    for name in ("posterior_densities.png", "posteriors_samples.png"):
        assert os.path.getsize(tmp_path / name) > 1000
    results = read_json(tmp_path / "posteriors_and_priors.json")
    assert len(results["table"]) == 8 and len(results["posterior_kl"]) == 4
    for row in results["table"].values():
        # between a perfect model and a coin per pixel (64 log 2 = 44.4 nats)
        assert 0 < row["test_nll"] < 64 * 0.6932
        assert row["kl"] > 0 and row["scored_on"] == "binarized"
        assert abs(row["nll_minus_diagonal"]) < 5
    for kls in results["posterior_kl"].values():
        assert all(k > -0.05 for k in kls)  # a KL, up to the 2000-draw Monte Carlo error
    assert "| setting | test NLL (nats) |" in proc.stdout
