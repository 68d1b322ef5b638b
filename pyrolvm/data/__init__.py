"""Dataset loaders and binarization. Returns tensors; knows nothing of models."""

from .causal import TreatmentData, confounded_treatment
from .datasets import BINARIZATIONS, DATASETS, Dataset, check_data, load
from .masks import MASKS, make_mask, mask_columns, quadrant_mask
from .pca import apply_pca, project

__all__ = [
    "BINARIZATIONS",
    "DATASETS",
    "Dataset",
    "TreatmentData",
    "apply_pca",
    "check_data",
    "confounded_treatment",
    "load",
    "MASKS",
    "check_data",
    "load",
    "make_mask",
    "mask_columns",
    "project",
    "quadrant_mask",
]
