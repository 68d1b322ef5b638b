"""What every run shares: the run folder, JSON files, atomic checkpoints, the summary table."""

import dataclasses
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
    """Load ``folder/checkpoint.pt``.

    Raises:
        ConfigError: the folder or its checkpoint does not exist.
    """
    path = os.path.join(folder, CHECKPOINT)
    if not os.path.exists(path):
        raise ConfigError(
            f"no checkpoint at {path!r}: give the run folder that `pyrolvm train ... --out` wrote"
        )
    return torch.load(path, map_location="cpu", weights_only=False)


def format_summary(title, rows):
    """A two-column text table: ``rows`` is a list of (label, value string)."""
    width = max(len(label) for label, _ in rows)
    lines = [title, "-" * max(len(title), width + 20)]
    lines += [f"{label:<{width}}  {value}" for label, value in rows]
    return "\n".join(lines)


def with_dataset_defaults(config, defaults):
    """The fields of a run config (a dataclass with a ``dataset`` field) as a dict, each
    ``None`` replaced by ``defaults[config.dataset]``'s value (``defaults["digits"]`` for a
    dataset not in the table, e.g. an .npz file)."""
    table = defaults.get(config.dataset, defaults["digits"])
    values = dataclasses.asdict(config)
    for key, value in table.items():
        if values[key] is None:
            values[key] = value
    return values
