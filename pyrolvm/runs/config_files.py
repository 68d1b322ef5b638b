"""Run settings from a file: a run folder's own ``config.json`` or a YAML (``.yaml``, ``.yml``)
or JSON file of ``setting: value`` pairs, read into the kind's config dataclass and validated
by its declaration (:func:`pyrolvm.settings.validate`), as ``pyrolvm train KIND --config FILE``
and ``pyrolvm train --config runs/a/config.json`` read them (the flags given with it override
the file's values: they are parsed by tyro with the file's config as the default)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from ..errors import ConfigError
from ..settings import validate
from .registry import RUNS, RunKind

#: Keys of a run folder's ``config.json`` that are not settings of the kind's config.
RECORDED = ("kind", "data_dim")
#: Settings that act on the run folder (``--resume``, ``--overwrite``): from the command line
#: only, never from a file (a resumed run's ``config.json`` records ``resume: true``).
ACTIONS = ("resume", "overwrite")


def read_config_file(path: str) -> dict:
    """The mapping of settings in the JSON or YAML (by its extension) file ``path``.

    Raises:
        ConfigError: the file is missing, not JSON / YAML, not a mapping, or YAML without
            the PyYAML package.
    """
    yaml_file = path.lower().endswith((".yaml", ".yml"))
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path!r}: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")  # (a binary file: one error below, as a malformed one)
        if yaml_file:
            import yaml

            values = yaml.safe_load(text)
        else:
            values = json.loads(text)
    except ImportError:
        raise ConfigError(
            f"{path!r} is YAML, which needs the PyYAML package: pip install pyyaml (or give "
            "a JSON file)"
        ) from None
    except Exception as exc:  # json's and yaml's parse errors: one line naming the file
        what = "YAML" if yaml_file else "JSON"
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{path!r} is not valid {what} ({first})") from None
    if not isinstance(values, dict):
        raise ConfigError(
            f"{path!r} does not hold a run's settings: it should be a mapping of setting to "
            "value, as a run folder's config.json is"
        )
    return values


def kind_of_file(values: dict, path: str, kind: str | None = None) -> RunKind:
    """The run kind of settings ``values`` read from ``path``: ``kind`` (given on the command
    line) or the file's ``"kind"``.

    Raises:
        ConfigError: neither names a kind, an unknown kind, or the two differ.
    """
    recorded = values.get("kind")
    if recorded is not None and recorded not in RUNS:
        raise ConfigError(
            f"{path!r} holds the settings of a run of unknown kind {recorded!r}; this version "
            f"of pyrolvm knows {', '.join(RUNS)}"
        )
    if kind is not None and recorded is not None and kind != recorded:
        raise ConfigError(
            f"{path!r} holds the settings of a {recorded} run, not of a {kind} run: "
            f"pyrolvm train {recorded} --config {path}"
        )
    name = kind or recorded
    if name is None:
        raise ConfigError(
            f"{path!r} does not say which kind of run it configures: name it, pyrolvm train "
            f"KIND --config {path} (KIND one of {', '.join(RUNS)})"
        )
    return RUNS[name]


def load_config(path: str, kind: str | None = None) -> Any:
    """The run config in the file ``path`` (a run folder's ``config.json``, or a YAML or JSON
    file of settings), validated: an instance of the kind's config class, its other fields
    at their defaults, ``resume`` and ``overwrite`` off. ``kind``: the run kind, when the file
    does not name it.

    ``train_vae(load_config("runs/a/config.json"), out="runs/b", epochs=10)`` reruns a run
    with changes.

    Raises:
        ConfigError: an unreadable or malformed file, an unknown or mismatched kind, a
            setting the kind does not have, a value its declaration refuses; each message
            names the file.
    """
    values = read_config_file(path)
    run_kind = kind_of_file(values, path, kind)
    fields = {f.name for f in dataclasses.fields(run_kind.config)}
    unknown = sorted(k for k in values if k not in fields and k not in RECORDED)
    if unknown:
        others = sorted({k for name in unknown for k in run_kind.elsewhere(name)})
        raise ConfigError(
            f"{path!r}: a {run_kind.name} run has no setting {', '.join(map(repr, unknown))}"
            + (f" (a setting of {', '.join(others)} runs)" if others else "")
        )
    given = {k: v for k, v in values.items() if k in fields and k not in ACTIONS}
    try:
        return validate(run_kind.config(**given))
    except ConfigError as exc:
        raise ConfigError(f"{path!r}: {exc}") from None


def config_flag(argv: list[str]) -> tuple[list[str], str | None]:
    """(``argv`` without its ``--config FILE`` or ``--config=FILE``, FILE or ``None``).

    Raises:
        ConfigError: ``--config`` without a file, or given twice.
    """
    out, found, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--config":
            if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                raise ConfigError("--config needs a file: --config runs/a/config.json")
            found.append(argv[i + 1])
            i += 2
            continue
        if arg.startswith("--config="):
            found.append(arg.split("=", 1)[1])
        else:
            out.append(arg)
        i += 1
    if len(found) > 1:
        raise ConfigError(f"--config given {len(found)} times: give one file")
    return out, (found[0] if found else None)
