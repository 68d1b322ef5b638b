"""`pyrolvm train mvae` end to end on digits, and its errors."""

import math
import os

from helpers import cli_error

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
    assert f"{m['accuracy']:.2%}" in again


def test_train_mvae_on_image_halves_with_iwae(tmp_path, capsys):
    out = str(tmp_path / "run")
    argv = ["train", "mvae", "--modalities", "halves", "--epochs", "2", "--hidden", "32"]
    argv += ["--eval-samples", "10", "--elbo", "iwae", "--num-particles", "2"]
    assert main([*argv, "--no-progress", "--out", out]) == 0
    printed = capsys.readouterr().out
    assert "top + bottom half" in printed and "elbo=iwae K=2" in printed
    assert "accuracy" not in printed and "-log p(bottom | top)" in printed
    files = set(os.listdir(out))
    assert {"top_to_bottom.png", "bottom_to_top.png", "checkpoint.pt"} <= files
    assert "label_to_image.png" not in files
    m = read_json(os.path.join(out, "metrics.json"))
    assert "accuracy" not in m and "label_nll" not in m
    for half in ("top", "bottom"):  # 32 binary pixels each: below a fair coin per pixel
        assert 0 < m[f"{half}_nll"] < 32 * math.log(2)
    for key in ("bottom_given_top", "top_given_bottom"):
        for name in (f"{key}_nll", f"{key}_snis_nll"):
            assert 0 < m[name] < 32 * math.log(2) and m[name + "_stderr"] > 0
    # the reported conditionals split the joint: log p(a, b) = log p(a) + log p(b | a)
    for a, b in (("top", "bottom"), ("bottom", "top")):
        assert abs(m["joint_nll"] - m[f"{a}_nll"] - m[f"{b}_given_{a}_nll"]) < 1e-9
    capsys.readouterr()
    assert main(["evaluate", out]) == 0
    assert f"{m['bottom_given_top_nll']:.2f} ± {m['bottom_given_top_nll_stderr']:.2f}" in (
        capsys.readouterr().out
    )


def test_bad_mvae_options(tmp_path, capsys):
    out = str(tmp_path / "r")
    assert "--label-weight is for --modalities image-label" in cli_error(
        capsys, ["train", "mvae", "--modalities", "halves", "--label-weight", "2", "--out", out]
    )
    # a multi-sample objective weighs all of log p(image, label, z) at once: no lambda
    assert "add --label-weight 1" in cli_error(
        capsys, ["train", "mvae", "--elbo", "iwae", "--num-particles", "2", "--out", out]
    )
    assert "does not take --alpha" in cli_error(
        capsys, ["train", "mvae", "--elbo", "trace", "--alpha", "0.5", "--out", out]
    )
    assert not os.path.exists(out)
    from pyrolvm.runs import MVAEConfig

    cfg = MVAEConfig(elbo="iwae", num_particles=2, label_weight=1.0, out=out).resolved()
    assert cfg.make_objective().num_particles == 2


def test_train_mmvae_mixture_of_experts_and_evaluate_reproduces(tmp_path, capsys):
    out = str(tmp_path / "run")
    argv = ["train", "mvae", "--posterior", "moe", "--epochs", "2", "--hidden", "32"]
    assert main([*argv, "--eval-samples", "10", "--no-progress", "--out", out]) == 0
    printed = capsys.readouterr().out
    assert "mixture of experts, MMVAE" in printed and "image -> label accuracy" in printed
    m = read_json(os.path.join(out, "metrics.json"))
    assert 0 <= m["accuracy"] <= 1 and 0 < m["label_given_image_nll"] < 10
    assert 0 < m["image_nll"] < 64 * math.log(2)
    capsys.readouterr()
    assert main(["evaluate", out]) == 0
    assert f"{m['joint_nll']:.2f} ± {m['joint_nll_stderr']:.2f}" in capsys.readouterr().out
