"""`pyrolvm train m2` end to end on digits, and its errors for bad input."""

import json
import os

import pytest

from helpers import cli_error
from pyrolvm.cli import main



def test_train_m2_writes_the_run_folder(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["train", "m2", "--labels", "50", "--epochs", "1", "--hidden", "32",
                 "--out", out, "--no-progress"]) == 0
    printed = capsys.readouterr()
    assert "test accuracy" in printed.out and "step/s" not in printed.err
    assert {"config.json", "metrics.json", "checkpoint.pt"} <= set(os.listdir(out))
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert 0.2 < metrics["test_accuracy"] <= 1.0  # chance is 0.1
    assert json.load(open(os.path.join(out, "config.json")))["labels"] == 50


@pytest.mark.parametrize("argv, message", [
    (["--labels", "105"], "positive multiple of 10"),
    (["--labels", "2000"], "fewer than 200 labels"),
])
def test_bad_m2_input(tmp_path, capsys, argv, message):
    assert main(["train", "m2", "--out", str(tmp_path / "r"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not os.path.exists(tmp_path / "r")


def test_evaluate_reproduces_an_m2_run(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["train", "m2", "--labels", "50", "--epochs", "1", "--hidden", "32",
                 "--out", out, "--no-progress"]) == 0
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    capsys.readouterr()
    assert main(["evaluate", out]) == 0
    assert f"test accuracy  {100 * metrics['test_accuracy']:.2f} %" in capsys.readouterr().out
    assert "--eval-samples does not apply to runs of kind 'm2'" in cli_error(
        capsys, ["evaluate", out, "--eval-samples", "5"])
