"""Small network builders shared by models and guides."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .errors import ConfigError

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "softplus": nn.Softplus,
    "elu": nn.ELU,
}


def mlp(
    in_dim: int, hidden: Sequence[int], out_dim: int, activation: str = "tanh"
) -> nn.Sequential:
    """A multilayer perceptron ``in_dim -> hidden[0] -> ... -> out_dim``.

    Args:
        in_dim (int): input size.
        hidden (sequence of int): hidden layer sizes (may be empty for a linear map).
        out_dim (int): output size; the last layer has no activation.
        activation (str): one of ``tanh``, ``relu``, ``softplus``, ``elu``.

    Returns:
        torch.nn.Sequential mapping (..., in_dim) to (..., out_dim).

    Raises:
        ConfigError: unknown activation or a non-positive size.
    """
    if activation not in ACTIVATIONS:
        raise ConfigError(
            f"unknown activation {activation!r}: choose one of {', '.join(ACTIVATIONS)}"
        )
    sizes = [int(in_dim), *[int(h) for h in hidden], int(out_dim)]
    if min(sizes) < 1:
        raise ConfigError(f"layer sizes must be positive integers, got {sizes}")
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


def check_latent_dim(latent_dim: int) -> int:
    """Raise :class:`~pyrolvm.ConfigError` unless ``latent_dim`` is a positive integer."""
    if int(latent_dim) != latent_dim or latent_dim < 1:
        raise ConfigError(f"latent_dim must be a positive integer, got {latent_dim!r}")
    return int(latent_dim)


def set_output_bias(layer: nn.Module, value: torch.Tensor | float) -> None:
    """Set the bias of the last ``nn.Linear`` of ``layer`` to ``value`` (shape (out_dim,))."""
    last = [m for m in layer.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        last.bias.copy_(torch.as_tensor(value, dtype=last.bias.dtype))


class ScalarOnDevice:
    """A Python number as a 0-d tensor on the device and in the dtype of the tensor it meets,
    made once per value, device and dtype and reused: a distribution given a Python number
    (``RelaxedBernoulli(0.5, logits=...)``) or a tensor made from one on every call
    (``logits.new_tensor(0.5)``) copies it from the host each step, which stalls a GPU's queue.

    Call it as ``scalar(value, like)``; the value may change between calls (a new tensor is
    made once for the new value).
    """

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._tensor: torch.Tensor | None = None

    def __call__(self, value: float, like: torch.Tensor) -> torch.Tensor:
        key = (float(value), like.device, like.dtype)
        if self._tensor is None or self._key != key:
            self._key, self._tensor = key, like.new_tensor(key[0])
        return self._tensor
