"""How the ``pyrolvm`` command line reads, in one place: the commands as a tree
(:class:`Command`), each run config's flags grouped by concern in ``--help`` with each
default shown once, and every malformed command line answered in two lines on stderr with
exit status 2. The parser is tyro's: this module only builds the types tyro parses (nested
dataclasses under ``tyro.conf.OmitArgPrefixes``, so that the flags stay flat) and words the
errors tyro reports (its parse-error events, read through ``tyro._errors.on_parse_error``;
where that hook is missing, tyro's own message condensed to one line).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import importlib
import io
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Union

import docstring_parser
import tyro
import tyro.conf

from .runs.config import GROUP_ORDER, group_of
from .settings import Switch, flag

#: The widest choices ``--flag {a,b}`` shown as such (wider ones: ``--flag NAME``, the help
#: listing them), and the widest flag with its metavar that tyro keeps beside its help.
INVOCATION, WIDEST = 20, 24


@dataclass(frozen=True)
class Command:
    """A command of ``pyrolvm``: its one-line ``help``, and either its ``flags`` (a
    dataclass, as :func:`grouped` or :func:`plain` make it) or its ``subcommands`` by name."""

    help: str
    flags: type | None = None
    subcommands: dict[str, Command] = field(default_factory=dict)


# -- the help --------------------------------------------------------------------------------


def help_of(config: type, name: str) -> str:
    """The docstring under the field ``name`` of ``config`` (or of the first base declaring
    one), on one line."""
    for cls in config.__mro__:
        if dataclasses.is_dataclass(cls) and name in _field_docs(cls):
            return _field_docs(cls)[name]
    return ""


@functools.cache
def _field_docs(cls: type) -> dict[str, str]:
    """The docstrings under the fields of the dataclass ``cls``, on one line, by field (read
    from its source once: ``inspect`` parses the module's source at each call)."""
    params = docstring_parser.parse_from_object(cls).params
    return {p.arg_name: " ".join(p.description.split()) for p in params if p.description}


def _show(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def default_hint(config: type, name: str, default: Any) -> str | None:
    """What ``--help`` says of the default of the field ``name``: for a ``None`` default, the
    values of the config's ``DATASET_DEFAULTS`` ("(default: 8; mnist: 50)": digits', then
    those that differ), or nothing (the field's help says what ``None`` means); ``None`` for
    tyro's "(default: X)"."""
    if default is not None:
        return None
    tables = getattr(config, "DATASET_DEFAULTS", {})
    per = {dataset: _show(t[name]) for dataset, t in tables.items() if name in t}
    if not per:
        return ""
    first, *_ = per.values()
    others = "".join(f"; {dataset}: {v}" for dataset, v in per.items() if v != first)
    return f"(default: {first}{others})"


def _strip_none(tp: Any) -> tuple[Any, bool]:
    """(``tp`` without ``None`` in a union, whether it had it), ``Annotated`` kept."""
    base = tp.__origin__ if typing.get_origin(tp) is Annotated else tp
    if typing.get_origin(base) in (Union, types.UnionType):
        args = [a for a in typing.get_args(base) if a is not type(None)]
        if len(args) == 1 and len(args) < len(typing.get_args(base)):
            return args[0], True
    return tp, False


def _base(tp: Any) -> Any:
    inner = _strip_none(tp)[0]
    return inner.__origin__ if typing.get_origin(inner) is Annotated else inner


def choices(tp: Any) -> tuple[str, ...]:
    """The choices of a ``Literal`` field type (``None`` left out), or ``()``."""
    base = _base(tp)
    return tuple(map(str, typing.get_args(base))) if typing.get_origin(base) is Literal else ()


def metavar(name: str, tp: Any) -> str | None:
    """The metavar of the field ``name`` of type ``tp``: its choices ``{a,b}`` where the flag
    stays short (else NAME, the help listing them), N for an integer, a type's own (SIZES),
    never ``None`` as a choice; ``None`` to keep tyro's."""
    inner, base = _strip_none(tp)[0], _base(tp)
    if choices(tp):
        braced = "{" + ",".join(choices(tp)) + "}"
        return braced if len(flag(name)) + 1 + len(braced) <= INVOCATION else "NAME"
    for meta in getattr(inner, "__metadata__", ()):
        if getattr(meta, "metavar", None):
            return meta.metavar
    if base is int:
        return "N"
    if base is float:
        return "FLOAT"
    if not _strip_none(tp)[1]:
        return None
    if typing.get_origin(base) is tuple:
        first = typing.get_args(base)[0]
        item = "{" + ",".join(map(str, typing.get_args(first))) + "}" if choices(first) else "X"
        return f"{item} ..."
    return getattr(base, "__name__", "VALUE").upper()


def annotated(config: type, name: str, tp: Any, default: Any) -> Any:
    """The field type ``tp`` with its help, metavar and default hint for tyro."""
    given = [m for m in getattr(tp, "__metadata__", ()) if getattr(m, "help", None)]
    text = help_of(config, name) or (given[-1].help if given else "")
    hint, var = default_hint(config, name, default), metavar(name, tp)
    if var == "NAME":  # the choices in the help, the default marked
        listed = ", ".join(c + (" (default)" if c == str(default) else "") for c in choices(tp))
        if text.endswith(")") and " (" in text:  # before a closing remark
            head, _, tail = text.rpartition(" (")
            text = f"{head}: {listed} ({tail}"
        else:
            text = f"{text}: {listed}" if text else listed
        hint = ""
    markers: tuple = ()
    if _base(tp) is bool:  # one switch: the flag that changes the default
        hint, markers = "", (tyro.conf.FlagCreatePairsOff,)
    elif var is not None and len(flag(name)) + 1 + len(var) > WIDEST:
        var = "X"
    arg = tyro.conf.arg(help=text, metavar=var, help_behavior_hint=hint)
    return Annotated[(tp, arg, *markers)]


def switch_of(tp: Any) -> str | None:
    """The flag of a field declared with :class:`~pyrolvm.settings.Switch`, or ``None``."""
    return next((m.name for m in getattr(tp, "__metadata__", ()) if isinstance(m, Switch)), None)


def _fields(config: type) -> list[tuple[str, Any, Any]]:
    """``(name, annotated type, dataclasses.field)`` of each field of ``config`` for tyro (a
    :class:`~pyrolvm.settings.Switch` as a flag of its own, off by default)."""
    hints = typing.get_type_hints(config, include_extras=True)
    out = []
    for f in dataclasses.fields(config):
        switch = switch_of(hints[f.name])
        if switch is not None:
            arg = tyro.conf.arg(help=help_of(config, f.name), help_behavior_hint="")
            tp = Annotated[bool, arg, tyro.conf.FlagCreatePairsOff]
            out.append((switch.replace("-", "_"), tp, dataclasses.field(default=False)))
            continue
        if f.default is not dataclasses.MISSING:
            kept = dataclasses.field(default=f.default)
        elif f.default_factory is not dataclasses.MISSING:
            kept = dataclasses.field(default_factory=f.default_factory)
        else:
            kept = dataclasses.field()
        out.append((f.name, annotated(config, f.name, hints[f.name], f.default), kept))
    return out


def grouped(config: type) -> type:
    """The dataclass tyro parses for a run config ``config``: one nested dataclass per group
    of :data:`~pyrolvm.runs.config.GROUP_ORDER` (``group_of``), its flags unprefixed; its
    ``flat()`` is the ``config`` instance."""
    by_group: dict[str, list] = {group: [] for group in GROUP_ORDER}
    for f, spec in zip(dataclasses.fields(config), _fields(config), strict=True):
        by_group[group_of(config, f.name)].append(spec)
    sections = []
    for group, specs in by_group.items():
        if specs:
            cls = dataclasses.make_dataclass(f"{config.__name__}_{group}", specs)
            cls.__doc__ = ""  # (no description under the group's title)
            title = tyro.conf.arg(name=group, help="")
            attr = group.replace(" ", "_")
            sections.append((attr, Annotated[cls, title, tyro.conf.OmitArgPrefixes], cls))
    hints = typing.get_type_hints(config, include_extras=True)
    switches = {
        f.name: ((switch_of(hints[f.name]) or "").replace("-", "_"), f.default)
        for f in dataclasses.fields(config)
        if switch_of(hints[f.name])
    }

    def flat(self):
        values = {}
        for attr, _, _ in sections:
            values |= dataclasses.asdict(getattr(self, attr))
        for name, (attr, default) in switches.items():
            values[name] = default != values.pop(attr)
        return config(**values)

    top = dataclasses.make_dataclass(
        config.__name__,
        [(g, tp, dataclasses.field(default_factory=cls)) for g, tp, cls in sections],
        namespace={"flat": flat, "CONFIG": config},
    )
    top.__doc__ = ""
    return top


def plain(cls: type) -> type:
    """``cls`` (a dataclass of flags) with its fields' help, metavars and default hints as
    :func:`grouped` gives them, ungrouped: a subclass, so that its instances are ``cls``'s."""
    sub = dataclasses.make_dataclass(cls.__name__, _fields(cls), bases=(cls,))
    sub.__doc__ = cls.__doc__
    return sub


def tyro_type(commands: dict[str, Command]) -> Any:
    """The type tyro parses for a ``{name: Command}`` level of the tree: a union of
    subcommands, each its flags' dataclass or (with subcommands of its own) a dataclass whose
    one field ``command`` is the next level."""
    options = []
    for name, command in commands.items():
        tp = command.flags
        if command.subcommands:
            inner = Annotated[tyro_type(command.subcommands), tyro.conf.arg(name="")]
            tp = dataclasses.make_dataclass(name.title(), [("command", inner)])
            tp.__doc__ = command.help
        options.append(Annotated[tp, tyro.conf.subcommand(name, description=command.help)])
    return Union[tuple(options)]  # noqa: UP007 (a union built at run time)


def unwrap(parsed: Any) -> Any:
    """What tyro returned, as the command's own object: the run config of ``train KIND``
    (``flat()``), the flags of another command."""
    while hasattr(parsed, "command") and not isinstance(parsed, type):
        parsed = parsed.command
    return parsed.flat() if hasattr(parsed, "flat") else parsed


# -- the errors ------------------------------------------------------------------------------


class Rejected(Exception):
    """A malformed command line, worded (raised from tyro's parse-error hook)."""


def path_of(commands: dict[str, Command], argv: list[str]) -> tuple[list[str], Command | None]:
    """(the command names that ``argv`` starts with, the command they name or ``None``)."""
    names, node = [], None
    level = commands
    for token in argv:
        if token not in level:
            break
        names.append(token)
        node = level[token]
        level = node.subcommands
    return names, node


def flags_of(flags: type | None) -> list[str]:
    """The flags tyro makes of a dataclass of :func:`grouped` or :func:`plain`."""
    if flags is None:
        return []
    config = getattr(flags, "CONFIG", flags)
    hints = typing.get_type_hints(config, include_extras=True)
    out = []
    for f in dataclasses.fields(config):
        name = switch_of(hints[f.name]) or f.name.replace("_", "-")
        if _base(hints[f.name]) is bool and not switch_of(hints[f.name]) and f.default:
            name = "no-" + name
        out.append("--" + name)
    return out


class Wording:
    """The two lines that answer a malformed ``pyrolvm`` command line ``argv`` (the
    commands' tree ``commands``; ``note``: what a rewriting of ``argv`` did, for the
    message). Called with tyro's parse-error events; raises :class:`Rejected`."""

    def __init__(self, commands: dict[str, Command], argv: list[str], note: str = ""):
        self.commands, self.argv, self.note = commands, argv, note
        self.names, self.node = path_of(commands, argv)
        self.prog = " ".join(["pyrolvm", *self.names])

    def __call__(self, event: Any) -> None:
        kind = type(event).__name__
        method = getattr(self, "on_" + kind, None)
        if method is not None:
            message = method(event)
            if message:
                raise Rejected(message)

    def siblings(self) -> dict[str, Command]:
        level = self.commands
        for name in self.names[:-1]:
            level = level[name].subcommands
        return level

    def on_UnrecognizedArgs(self, event) -> str:  # noqa: N802 (tyro's event name)
        tokens = list(event.tokens)
        level = self.node.subcommands if self.node is not None else self.commands
        if level and not tokens[0].startswith("-"):
            return self.unknown_command(tokens[0], level)
        flag = next((shown(t.split("=")[0]) for t in tokens if t.startswith("-")), None)
        if flag is None:
            return f"`{self.prog}` takes no argument {tokens[0]!r}"
        flags = flags_of(self.node.flags if self.node is not None else None)
        close = difflib.get_close_matches(flag, flags, n=1, cutoff=0.75)
        text = f"`{self.prog}` has no flag {flag}"
        if self.note:
            text = f"{self.note}, which has no flag {flag}"
        if close:
            return f"{text}; did you mean {close[0]}?"
        siblings = self.siblings().items()
        others = [n for n, c in siblings if c is not self.node and flag in flags_of(c.flags)]
        return f"{text} (a flag of {', '.join(others)})" if others else text

    def unknown_command(self, token: str, level: dict[str, Command]) -> str:
        close = difflib.get_close_matches(token, list(level), n=1)
        text = f"`{self.prog}` has no command {token!r}: choose one of {', '.join(level)}"
        return f"{text}; did you mean {close[0]}?" if close else text

    def on_MissingSubcommand(self, event) -> str:  # noqa: N802
        names = list(event.subcommand_spec.parser_from_name)
        return f"`{self.prog}` needs a command: one of {', '.join(names)}"

    def on_MissingArgs(self, event) -> str:  # noqa: N802
        missing = [a.arg.field.intern_name for a in event.missing_arguments]
        names = [
            n.upper() if a.arg.is_positional() else "--" + n.replace("_", "-")
            for n, a in zip(missing, event.missing_arguments, strict=True)
        ]
        return f"`{self.prog}` needs {', '.join(names)}"

    def on_InvalidChoice(self, event) -> str:  # noqa: N802
        flag = event.argument.lowered.name_or_flags[0]
        listed = choices(event.argument.field.type) or tuple(map(str, event.choices))
        listed = [c for c in listed if c != "None"]
        choices_ = sorted(listed) if all(c.isdigit() for c in listed) else listed
        return f"invalid choice {event.value!r} for {flag}: choose one of {', '.join(choices_)}"

    def on_BadValue(self, event) -> str:  # noqa: N802
        lowered = event.argument.lowered
        flag = lowered.name_or_flags[0]
        if event.reason == "fixed":
            return f"{flag} cannot be given a value"
        n = lowered.nargs if isinstance(lowered.nargs, int) else 1
        return f"{flag} needs {'a value' if n == 1 else f'{n} values'} ({lowered.metavar})"

    def on_InstantiationFailure(self, event) -> str:  # noqa: N802
        if event.argument is None:
            return str(event.message).splitlines()[0]
        lowered = event.argument.lowered
        flag = lowered.name_or_flags[0]
        what = {"N": "an integer", "FLOAT": "a number", "X": "a number"}
        what["SIZES"] = "sizes like 200,200"
        words = [what.get(w, w) for w in str(lowered.metavar).split()]
        wanted = words[0] if len(words) == 1 else f"{len(words)} values ({lowered.metavar})"
        given = " ".join(values_of(self.argv, flag))
        return f"{flag} takes {wanted}, got {shown(given) if given else 'nothing'}"


def shown(token: str) -> str:
    """``token`` as an error message quotes it: as it is, or ``repr``-ed where it has spaces
    or characters that do not print (a message stays on its line)."""
    return token if token.isprintable() and " " not in token and token else repr(token)


def values_of(argv: list[str], flag: str) -> list[str]:
    """The values given to the last ``flag`` in ``argv`` (``--flag A B`` or ``--flag=A``)."""
    for i in range(len(argv) - 1, -1, -1):
        if argv[i].startswith(flag + "="):
            return [argv[i].split("=", 1)[1]]
        if argv[i] == flag:
            rest = argv[i + 1 :]
            return rest[: next((j for j, a in enumerate(rest) if a.startswith("--")), len(rest))]
    return []


def condensed(text: str) -> str:
    """tyro's boxed error message, on one line (its title and first line)."""
    lines = [re.sub(r"[╭╮╰╯│─•]", " ", line).strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    return ": ".join(lines[:2]) or "malformed command line"


def _on_parse_error(hook: Any) -> Any:
    """tyro's parse-error hook (a private API of tyro 1.0.17), or nothing where it is gone."""
    try:
        return importlib.import_module("tyro._errors").on_parse_error(hook)
    except (ImportError, AttributeError):
        return contextlib.nullcontext()


def parse(commands: dict[str, Command], argv: list[str], description: str, note: str = ""):
    """``argv`` parsed by tyro against the tree ``commands`` (:func:`unwrap`-ped).

    Raises:
        SystemExit: 0 after ``--help``; 2 after a malformed command line, which is answered
            by two lines on stderr (``pyrolvm: error: ...``, and where to read the flags).
    """
    wording = Wording(commands, argv, note)
    buffer = io.StringIO()
    try:
        with (
            _on_parse_error(wording),
            contextlib.redirect_stderr(buffer),
        ):
            parsed = tyro.cli(
                tyro_type(commands),
                args=argv,
                prog="pyrolvm",
                description=description,
                config=(tyro.conf.OmitSubcommandPrefixes,),
            )
    except Rejected as exc:
        message = str(exc)
    except SystemExit as exc:
        if exc.code != 2:
            sys.stderr.write(buffer.getvalue())
            raise
        message = condensed(buffer.getvalue())
    else:
        sys.stderr.write(buffer.getvalue())
        return unwrap(parsed)
    print(f"pyrolvm: error: {message}\nsee `{wording.prog} --help`", file=sys.stderr)
    raise SystemExit(2)
