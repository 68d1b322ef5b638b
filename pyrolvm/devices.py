"""Devices: the ``--device`` setting of every run and the ``device=`` argument in Python.

A run puts its model, guide and data on one device once (MNIST fits in GPU memory); every
model, guide, objective and the evaluator then create their tensors on the device (and in the
dtype) of the data or parameters they meet, so that the same code runs on CPU and CUDA.
"""

from __future__ import annotations

import os
import re

import torch

from .errors import ConfigError

#: The forms ``--device`` accepts.
DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


def torchrun_local() -> tuple[int, int] | None:
    """``(LOCAL_RANK, LOCAL_WORLD_SIZE)`` of a process started by ``torchrun`` (``RANK`` and
    ``WORLD_SIZE`` set), else ``None``: this process's index among the processes of its node,
    and their number."""
    env = os.environ
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return None
    local_rank = int(env.get("LOCAL_RANK", "0"))
    return local_rank, int(env.get("LOCAL_WORLD_SIZE", str(local_rank + 1)))


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """The ``torch.device`` a run uses (in this process).

    Under ``torchrun`` every process of a node takes its own GPU, ``cuda:LOCAL_RANK``, for
    ``auto`` (when CUDA is available) and ``cuda``; see :func:`process_device`.

    Args:
        spec (str, torch.device or None): ``"auto"`` (or ``None``): the first CUDA device when
            one is available, else the CPU; ``"cpu"``; ``"cuda"`` (the current CUDA device) or
            ``"cuda:N"`` (any case: ``"CPU"`` is ``"cpu"``).

    Returns:
        torch.device

    Raises:
        ConfigError: an unknown form, or a CUDA device that this machine does not have (the
            message says what ``torch.cuda`` sees and what to pass instead); under
            ``torchrun``, as :func:`process_device`.
    """
    local = torchrun_local()
    if local is not None:
        return process_device(spec, *local)
    return _resolve(_normalized(spec))


def process_device(
    spec: str | torch.device | None, local_rank: int, local_processes: int
) -> torch.device:
    """The device of process ``local_rank`` of ``local_processes`` processes on one node
    (``torchrun``'s ``LOCAL_RANK`` and ``LOCAL_WORLD_SIZE``; also checked before
    ``pyrolvm ... --nproc N`` launches them): one GPU per process, or the CPU.

    - ``cpu``: the CPU (gloo between the processes);
    - ``auto`` (with CUDA available) and ``cuda``: ``cuda:LOCAL_RANK``;
    - ``cuda:N``: GPU N when the node runs one process; with several, each would sit on GPU
      N: refused (choose the GPUs with ``CUDA_VISIBLE_DEVICES`` instead).

    Raises:
        ConfigError: fewer GPUs than processes on the node (with ``auto`` or ``cuda``), or
            ``cuda:N`` with several processes per node; as :func:`resolve_device` otherwise.
    """
    spec = _normalized(spec)
    local_rank, local_processes = int(local_rank), int(local_processes)
    if spec == "cpu" or (spec == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if spec not in ("auto", "cuda"):  # cuda:N, or an unknown form
        device = _resolve(spec)
        if local_processes > 1:
            raise ConfigError(
                f"--device {spec} with {local_processes} processes per node would put every "
                "process on the same GPU: use --device cuda (process r takes cuda:r; choose "
                "the GPUs with CUDA_VISIBLE_DEVICES) or --device cpu"
            )
        return device
    if not torch.cuda.is_available():
        return _resolve(spec)  # the error that this machine has no CUDA device
    count = torch.cuda.device_count()
    if local_processes > count:
        raise ConfigError(
            f"{local_processes} processes per node need one GPU each (--device {spec}), but "
            f"torch sees {count} CUDA device(s) here: launch at most {count} processes per "
            "node (--nproc), or run them on the CPU with --device cpu"
        )
    return torch.device("cuda", local_rank)


def _normalized(spec: str | torch.device | None) -> str:
    if isinstance(spec, torch.device):
        spec = str(spec)
    return "auto" if spec is None else str(spec).strip().lower()


def _resolve(spec: str) -> torch.device:
    """The device of a normalized ``spec`` in a single process."""
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


__all__ = ["DEVICE_CHOICES", "device_name", "process_device", "resolve_device", "torchrun_local"]
