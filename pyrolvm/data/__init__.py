"""Dataset loaders and binarization. Returns tensors; knows nothing of models."""

from .datasets import BINARIZATIONS, DATASETS, Dataset, check_data, load

__all__ = ["BINARIZATIONS", "DATASETS", "Dataset", "check_data", "load"]
