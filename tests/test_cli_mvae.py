"""`pyrolvm train mvae` end to end on digits."""

import math
import os

from pyrolvm.cli import main
from pyrolvm.runs.common import read_json


def test_train_mvae_writes_the_run_folder_and_evaluate_reproduces(tmp_path, capsys):
    out = str(tmp_path / "run")
    argv = ["train", "mvae", "--epochs", "2", "--hidden", "32", "--eval-samples", "10"]
    assert main([*argv, "--no-progress", "--out", out]) == 0
    printed = capsys.readouterr().out
    assert "image -> label accuracy" in printed
    assert {"config.json", "metrics.json", "checkpoint.pt", "label_to_image.png"} <= set(
        os.listdir(out)
    )
    m = read_json(os.path.join(out, "metrics.json"))
    assert 0 <= m["accuracy"] <= 1
    # -log p(label | image) is a self-normalized average of p(label | z_k) over the same draws:
    # a -log of a probability, so between 0 and the worst class's -log p
    assert 0 < m["label_given_image_nll"] < 10
    assert m["label_given_image_nll_stderr"] > 0
    # -log p(label) lies near log 10 for balanced digits (within the estimator's slack)
    assert 0 < m["label_nll"] < math.log(10) + 0.5
    assert 0 < m["image_nll"] < 64 * math.log(2)
    capsys.readouterr()
    assert main(["evaluate", out]) == 0
    again = capsys.readouterr().out
    assert f"{m['joint_nll']:.2f} ± {m['joint_nll_stderr']:.2f}" in again
    assert f"{100 * m['accuracy']:.2f} %" in again
