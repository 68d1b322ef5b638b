"""Datasets held in memory as a tensor or a tuple of tensors sliced together along dim 0
(e.g. images and labels), as the training loop and the evaluator take them."""

import torch

from ..errors import DataError

#: A dataset: a tensor, or tensors with the same number of rows N.
Data = torch.Tensor | tuple[torch.Tensor, ...] | list[torch.Tensor]


def as_tuple(data: Data) -> tuple[torch.Tensor, ...]:
    """``data`` as a tuple of tensors (a lone tensor becomes a 1-tuple).

    Raises:
        DataError: the tensors do not share their first dimension, or one is not a tensor.
    """
    tensors = tuple(data) if isinstance(data, (tuple, list)) else (data,)
    if not tensors or not all(isinstance(t, torch.Tensor) for t in tensors):
        raise DataError("data must be a tensor or a tuple of tensors with N rows each")
    if len({len(t) if t.dim() else -1 for t in tensors}) != 1 or tensors[0].dim() == 0:
        raise DataError(
            "the tensors of a dataset must share their first dimension (N datapoints), got "
            f"shapes {[tuple(t.shape) for t in tensors]}"
        )
    return tensors


def num_rows(data: Data) -> int:
    """N, the number of datapoints of ``data`` (a tensor or a tuple of tensors)."""
    return len(as_tuple(data)[0])


def rows(data: Data, index: slice | torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The rows ``index`` (a slice or an index tensor) of every tensor of ``data``, as a
    tuple."""
    return tuple(t[index] for t in as_tuple(data))
