"""`pyrolvm train cvae` end to end on digits, and its errors."""

import math
import os

from helpers import cli_error

from pyrolvm.cli import main
from pyrolvm.runs.common import read_json

RUN = ["train", "cvae", "--epochs", "2", "--baseline-epochs", "2", "--hidden", "32"]
RUN += ["--eval-samples", "10", "--no-progress"]


def test_train_cvae_writes_the_run_folder_and_evaluate_reproduces(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main([*RUN, "--quadrants", "1", "3", "--out", out]) == 0
    printed = capsys.readouterr().out
    assert "Pyro tutorial: 100.4 / 71.8" in printed
    files = set(os.listdir(out))
    assert {"config.json", "metrics.json", "checkpoint.pt"} <= files
    assert {"completions_q1.png", "completions_q3.png"} <= files
    metrics = read_json(os.path.join(out, "metrics.json"))
    assert set(k for k in metrics if k.startswith("q")) == {"q1", "q3"}
    for key, pixels in (("q1", 48), ("q3", 16)):
        m = metrics[key]
        # -log p(y | x) of the output pixels: positive, below a fair coin per pixel
        for name in ("baseline_nll", "cvae_nll"):
            assert 0 < m[name] < pixels * math.log(2)
        assert m["cvae_elbo"] <= -m["cvae_nll"]  # Jensen: the ELBO of the same draws
    # more observed quadrants leave less to predict
    assert metrics["q3"]["baseline_nll"] < metrics["q1"]["baseline_nll"]
    capsys.readouterr()
    assert main(["evaluate", out]) == 0
    again = capsys.readouterr().out
    for key in ("q1", "q3"):
        assert f"CVAE (K=10) {metrics[key]['cvae_nll']:.2f}" in again
        assert f"baseline {metrics[key]['baseline_nll']:.2f}" in again


def test_bad_cvae_input(tmp_path, capsys):
    assert "distinct values" in cli_error(
        capsys, ["train", "cvae", "--quadrants", "1", "1", "--out", str(tmp_path / "r")]
    )
    assert not os.path.exists(tmp_path / "r")
