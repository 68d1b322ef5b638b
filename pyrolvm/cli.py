# pyright: reportInvalidTypeForm=false
# (the command type is built at run time from the run registry)
"""The ``pyrolvm`` command: ``pyrolvm train KIND ...`` for every registered run kind,
``pyrolvm evaluate RUN_FOLDER`` and ``pyrolvm compare RUN_FOLDER...``.

Generated, not written: the flags of ``pyrolvm train KIND`` are the fields of the kind's run
config (:data:`pyrolvm.runs.RUNS`), parsed by ``tyro``, with their types, defaults, choices
and help as declared there, and ``--config FILE`` (the file's settings as the defaults of the
flags: :func:`pyrolvm.runs.load_config`) and ``--seeds`` (:func:`pyrolvm.runs.train_seeds`).
Errors caused by bad input are printed as one message with exit
status 2 (``pyrolvm: error: ...`` for settings and data, tyro's message for a malformed flag).

Under ``torchrun`` (``torchrun --nproc-per-node N -m pyrolvm train ...``, or ``pyrolvm train
... --nproc N``, which launches it) every process runs the same command in a
``torch.distributed`` process group (:mod:`pyrolvm.inference.distributed`); rank 0 alone
prints the summary and the errors (another rank prints only that it lost its peers, in case
rank 0 is the one that died).
"""

import dataclasses
import os
import sys
import typing
import warnings
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import tyro

from .cli_layout import Command, grouped, plain, switch_of, tyro_type, values_of
from .cli_layout import parse as layout_parse
from .compare import FILES
from .devices import process_device
from .errors import Interrupted, PeerLost, PyroLVMError
from .inference import distributed
from .inference.compiled import compile_mode
from .runs import RUNS, compare_runs, evaluate_run, load_config, train_seeds
from .runs.common import format_summary
from .runs.config_files import config_flag, kind_of_file, read_config_file
from .settings import Seeds


@dataclass
class Evaluate:
    """Reload a run folder's checkpoint and recompute its test figures."""

    folder: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="FOLDER")]
    """a run folder written by `pyrolvm train`"""
    data_root: str | None = None
    """MNIST root, if it moved"""
    progress: bool = True
    """show progress bars (--no-progress: hide them)"""
    device: str = "auto"
    """auto (CUDA if any), cpu, cuda, cuda:N"""
    nproc: int = 1
    """processes sharing the importance sampling (torchrun)"""
    compile: Literal["auto", "inductor", "graph", "off"] = "auto"
    """the evaluator's chunks"""


def evaluate_options() -> dict[str, tuple[Any, str]]:
    """The options of ``pyrolvm evaluate``, ``{name: (type, help)}``: every kind's
    ``evaluate_options``, typed as the config fields they override (the first kind that
    declares one gives its help), ``None`` (the run's own) by default."""
    out: dict[str, tuple[Any, str]] = {}
    for kind in RUNS.values():
        hints = typing.get_type_hints(kind.config, include_extras=True)
        for name, text in kind.evaluate_options.items():
            out.setdefault(name, (hints[name] | None, text))
    return out


@dataclass
class Compare:
    """Compare runs of one kind side by side: the settings that differ, the test figures,
    paired differences, learning curves (comparison.csv, comparison.json, curves.png,
    test_nll.png in --out)."""

    folders: Annotated[tuple[str, ...], tyro.conf.Positional, tyro.conf.arg(metavar="RUN")]
    """run folders, glob patterns (quoted: 'runs/*') or sweep folders of --seeds"""
    sort: Annotated[str | None, tyro.conf.arg(metavar="KEY")] = None
    """order the runs by this figure or setting (test_nll, elbo, ...); -KEY: descending"""
    out: Annotated[str, tyro.conf.arg(metavar="DIR")] = "comparison"
    """the folder the comparison's files go to"""


#: The flags ``pyrolvm train KIND`` adds to the kind's config: (name, type, help, metavar),
#: in the group "run folder" of ``--help``.
TRAIN_FLAGS = (
    (
        "config",
        str | None,
        "start from the settings in this file (a run folder's config.json, or YAML or JSON "
        "of setting: value); the flags given override it",
        "FILE",
    ),
    (
        "seeds",
        Seeds | None,  # pyright: ignore[reportOperatorIssue] (an Annotated type, or None)
        "run once per seed (e.g. 0,1,2) into OUT/seed-N; `pyrolvm compare OUT`: mean and s.d.",
        "SEEDS",
    ),
)


def train_type(kind: Any) -> type:
    """The kind's config with :data:`TRAIN_FLAGS` (what ``pyrolvm train KIND`` parses; the
    run itself gets the kind's config without them, :func:`as_run_config`)."""
    fields: list[Any] = [
        (
            name,
            Annotated[tp, tyro.conf.arg(help=text, metavar=var)],
            dataclasses.field(default=None),
        )
        for name, tp, text, var in TRAIN_FLAGS
    ]
    groups = {"run folder": tuple(name for name, *_ in TRAIN_FLAGS)}
    cls = dataclasses.make_dataclass(
        kind.config.__name__, fields, bases=(kind.config,), namespace={"GROUPS": groups}
    )
    cls.__doc__ = kind.config.__doc__
    return cls


def as_run_config(kind: Any, command: Any) -> Any:
    """``command`` (a :func:`train_type`) as the kind's own config."""
    return kind.config(
        **{f.name: getattr(command, f.name) for f in dataclasses.fields(kind.config)}
    )


def evaluate_type() -> type:
    """:class:`Evaluate` with the options the run kinds declare
    (:func:`evaluate_options`: ``--eval-samples``...), each ``None``
    (the run's own) by default."""
    fields = [
        (name, Annotated[tp, tyro.conf.arg(help=text)], dataclasses.field(default=None))
        for name, (tp, text) in evaluate_options().items()
    ]
    cls = dataclasses.make_dataclass("Evaluate", fields, bases=(Evaluate,))
    cls.__doc__ = Evaluate.__doc__
    return cls


def _kinds():
    return sorted(RUNS.values(), key=lambda k: (k.name != "vae", k.name))


#: ``pyrolvm --help``: what the command is, and examples.
DESCRIPTION = """Deep latent-variable models as Pyro model/guide pairs, trained by SVI.

examples:
  pyrolvm train vae --epochs 20                     a VAE on the bundled digits
  pyrolvm train vae --dataset mnist --elbo iwae --num-particles 5
  pyrolvm train vae --resume --epochs 40            continue (or extend) runs/vae
  pyrolvm train --help                              the kinds of run
  pyrolvm train sbn --help                          the flags of one kind, by group
  pyrolvm evaluate runs/vae --eval-samples 5000     recompute a run's test figures
  pyrolvm compare 'runs/*'                          runs side by side, paired differences"""


def commands() -> dict[str, Command]:
    """The ``pyrolvm`` commands as a tree (:class:`~pyrolvm.cli_layout.Command`): ``train``
    with a subcommand per run kind of :data:`pyrolvm.runs.RUNS` (its config's flags and
    :data:`TRAIN_FLAGS`, grouped), ``evaluate`` and ``compare``."""
    key = tuple((k.name, id(k)) for k in _kinds())  # (built once per registry)
    if key not in _COMMANDS:
        _COMMANDS.clear()
        _COMMANDS[key] = _command_tree()
    return _COMMANDS[key]


_COMMANDS: dict[tuple, dict[str, Command]] = {}


def _command_tree() -> dict[str, Command]:
    kinds = {k.name: Command(k.description, grouped(train_type(k))) for k in _kinds()}
    return {
        "train": Command("Train a model and write a run folder.", subcommands=kinds),
        "evaluate": Command(Evaluate.__doc__ or "", plain(evaluate_type())),
        "compare": Command(Compare.__doc__ or "", plain(Compare)),
    }


def command_type() -> Any:
    """The type tyro parses ``pyrolvm ...`` into (:func:`commands`, built at run time from
    :data:`pyrolvm.runs.RUNS`, so static type checkers see ``Any``)."""
    return tyro_type(commands())


def parse(argv: list[str] | None = None) -> Any:
    """Parse a ``pyrolvm`` command line: a run config (``train``) or :class:`Evaluate`.

    Raises:
        SystemExit: status 2 after a malformed command line, answered in two lines on
            stderr; 0 after ``--help`` or ``--version``.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv in (["--version"], ["-V"]):
        from . import __version__

        print(f"pyrolvm {__version__}")
        raise SystemExit(0)
    argv, note = taken_over(argv)
    defaults, path = None, None
    if argv[:1] == ["train"]:
        try:
            argv, defaults, path = config_file(argv)
        except PyroLVMError as exc:
            print(f"pyrolvm: error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
    command = layout_parse(commands(), argv, DESCRIPTION, note)
    if defaults is None:
        return command
    given = given_fields(defaults, argv)
    values = {f.name: getattr(defaults, f.name) for f in dataclasses.fields(defaults)}
    values |= {name: getattr(command, name) for name in given}
    try:  # (the config's own checks, on the merged settings)
        return type(command)(**values, config=path, seeds=command.seeds)
    except PyroLVMError as exc:
        print(f"pyrolvm: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def given_fields(config: Any, argv: list[str]) -> set[str]:
    """The fields of the run config ``config`` whose flags ``argv`` gives (``--name``,
    ``--no-name`` or the field's :class:`~pyrolvm.settings.Switch`)."""
    hints = typing.get_type_hints(type(config), include_extras=True)
    tokens = {t.split("=")[0] for t in argv if t.startswith("--")}
    out = set()
    for f in dataclasses.fields(config):
        name = f.name.replace("_", "-")
        flags = {f"--{name}", f"--no-{name}", f"--{switch_of(hints[f.name])}"}
        if tokens & flags:
            out.add(f.name)
    return out


def config_file(argv: list[str]) -> tuple[list[str], Any, str | None]:
    """``train [KIND] FLAGS`` with ``--config FILE``: (the command line without ``--config``,
    KIND named from the file when not given; the file's settings, a run config validated by
    the kind's declaration: the flags given override them; FILE), or (``argv``, ``None``,
    ``None``) without.

    Raises:
        ConfigError: see :func:`pyrolvm.runs.load_config`.
    """
    argv, path = config_flag(argv)
    if path is None:
        return argv, None, None
    named = argv[1] if len(argv) > 1 and argv[1] in RUNS else None
    kind = kind_of_file(read_config_file(path), path, named)
    if named is None:
        argv = ["train", kind.name, *argv[1:]]
    return argv, load_config(path, kind.name), path


def taken_over(argv: list[str]) -> tuple[list[str], str]:
    """``argv`` with ``train OLD ... --SETTING VALUE`` as ``train NEW ...`` where the kind NEW
    took over those runs of OLD (:attr:`~pyrolvm.runs.RunKind.takes_over`: ``pyrolvm train vae
    --latent bernoulli`` is ``pyrolvm train sbn --latent bernoulli``), and a note that says
    so for an error message ("" where ``argv`` is unchanged)."""
    if len(argv) < 2 or argv[0] != "train":
        return argv, ""
    for kind in RUNS.values():
        for old, setting, values in kind.takes_over:
            flag = "--" + setting.replace("_", "-")
            given = values_of(argv, flag)
            if argv[1] == old and given and given[0] in values:
                note = f"`pyrolvm train {old} {flag} {given[0]}` is `pyrolvm train {kind.name}`"
                return ["train", kind.name, *argv[2:]], note
    return argv, ""


def parser() -> Any:
    """The argument parser of the ``pyrolvm`` command (for documentation): an
    ``argparse.ArgumentParser`` of tyro's own argparse."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return tyro.extras.get_parser(
            command_type(), prog="pyrolvm", config=(tyro.conf.OmitSubcommandPrefixes,)
        )


def run(command: Any) -> str:
    """Carry out a parsed command and return what it prints."""
    if isinstance(command, Evaluate):
        options = {name: getattr(command, name) for name in evaluate_options()}
        with compile_mode(command.compile):
            kind, metrics = evaluate_run(
                command.folder, command.data_root, command.progress, command.device, **options
            )
        return format_summary(f"evaluation of {command.folder}", kind.evaluation_rows(metrics))
    if isinstance(command, Compare):
        comparison = compare_runs(list(command.folders), command.sort, command.out)
        written = [os.path.basename(f) for f in comparison.files]
        return comparison.table() + f"\n\nwritten to {command.out}: {', '.join(written)}"
    kind = next(k for k in RUNS.values() if type(command).__mro__[1] is k.config)
    config = as_run_config(kind, command)
    if command.seeds:
        runs = train_seeds(kind.name, command.seeds, config)
        summaries = [
            kind.summary(m, config, os.path.join(config.out, f"seed-{s}")) for s, m in runs.items()
        ]
        table = compare_runs([config.out]).table()
        files = f"files: pyrolvm compare {config.out} --out DIR ({', '.join(FILES)})"
        return "\n\n".join([*summaries, table, files])
    metrics = kind.train(config)
    return kind.summary(metrics, config, config.out)


def torchrun_args(nproc: int, argv: list[str]) -> list[str]:
    """torchrun's arguments that run ``pyrolvm ARGV`` in ``nproc`` processes on this machine:
    ``torchrun --standalone --nproc-per-node N -m pyrolvm ARGV``."""
    return ["--standalone", f"--nproc-per-node={int(nproc)}", "-m", "pyrolvm", *argv]


def launch(nproc: int, argv: list[str]) -> int:
    """Run ``pyrolvm ARGV`` in ``nproc`` processes with torchrun's own launcher
    (``torch.distributed.run``, in this process) and return the exit status: 0, or the
    status of a process that failed (1 for a process killed by a signal, which is then named
    in one line)."""
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    os.environ.setdefault("OMP_NUM_THREADS", "1")  # (torchrun's default, without its warning)
    try:
        torchrun.run(torchrun.parse_args(torchrun_args(nproc, _without_nproc(argv))))
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        if failure.exitcode > 0:
            return failure.exitcode  # the process printed its own error
        name = failure.signal_name() if failure.exitcode < 0 else "?"
        print(
            f"pyrolvm: error: process {rank} of {nproc} was killed ({name}); the others "
            "stopped: the run folder keeps the checkpoint of the last completed epoch",
            file=sys.stderr,
        )
        return 1
    return 0


def _without_nproc(argv: list[str]) -> list[str]:
    """``argv`` without its ``--nproc N`` (or ``--nproc=N``; torchrun's own parser would take
    it for its ``--nproc-per-node``)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def _say(message: str, exc: BaseException) -> None:
    """Print an error line: on rank 0, or on any rank when it lost its peers (``$RANK`` too:
    an error before the process group exists is raised by every process alike)."""
    rank0 = distributed.is_main() and os.environ.get("RANK", "0") == "0"
    if rank0 or isinstance(exc, PeerLost):
        print(message, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pyrolvm`` console script; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = parse(argv)
    nproc = getattr(command, "nproc", 1)
    if nproc > 1 and not distributed.launched():
        try:  # one process per GPU: refuse now what every process would refuse
            process_device(getattr(command, "device", "auto"), 0, nproc)
        except PyroLVMError as exc:
            print(f"pyrolvm: error: {exc}", file=sys.stderr)
            return 2
        return launch(nproc, argv)
    try:
        if distributed.init(getattr(command, "device", "auto")) and hasattr(command, "nproc"):
            # config.json records the processes that trained the run
            command = dataclasses.replace(command, nproc=distributed.world_size())
        text = run(command)
        if distributed.is_main():
            print(text)
    except Interrupted as exc:
        _say(f"pyrolvm: {exc}", exc)
        return 130
    except PyroLVMError as exc:
        _say(f"pyrolvm: error: {exc}", exc)
        return 2
    except KeyboardInterrupt as exc:
        _say(
            "pyrolvm: interrupted; the run folder keeps the last checkpoint: run the same "
            "command with --resume to continue",
            exc,
        )
        return 130
    finally:
        distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
