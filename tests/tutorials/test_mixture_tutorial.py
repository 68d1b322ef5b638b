"""The mixture tutorial runs end to end in fast mode and writes its figures."""

import os
import runpy


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIGURES = ("mixture_svi_vs_em.png", "mixture_loglik_bic_vs_k.png", "mixture_clusters_2d.png",
           "mixture_responsibilities_2d.png")



def test_mixture_tutorial_fast_mode(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PYROLVM_TUTORIAL_FAST", "1")
    monkeypatch.setenv("PYROLVM_TUTORIAL_OUT", str(tmp_path))
    runpy.run_path(os.path.join(REPO, "tutorials", "mixture_models.py"), run_name="__main__")
    printed = capsys.readouterr().out
    assert "sklearn EM: test log-likelihood" in printed
    for name in FIGURES:
        assert os.path.getsize(tmp_path / name) > 1000, name
