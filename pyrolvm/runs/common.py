"""What every run shares: the run folder, JSON files, atomic checkpoints, the summary table."""

import json
import math
import os

import torch

from ..errors import ConfigError

CHECKPOINT = "checkpoint.pt"


def run_dir(out):
    """Create the run folder ``out`` (and parents) and return its path."""
    if not out:
        raise ConfigError("the run folder (--out) must be a non-empty path")
    os.makedirs(out, exist_ok=True)
    return out


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return _jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path, obj):
    """Write ``obj`` as indented JSON (tensors as lists, NaN/inf as null), atomically."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(_jsonable(obj), f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def read_json(path):
    """The object stored in the JSON file ``path``."""
    with open(path) as f:
        return json.load(f)


def save_checkpoint(path, state):
    """``torch.save(state)`` to a temporary file, then rename it over ``path``: an interrupted
    save never destroys the previous checkpoint."""
    tmp = f"{path}.tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(folder):
    """Load ``folder/checkpoint.pt`` safely: ``torch.load(weights_only=True)`` unpickles only
    tensors and plain containers, so a crafted file cannot run code.

    Raises:
        ConfigError: the folder or its checkpoint does not exist, or the file is not a
        pyro-lvm checkpoint (empty, truncated, random bytes, a pickle of other objects).
    """
    path = os.path.join(folder, CHECKPOINT)
    if not os.path.exists(path):
        raise ConfigError(
            f"no checkpoint at {path!r}: give the run folder that `pyrolvm train ... --out` wrote"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file; one clear error here
        raise ConfigError(
            f"{path!r} is not a valid pyro-lvm checkpoint ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200] if str(exc) else 'unreadable'}); it may be "
            "truncated or come from elsewhere: retrain with `pyrolvm train ... --out`"
        ) from None
    if not isinstance(state, dict) or "kind" not in state or "config" not in state:
        raise ConfigError(f"{path!r} is not a pyro-lvm checkpoint (it has no run kind and config)")
    return state


def format_summary(title, rows):
    """A two-column text table: ``rows`` is a list of (label, value string)."""
    width = max(len(label) for label, _ in rows)
    lines = [title, "-" * max(len(title), width + 20)]
    lines += [f"{label:<{width}}  {value}" for label, value in rows]
    return "\n".join(lines)
