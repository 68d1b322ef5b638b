"""Devices: the ``--device`` setting of every run and the ``device=`` argument in Python.

A run puts its model, guide and data on one device once (MNIST fits in GPU memory); every
model, guide, objective and the evaluator then create their tensors on the device (and in the
dtype) of the data or parameters they meet, so that the same code runs on CPU and CUDA.
"""

from __future__ import annotations

import re

import torch

from .errors import ConfigError

#: The forms ``--device`` accepts.
DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """The ``torch.device`` a run uses.

    Args:
        spec (str, torch.device or None): ``"auto"`` (or ``None``): the first CUDA device when
            one is available, else the CPU; ``"cpu"``; ``"cuda"`` (the current CUDA device) or
            ``"cuda:N"``.

    Returns:
        torch.device

    Raises:
        ConfigError: an unknown form, or a CUDA device that this machine does not have (the
            message says what ``torch.cuda`` sees and what to pass instead).
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    spec = "auto" if spec is None else str(spec).strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", spec)
    if match is None:
        raise ConfigError(f"unknown device {spec!r}: use {DEVICE_CHOICES}")
    if not torch.cuda.is_available():
        raise ConfigError(
            f"--device {spec}: torch sees no CUDA device here (torch "
            f"{torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); use --device cpu "
            "or --device auto, or install a CUDA build of torch on a machine with a GPU"
        )
    if match.group(1) is not None:
        index, count = int(match.group(1)), torch.cuda.device_count()
        if index >= count:
            raise ConfigError(
                f"--device {spec}: this machine has {count} CUDA device(s) "
                f"(cuda:0..cuda:{count - 1}); choose one of them"
            )
        return torch.device("cuda", index)
    return torch.device("cuda", torch.cuda.current_device())


def device_name(device: torch.device) -> str:
    """A short description of ``device`` for summaries and benchmark tables, e.g. ``"cpu (2
    threads)"`` or ``"cuda:0 (NVIDIA H200)"``."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"{device} ({torch.get_num_threads()} threads)"


__all__ = ["DEVICE_CHOICES", "device_name", "resolve_device"]
