"""`pyrolvm train made` / `pyrolvm train pixelcnn` end to end on digits: the run folder,
the exact test NLL in nats and bits per dimension, and `pyrolvm evaluate` reproducing it."""

import math
import os

import pytest

from pyrolvm.cli import main
from pyrolvm.runs import evaluate_run, train_pixelcnn
from pyrolvm.runs.common import read_json

FILES = {"config.json", "metrics.json", "checkpoint.pt", "samples.png", "nll_curve.png"}


@pytest.mark.parametrize(
    "argv",
    [
        ["made", "--hidden", "16", "--num-masks", "2"],
        ["pixelcnn", "--channels", "4", "--num-layers", "2", "--kernel-size", "3"],
    ],
)
def test_train_and_evaluate_reproduces(tmp_path, capsys, argv):
    out = str(tmp_path / "run")
    common = ["--epochs", "2", "--train-size", "300", "--out", out, "--no-progress"]
    assert main(["train", *argv, *common]) == 0
    printed = capsys.readouterr().out
    assert "test NLL (exact)" in printed and "bits per dim" in printed
    assert set(os.listdir(out)) >= FILES
    metrics = read_json(os.path.join(out, "metrics.json"))
    assert metrics["train_size"] == 300 and len(metrics["curves"]["test_nll_curve"]) == 2
    # digits: 64 binary pixels, so a trained model beats the uniform 64 ln 2 nats
    assert 0 < metrics["test_nll"] < 64 * math.log(2)
    assert metrics["test_bits_per_dim"] == pytest.approx(metrics["test_nll"] / (64 * math.log(2)))
    kind, again = evaluate_run(out, progress=False)
    assert kind.name == argv[0]
    assert again["test_nll"] == metrics["test_nll"]
    assert main(["evaluate", out, "--no-progress"]) == 0
    assert f"{metrics['test_nll']:.2f}" in capsys.readouterr().out


def test_pixelcnn_8bit(tmp_path):
    metrics = train_pixelcnn(
        pixels="8bit",
        channels=8,
        num_layers=1,
        kernel_size=3,
        epochs=2,
        train_size=200,
        lr=1e-2,
        out=str(tmp_path / "run"),
        progress=False,
    )
    # 256 levels per pixel (digits use 17 of them): below the uniform 64 ln 256 nats
    assert 0 < metrics["test_nll"] < 64 * math.log(256)
    assert metrics["test_bits_per_dim"] < 8
