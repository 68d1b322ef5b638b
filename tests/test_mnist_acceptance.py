"""The acceptance run of the foundation: `pyrolvm train vae --dataset mnist --epochs 10`
(Bernoulli likelihood, dynamic binarization, defaults otherwise) reaches a test NLL of at most
101 nats with K = 1000 importance samples over the full 10,000-image test set.

Slow (about 8 minutes on 2 CPU cores): run with `pytest -m slow`."""

import pytest

from conftest import MNIST_ROOT, needs_mnist
from pyrolvm.runs import train_vae


@pytest.mark.slow
@needs_mnist
def test_mnist_vae_ten_epochs(tmp_path):
    metrics = train_vae(dataset="mnist", data_root=MNIST_ROOT, epochs=10,
                        out=str(tmp_path / "mnist"), progress=False)
    assert metrics["eval_samples"] == 1000
    assert metrics["test_nll"] <= 101.0
