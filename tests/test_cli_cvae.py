"""`pyrolvm train cvae` end to end on digits, and its errors."""

import math
import os

import torch
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


def test_class_conditional_cvae_writes_samples_per_class_and_evaluate_reproduces(tmp_path, capsys):
    out = str(tmp_path / "run")
    argv = ["train", "cvae", "--condition", "label", "--prior", "standard", "--epochs", "2"]
    argv += ["--hidden", "32", "--eval-samples", "10", "--elbo", "iwae", "--num-particles", "2"]
    assert main([*argv, "--no-progress", "--out", out]) == 0
    printed = capsys.readouterr().out
    assert "class-conditional VAE" in printed and "elbo=iwae K=2" in printed
    assert "-log p(image | label) (K=10)" in printed
    files = set(os.listdir(out))
    assert {"config.json", "metrics.json", "checkpoint.pt", "samples_per_class.png"} <= files
    assert os.path.getsize(os.path.join(out, "samples_per_class.png")) > 1000
    assert not any(name.startswith("completions") for name in files)
    metrics = read_json(os.path.join(out, "metrics.json"))
    m = metrics["label"]
    assert "baseline_nll" not in m and "pyro_tutorial_nll" not in metrics
    # -log p(image | label) of 64 binary pixels: positive, below a fair coin per pixel
    assert 0 < m["cvae_nll"] < 64 * math.log(2)
    assert m["cvae_elbo"] <= -m["cvae_nll"]  # Jensen: the ELBO of the same draws
    capsys.readouterr()
    assert main(["evaluate", out]) == 0
    assert f"{m['cvae_nll']:.2f} ± {m['cvae_nll_stderr']:.2f}" in capsys.readouterr().out


def test_samples_per_class_has_one_row_per_class(tmp_path, monkeypatch):
    from pyrolvm import plots
    from pyrolvm.data import load
    from pyrolvm.runs.cvae import CLASS_SAMPLES, CVAEConfig, build_setting, samples_per_class_figure

    data = load("digits", binarize="dynamic", seed=0)
    cfg = CVAEConfig(condition="label", hidden=(), out=str(tmp_path)).resolved()
    setting = build_setting(cfg, "label", data)
    net = setting.model.generation_net[0]  # logits = W [one_hot(y), z] + b: one layer
    with torch.no_grad():
        net.weight[:, 10:].zero_()  # the image's mean then depends on the class only
    seen = {}
    monkeypatch.setattr(plots, "image_grid", lambda path, images, *a, **k: seen.update(k, x=images))
    samples_per_class_figure(str(tmp_path / "s.png"), setting, data, cfg)
    assert seen["ncols"] == CLASS_SAMPLES
    rows = seen["x"].view(10, CLASS_SAMPLES, 64)
    with torch.no_grad():
        means = torch.sigmoid(net.weight[:, :10].T + net.bias)  # (class, pixel)
    torch.testing.assert_close(rows, means[:, None].expand_as(rows))


def test_bad_conditional_options(tmp_path, capsys):
    out = str(tmp_path / "r")
    label = ["train", "cvae", "--condition", "label", "--out", out]
    assert "drop --quadrants" in cli_error(capsys, [*label, "--quadrants", "1"])
    assert "drop --baseline-epochs" in cli_error(capsys, [*label, "--baseline-epochs", "2"])
    assert "does not take --beta" in cli_error(
        capsys, ["train", "cvae", "--elbo", "iwae", "--beta", "2", "--out", out]
    )
    assert "num_particles >= 2" in cli_error(
        capsys, ["train", "cvae", "--elbo", "vimco", "--out", out]
    )
    assert not os.path.exists(out)
