"""The mixture tutorial runs end to end in fast mode and writes its figures."""

import json
import os
import runpy

import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIGURES = ("mixture_svi_vs_em.png", "mixture_loglik_bic_vs_k.png", "mixture_clusters_2d.png",
           "mixture_responsibilities_2d.png", "mixture_m2_accuracy.png", "mixture_vae_clusters.png")



def test_mixture_tutorial_fast_mode(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PYROLVM_TUTORIAL_FAST", "1")
    monkeypatch.setenv("PYROLVM_TUTORIAL_OUT", str(tmp_path))
    runpy.run_path(os.path.join(REPO, "tutorials", "mixture_models.py"), run_name="__main__")
    printed = capsys.readouterr().out
    assert "sklearn EM: test log-likelihood" in printed
    for name in FIGURES:
        assert os.path.getsize(tmp_path / name) > 1000, name

    m2 = json.loads((tmp_path / "mixture_m2_accuracy.json").read_text())
    assert [r["labels"] for r in m2["rows"]] == [10, 50]
    for r in m2["rows"]:
        assert 0 <= r["test_accuracy"] <= 1
    assert m2["anchors_mnist_percent"]["Pyro ss-vae example"]["3000"] == 95.8
    clustering = json.loads((tmp_path / "mixture_vae_clustering.json").read_text())
    for key in ("test_cluster_accuracy", "init_test_cluster_accuracy"):
        assert 0 <= clustering[key] <= 1
    assert -1 <= clustering["test_ari"] <= 1
    # the mapped contingency matrix counts every test image once, its diagonal the accuracy
    table = torch.tensor(clustering["contingency_mapped"])
    assert table.sum() == 360
    assert abs(table.diagonal().sum() / 360 - clustering["test_cluster_accuracy"]) < 1e-9
