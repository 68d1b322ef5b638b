"""Principal component projections of a dataset (scikit-learn's ``PCA``), fitted on the
training split, for models of a few dimensions (the Gaussian mixture of ``pyrolvm train gmm``)."""

from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from .datasets import Dataset


def project(data: Dataset, pca_dim: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """Fit PCA with ``pca_dim`` components on the training split (``sklearn.decomposition.PCA``)
    and project both splits.

    Returns:
        (train (N_train, pca_dim), test (N_test, pca_dim), pca): float32 tensors and the fitted
        PCA (``pca.inverse_transform`` maps back to pixels; ``pca.mean_`` and
        ``pca.components_`` are what :func:`apply_pca` needs).

    Raises:
        ConfigError: ``pca_dim`` outside 1 .. min(N_train, D).
    """
    from sklearn.decomposition import PCA

    n, d = data.train.shape
    if not 1 <= pca_dim <= min(n, d):
        raise ConfigError(
            f"--pca-dim must be between 1 and {min(n, d)} (the training images have {d} pixels, "
            f"{n} rows), got {pca_dim}"
        )
    pca = PCA(int(pca_dim), random_state=seed).fit(data.train.double().numpy())
    train = torch.as_tensor(pca.transform(data.train.double().numpy()), dtype=torch.float32)
    test = torch.as_tensor(pca.transform(data.test.double().numpy()), dtype=torch.float32)
    return train, test, pca


def apply_pca(x: torch.Tensor, mean: Any, components: Any) -> torch.Tensor:
    """``(x - mean) @ components.T`` in float64 (computed as ``PCA.transform`` does, the
    centering after the projection), as float32: the projection of a fitted PCA without
    whitening, from its ``mean_`` (D,) and ``components_`` (P, D)."""
    c = np.asarray(components, dtype=np.float64)
    xn = x.double().numpy() @ c.T
    xn -= np.asarray(mean, dtype=np.float64).reshape(1, -1) @ c.T
    return torch.as_tensor(xn, dtype=torch.float32)
