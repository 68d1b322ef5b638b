import os

import pyro
import pytest
import torch

# The float64 job (``PYROLVM_TEST_DTYPE=float64 pytest``, run by .ci/run) makes float64 the
# default dtype, so that a tensor created with a hard-coded float32 (or without the dtype and
# device of the data it meets) fails a test instead of a user's run.
if os.environ.get("PYROLVM_TEST_DTYPE"):
    torch.set_default_dtype(getattr(torch, os.environ["PYROLVM_TEST_DTYPE"]))

# Most tests run Pyro's eager step: ``compile="auto"`` (train's default and the CLI's) means
# "off" here, so that the suite does not pay a trace or an inductor compile per test. The
# compiled path has its own tests (tests/inference/test_compiled.py, tests/test_cli_compile.py),
# which ask for "graph" or "inductor" explicitly. ``PYROLVM_COMPILE=auto pytest`` runs the
# whole suite compiled.
os.environ.setdefault("PYROLVM_COMPILE", "off")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _has_mnist(root):
    return os.path.exists(os.path.join(root, "MNIST", "raw", "t10k-images-idx3-ubyte"))


def _find_mnist_root():
    """``PYROLVM_DATA_ROOT`` if set; else the first ``shared/data`` or ``data`` folder holding
    MNIST in the checkout or any folder above it (so that a worktree or a copy of the
    repository, e.g. mutmut's ``mutants/``, finds the same files as the main checkout)."""
    if os.environ.get("PYROLVM_DATA_ROOT"):
        return os.environ["PYROLVM_DATA_ROOT"]
    folder = REPO
    while True:
        for candidate in (os.path.join(folder, "shared", "data"), os.path.join(folder, "data")):
            if _has_mnist(candidate):
                return candidate
        parent = os.path.dirname(folder)
        if parent == folder:
            return os.path.join(os.path.dirname(REPO), "shared", "data")
        folder = parent


MNIST_ROOT = _find_mnist_root()


def mnist_available():
    return _has_mnist(MNIST_ROOT)


needs_mnist = pytest.mark.skipif(
    not mnist_available(),
    reason=f"MNIST files not found under {MNIST_ROOT!r}/MNIST/raw (nor under a shared/data or "
    "data folder above the checkout); set PYROLVM_DATA_ROOT to a folder holding them (see "
    "docs/mnist.md)",
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
