"""Run folders: guarded, locked, cleared or resumed (:func:`run_folder`); their JSON files
and atomic checkpoints, read back safely. What a run of any kind writes, and how it may
continue (:mod:`pyrolvm.runs` composes runs into them)."""

import contextlib
import glob
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import torch
from filelock import FileLock, Timeout

from .errors import ConfigError
from .inference import compiled, distributed

CHECKPOINT = "checkpoint.pt"
LOCK = ".lock"
#: The per-datapoint test log-likelihoods of a run (``pyrolvm compare``'s paired differences):
#: ``{"log_likelihood": float64 tensor (N,), "test_set": sha256 of the test data, "points"}``.
POINTWISE = "test_log_likelihood.pt"
#: The start of TensorBoard's event file names.
EVENTS = "events.out.tfevents."
#: Settings that may differ between a run and its resumption.
RESUMABLE_DIFFERENCES = ("progress", "data_root", "out", "resume", "overwrite", "device", "nproc")
RESUMABLE_DIFFERENCES += ("compile", "tensorboard")


def _is_run_file(name):
    files = ("config.json", "metrics.json", CHECKPOINT, POINTWISE)
    return name in files or name.endswith((".png", ".tmp")) or name.startswith(EVENTS)


def config_differences(saved: dict, current: dict, ignore: tuple[str, ...] = ()) -> list[str]:
    """The settings (other than :data:`RESUMABLE_DIFFERENCES` and ``ignore``) whose values
    differ between two config dicts, as ``["--lr: 0.003 in the run, 0.01 now", ...]``."""
    out = []
    for key in sorted(set(saved) | set(current)):
        if key in RESUMABLE_DIFFERENCES or key in ignore:
            continue
        a, b = saved.get(key), current.get(key)
        if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
            a, b = list(a), list(b)
        if a != b:
            out.append(f"--{key.replace('_', '-')}: {a!r} in the run, {b!r} now")
    return out


@contextlib.contextmanager
def run_folder(
    out: str,
    kind: str,
    config: dict,
    resume: bool = False,
    overwrite: bool = False,
    extendable: tuple[str, ...] = (),
    fixed_because: str = "",
) -> Iterator[tuple[str, dict | None]]:
    """Open the run folder ``out`` as :func:`open_run_folder` does, yielding (folder,
    checkpoint or None), under the run's ``--compile`` (what ``compile="auto"`` means to
    training and evaluation). Under ``torchrun`` rank 0 alone opens it (every process raises
    the same error or none); every other process writes into a private temporary folder and
    resumes from the checkpoint in ``out``.

    Raises:
        ConfigError: as :func:`open_run_folder`, on every process.
    """
    args = (out, kind, config, resume, overwrite, extendable, fixed_because)
    with contextlib.ExitStack() as stack:
        stack.enter_context(compiled.compile_mode(config.get("compile")))
        if not distributed.active():
            yield stack.enter_context(open_run_folder(*args))
            return
        error = None
        if distributed.is_main():
            try:
                folder, state = stack.enter_context(open_run_folder(*args))
            except ConfigError as exc:
                error = str(exc)
        error = distributed.broadcast_object(error, "opening the run folder")
        if error is not None:
            raise ConfigError(error)
        if not distributed.is_main():
            tag = f"pyrolvm-rank{distributed.rank()}-"
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix=tag))
            state = load_checkpoint(out) if resume else None
        yield folder, state  # pyright: ignore[reportPossiblyUnbound]


@contextlib.contextmanager
def open_run_folder(
    out: str,
    kind: str,
    config: dict,
    resume: bool = False,
    overwrite: bool = False,
    extendable: tuple[str, ...] = (),
    fixed_because: str = "",
) -> Iterator[tuple[str, dict | None]]:
    """Open the run folder ``out`` for a run of ``kind`` with settings ``config`` (a dict),
    locked while the block runs; yield (folder, checkpoint dict or None). A folder holding
    files is refused unless ``overwrite`` (its run files removed; a folder holding anything
    else is never cleared) or ``resume`` (see :func:`resumed_state`). Stale temporary files
    are removed.

    Raises:
        ConfigError: the folder cannot be created or written, holds another run, is locked by
            another process, or cannot be resumed (see :func:`resumed_state`).
    """
    if resume and overwrite:
        raise ConfigError(
            "--resume continues the run in the folder and --overwrite deletes it: choose one"
        )
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(f"the run folder {out!r} is a file: choose another --out")
    try:
        os.makedirs(out, exist_ok=True)
        lock = FileLock(os.path.join(out, LOCK))
        lock.acquire(timeout=0)
    except Timeout:
        raise ConfigError(
            f"another pyrolvm process is writing {out!r} (it holds "
            f"{os.path.join(out, LOCK)}): wait for it or choose another --out"
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot create or write the run folder {out!r}: {exc.strerror}; choose another --out"
        ) from None
    try:
        contents = sorted(n for n in os.listdir(out) if n != LOCK)
        state = None
        if resume:
            state = resumed_state(out, contents, kind, config, extendable, fixed_because)
        elif contents:
            if not overwrite:
                raise ConfigError(
                    f"the run folder {out!r} already holds files ({', '.join(contents[:4])}"
                    f"{', ...' if len(contents) > 4 else ''}): pass --overwrite to replace the "
                    "run, --resume to continue it, or choose another --out"
                )
            others = [n for n in contents if not _is_run_file(n)]
            if others:
                raise ConfigError(
                    f"--overwrite clears only run folders, but {out!r} also holds "
                    f"{', '.join(others[:4])}: choose another --out"
                )
            for name in contents:
                os.remove(os.path.join(out, name))
        for tmp in glob.glob(os.path.join(out, "*.tmp")):
            os.remove(tmp)
        yield out, state
    finally:
        lock.release()


def resumed_state(
    out: str,
    contents: list[str],
    kind: str,
    config: dict,
    extendable: tuple[str, ...],
    fixed_because: str,
) -> dict:
    """The checkpoint in the run folder ``out`` (holding the files ``contents``) that a run of
    ``kind`` with settings ``config`` resumes: of the same kind and settings up to
    :data:`RESUMABLE_DIFFERENCES`; those named in ``extendable`` (``("epochs",)``) may be
    raised, never lowered (``fixed_because``: why a kind cannot extend a run).

    Raises:
        ConfigError: no or invalid checkpoint, another kind, other settings, a lowered one.
    """
    if CHECKPOINT not in contents:
        raise ConfigError(
            f"nothing to resume: {out!r} holds no {CHECKPOINT}; run the command without --resume"
        )
    state = load_checkpoint(out)
    if state["kind"] != kind:
        raise ConfigError(
            f"{out!r} holds a {state['kind']!r} run, not a {kind!r} run: choose another --out"
        )
    diff = config_differences(state["config"], config, extendable)
    if diff:
        why = ""
        if any(d.startswith("--epochs:") for d in diff):
            why = (
                f" (a {kind} run cannot be extended with more --epochs"
                f"{': ' + fixed_because if fixed_because else ''}; start a new run "
                "with another --out)"
            )
        raise ConfigError(
            "--resume needs the settings of the run in the folder; these differ: "
            + "; ".join(diff)
            + why
        )
    for key in extendable:
        before, now = state["config"].get(key), config.get(key)
        if before is not None and now is not None and now < before:
            flag = "--" + key.replace("_", "-")
            raise ConfigError(
                f"--resume {flag} {now}: the run in {out!r} was set to {flag} "
                f"{before}; a run can be extended, not shortened: give {flag} "
                f"{before} (to finish it) or more (to extend it)"
            )
    return state


def extended(saved: dict | None, config: dict) -> bool:
    """Whether the run folder's ``config.json`` is (re)written: a new run (``saved`` is
    ``None``), or a resumed one whose extendable settings (``epochs``) were raised."""
    return saved is None or saved["config"].get("epochs") != config.get("epochs")


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


def write_json(path: str, obj: Any) -> None:
    """Write ``obj`` as indented JSON (tensors as lists, NaN/inf as null), atomically."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(_jsonable(obj), f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def read_json(path: str) -> Any:
    """The object stored in the JSON file ``path``."""
    with open(path) as f:
        return json.load(f)


def save_checkpoint(path: str, state: dict) -> None:
    """``torch.save(state)`` to a temporary file, then rename it over ``path``: an interrupted
    save never destroys the previous checkpoint."""
    tmp = f"{path}.tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def fingerprint(data: Any) -> dict:
    """``{"test_set": sha256, "points": N}`` of ``data`` (a tensor or tuple of tensors, N rows):
    runs whose per-datapoint figures have the same fingerprint scored the same points."""
    tensors = data if isinstance(data, (tuple, list)) else (data,)
    digest = hashlib.sha256()
    for t in tensors:
        t = t.detach().to("cpu").contiguous()
        digest.update(f"{tuple(t.shape)} {t.dtype};".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return {"test_set": digest.hexdigest(), "points": len(tensors[0])}


def load_checkpoint(folder: str) -> dict:
    """Load ``folder/checkpoint.pt`` safely: ``torch.load(weights_only=True)`` unpickles only
    tensors and plain containers, so a crafted file cannot run code.

    Raises:
        ConfigError: no checkpoint, or not a pyro-lvm checkpoint (empty, truncated, foreign).
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
