"""Checks of the data a model or guide is called with, so that bad input gets one clear
:class:`~pyrolvm.errors.DataError` instead of a shape or support error from inside PyTorch
or Pyro. They run while Pyro's validation is enabled: on the first step of
:func:`pyrolvm.inference.train` and the first chunk of the evaluator, not on every step."""

import torch
from pyro.infer.util import is_validation_enabled

from .errors import DataError


def check_batch(
    x: object,
    data_dim: int,
    name: str = "x",
    binary: bool = False,
    network: torch.nn.Module | None = None,
) -> None:
    """Raise :class:`DataError` unless ``x`` is a (B, data_dim) floating tensor of finite values
    (on the device and of the dtype of ``network``'s parameters, where given; and, with
    ``binary``, of zeros and ones: a Bernoulli likelihood's support). Does nothing while Pyro's
    validation is disabled, so a training step pays no more than that check."""
    if not is_validation_enabled():
        return
    if not isinstance(x, torch.Tensor):
        raise DataError(
            f"{name} must be a torch.Tensor of shape (B, {data_dim}), got {type(x).__name__}"
        )
    if x.dim() != 2:
        hint = " (one datapoint: x.unsqueeze(0))" if x.dim() == 1 else ""
        raise DataError(
            f"{name} must have shape (B, {data_dim}), a batch of flattened "
            f"datapoints, got {tuple(x.shape)}{hint}"
        )
    if x.shape[-1] != data_dim:
        raise DataError(
            f"{name} has {x.shape[-1]} dimensions per datapoint but the model was "
            f"built for {data_dim}"
        )
    if not x.is_floating_point():
        raise DataError(f"{name} must be a floating tensor (e.g. x.float()), got {x.dtype}")
    param = None if network is None else next(network.parameters())
    if param is not None and x.device != param.device:
        raise DataError(
            f"{name} is on {x.device} but the networks are on {param.device}: move it "
            f"(x.to('{param.device}')), or the model and guide (.to(device))"
        )
    if param is not None and x.dtype != param.dtype:
        raise DataError(
            f"{name} has dtype {x.dtype} but the networks use {param.dtype}: convert it "
            f"(x.to({param.dtype}))"
        )
    if not torch.isfinite(x).all():
        raise DataError(f"{name} holds NaN or infinite values; remove or impute those rows")
    if binary and not ((x == 0) | (x == 1)).all():
        raise DataError(
            f"{name} is not binary, but a Bernoulli likelihood needs values in "
            "{0, 1}: binarize it (torch.bernoulli, or --binarize dynamic/static) or "
            "use a Gaussian likelihood"
        )
