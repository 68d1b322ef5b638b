import os

import pyro
import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MNIST_ROOT = os.environ.get("PYROLVM_DATA_ROOT", os.path.join(REPO, "..", "shared", "data"))


def mnist_available():
    raw = os.path.join(MNIST_ROOT, "MNIST", "raw")
    return os.path.exists(os.path.join(raw, "t10k-images-idx3-ubyte"))


needs_mnist = pytest.mark.skipif(
    not mnist_available(),
    reason=f"MNIST files not found under {MNIST_ROOT!r}/MNIST/raw; set PYROLVM_DATA_ROOT to a "
    "folder holding them (see README, 'Training on MNIST')",
)


@pytest.fixture(autouse=True)
def one_thread():
    """One thread for torch and for numpy's BLAS (scikit-learn): the suite's small tensor ops
    run several times slower with 2 threads on a busy 2-core machine (oversubscription);
    results do not depend on it."""
    from threadpoolctl import threadpool_limits

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def fresh_pyro():
    """Each test starts with an empty param store and a fixed seed."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()
