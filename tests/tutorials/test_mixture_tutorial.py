"""The mixture tutorial runs end to end in fast mode and writes its figures."""

import os
import runpy

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIGURES = ("mixture_svi_vs_em.png", "mixture_loglik_bic_vs_k.png", "mixture_clusters_2d.png",
           "mixture_responsibilities_2d.png")


@pytest.fixture(autouse=True)
def one_thread():
    """One thread for torch and for numpy's BLAS (scikit-learn): these small ops run ~10x slower
    with 2 threads on a busy 2-core machine (oversubscription); results do not depend on it."""
    from threadpoolctl import threadpool_limits

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(n)


def test_mixture_tutorial_fast_mode(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PYROLVM_TUTORIAL_FAST", "1")
    monkeypatch.setenv("PYROLVM_TUTORIAL_OUT", str(tmp_path))
    runpy.run_path(os.path.join(REPO, "tutorials", "mixture_models.py"), run_name="__main__")
    printed = capsys.readouterr().out
    assert "sklearn EM: test log-likelihood" in printed
    for name in FIGURES:
        assert os.path.getsize(tmp_path / name) > 1000, name
