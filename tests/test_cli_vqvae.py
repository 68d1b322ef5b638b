"""`pyrolvm train vqvae` end to end on digits: both stages, the run folder, the two-stage NLL
bound (recon + prior = bound; below the uniform-prior bound once the prior is trained) and
`pyrolvm evaluate` reproducing it."""

import math
import os

import pytest

from pyrolvm.cli import main
from pyrolvm.runs import evaluate_run
from pyrolvm.runs.common import read_json


def test_train_vqvae_and_evaluate_reproduces(tmp_path, capsys):
    out = str(tmp_path / "run")
    argv = ["train", "vqvae", "--epochs", "2", "--prior-epochs", "3", "--num-codes", "8"]
    argv += ["--channels", "8", "--prior-channels", "8", "--train-size", "400"]
    assert main([*argv, "--out", out, "--no-progress"]) == 0
    assert "test NLL bound (two-stage)" in capsys.readouterr().out
    files = {"config.json", "metrics.json", "checkpoint.pt", "reconstructions.png", "samples.png"}
    assert set(os.listdir(out)) >= files
    m = read_json(os.path.join(out, "metrics.json"))
    assert m["code_grid"] == [4, 4] and 1 <= m["codebook_perplexity"] <= 8
    assert m["test_nll_bound"] == pytest.approx(m["test_recon_nll"] + m["test_prior_nll"])
    assert m["test_bits_per_dim"] == pytest.approx(m["test_nll_bound"] / (64 * math.log(2)))
    # the uniform prior costs 16 log 8 nats; the trained prior fewer
    assert m["test_prior_nll"] < 16 * math.log(8)
    assert len(m["curves"]["stage1_loss"]) == 2 and len(m["curves"]["prior_log_likelihood"]) == 3
    kind, again = evaluate_run(out, progress=False)
    assert kind.name == "vqvae" and again["test_nll_bound"] == m["test_nll_bound"]
    assert main(["evaluate", out, "--no-progress"]) == 0
    # --resume of the finished run trains nothing more and reports the same figures
    capsys.readouterr()
    assert main([*argv, "--out", out, "--resume", "--no-progress"]) == 0
    assert read_json(os.path.join(out, "metrics.json"))["test_nll_bound"] == m["test_nll_bound"]
