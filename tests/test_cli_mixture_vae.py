"""`pyrolvm train mixture-vae` end to end on digits: the run folder, and `evaluate`
reproducing its figures from the checkpoint."""

import os

from pyrolvm.cli import main
from pyrolvm.runs import evaluate_run
from pyrolvm.runs.common import read_json


def test_train_mixture_vae_and_evaluate_reproduces(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert (
        main(
            [
                "train",
                "mixture-vae",
                "--warmup-epochs",
                "1",
                "--epochs",
                "1",
                "--hidden",
                "32",
                "--components",
                "5",
                "--out",
                out,
                "--no-progress",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "test cluster accuracy" in printed
    assert {
        "config.json",
        "metrics.json",
        "checkpoint.pt",
        "component_means.png",
        "elbo_curve.png",
    } <= set(os.listdir(out))
    metrics = read_json(os.path.join(out, "metrics.json"))
    assert len(metrics["train_elbo"]) == 2
    kind, again = evaluate_run(out, progress=False)
    assert kind.name == "mixture-vae"
    assert again["test_cluster_accuracy"] == metrics["test_cluster_accuracy"]
    assert again["test_ari"] == metrics["test_ari"]
    assert main(["evaluate", out]) == 0
    assert f"{metrics['test_cluster_accuracy']:.2%}" in capsys.readouterr().out
