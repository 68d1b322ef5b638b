"""Settings declared once, as the typed fields of a dataclass: each field's type, default,
choices (``Literal``), help (the docstring under the field) and bounds (:class:`Range` in
``Annotated``). The command line (``tyro``), ``config.json``, ``--help`` and the error
messages come from that declaration; :func:`validate` checks settings made in Python the way
the command line does. The run configs (:class:`pyrolvm.runs.RunConfig`) are such dataclasses.
"""

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

import tyro

from .errors import ConfigError

__all__ = [
    "Count",
    "Literal",
    "PositiveFloat",
    "Range",
    "Seeds",
    "Sizes",
    "Switch",
    "flag",
    "validate",
]


@dataclass(frozen=True)
class Range:
    """Bounds of a numeric field, as ``Annotated`` metadata: ``low <= value <= high`` (strict
    where ``low_open`` / ``high_open``); ``None`` is unbounded."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def check(self, value: float) -> bool:
        """Whether ``value`` lies in the range."""
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def __str__(self):
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {self.high:g}")
        return " and ".join(parts)


@dataclass(frozen=True)
class Switch:
    """``Annotated`` metadata of a ``bool`` field: the command-line flag ``--NAME`` that sets
    it to the opposite of its default (``enumerate: Annotated[bool, Switch("sample-labels")]
    = True``; without it, ``--FIELD`` or ``--no-FIELD``)."""

    name: str


def _parse_sizes(args):
    text = args[0]
    try:
        return tuple(int(h) for h in text.replace(",", " ").split())
    except ValueError:
        raise ValueError(f"expected layer sizes like 200,200, got {text!r}") from None


#: Hidden layer sizes, written ``200,200`` on the command line.
Sizes = Annotated[
    tuple[int, ...],
    tyro.constructors.PrimitiveConstructorSpec(
        nargs=1,
        metavar="SIZES",
        instance_from_str=_parse_sizes,
        is_instance=lambda v: isinstance(v, tuple),
        str_from_instance=lambda v: [",".join(str(h) for h in v)],
    ),
]


def _parse_seeds(args):
    text = args[0]
    try:
        return tuple(int(h) for h in text.replace(",", " ").split())
    except ValueError:
        raise ValueError(f"expected seeds like 0,1,2, got {text!r}") from None


#: Seeds, written ``0,1,2`` on the command line.
Seeds = Annotated[
    tuple[int, ...],
    tyro.constructors.PrimitiveConstructorSpec(
        nargs=1,
        metavar="SEEDS",
        instance_from_str=_parse_seeds,
        is_instance=lambda v: isinstance(v, tuple),
        str_from_instance=lambda v: [",".join(str(h) for h in v)],
    ),
]
#: An integer >= 1.
Count = Annotated[int, Range(1)]
#: A float > 0.
PositiveFloat = Annotated[float, Range(0, low_open=True)]


def flag(name: str) -> str:
    """The command-line flag of a config field: ``data_root`` -> ``--data-root``."""
    return "--" + name.replace("_", "-")


def _strip(tp):
    """(base type, allows None, Range or None, Literal choices or None) of a field type."""
    ranges = None
    allows_none = False
    if typing.get_origin(tp) is Annotated:
        ranges = next((m for m in tp.__metadata__ if isinstance(m, Range)), None)
        tp = tp.__origin__
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        allows_none = len(args) < len(typing.get_args(tp))
        tp = args[0] if len(args) == 1 else tp
        if typing.get_origin(tp) is Annotated:
            ranges = ranges or next((m for m in tp.__metadata__ if isinstance(m, Range)), None)
            tp = tp.__origin__
    choices = typing.get_args(tp) if typing.get_origin(tp) is Literal else None
    return tp, allows_none, ranges, choices


def _check_field(name, tp, value):
    base, allows_none, ranges, choices = _strip(tp)
    if value is None:
        if allows_none:
            return value
        raise ConfigError(f"{flag(name)} needs a value")
    if choices is not None:
        if value not in choices:
            raise ConfigError(
                f"unknown {flag(name)} {value!r}: choose one of {', '.join(map(str, choices))}"
            )
        return value
    origin = typing.get_origin(base) or base
    if origin is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{flag(name)} must be true or false, got {value!r}")
        return value
    if origin in (int, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and origin is int and int(value) != value:
            ok = False
        if not ok:
            kind = "an integer" if origin is int else "a number"
            raise ConfigError(f"{flag(name)} must be {kind}, got {value!r}")
        value = origin(value)
        if ranges is not None and not ranges.check(value):
            raise ConfigError(f"{flag(name)} must be {ranges}, got {value!r}")
        if origin is float and value != value:
            raise ConfigError(f"{flag(name)} must be a number, got nan")
        return value
    if origin is tuple:
        items = typing.get_args(base)
        try:
            value = tuple(value)
        except TypeError:
            raise ConfigError(f"{flag(name)} must be a sequence, got {value!r}") from None
        if len(items) == 2 and items[1] is Ellipsis:
            items = (items[0],) * len(value)
        if len(items) != len(value):
            raise ConfigError(f"{flag(name)} takes {len(items)} values, got {value!r}")
        return tuple(_check_field(name, t, v) for t, v in zip(items, value, strict=True))
    if origin is str and not isinstance(value, str):
        raise ConfigError(f"{flag(name)} must be a string, got {value!r}")
    return value


def validate(config: Any) -> Any:
    """Check every field of a run config against its declaration (type, choices, bounds) and
    return a copy with values normalized (ints as ``int``, sequences as tuples).

    Raises:
        ConfigError: naming the flag, the allowed values and the value given.
    """
    hints = typing.get_type_hints(type(config), include_extras=True)
    values = {
        f.name: _check_field(f.name, hints[f.name], getattr(config, f.name))
        for f in dataclasses.fields(config)
    }
    return dataclasses.replace(config, **values)
