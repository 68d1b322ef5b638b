# pyright: reportInvalidTypeForm=false
# (the command type is built at run time from the run registry)
"""The ``pyrolvm`` command: ``pyrolvm train KIND ...`` for every registered run kind,
``pyrolvm evaluate RUN_FOLDER`` and ``pyrolvm compare RUN_FOLDER...``.

Generated, not written: the flags of ``pyrolvm train KIND`` are the fields of the kind's run
config (:data:`pyrolvm.runs.RUNS`), parsed by ``tyro``, with their types, defaults, choices
and help as declared there, and ``--config FILE`` (the file's settings as the defaults of the
flags: :func:`pyrolvm.runs.load_config`) and ``--seeds`` (:func:`pyrolvm.runs.train_seeds`).
Errors caused by bad input are printed as one message with exit status 2 (``pyrolvm: error:
...`` for settings and data, tyro's message for a malformed flag).

Under ``torchrun`` (``torchrun --nproc-per-node N -m pyrolvm train ...``, or ``pyrolvm train
... --nproc N``, which launches it) every process runs the same command in a
``torch.distributed`` process group (:mod:`pyrolvm.inference.distributed`); rank 0 alone
prints the summary and the errors (another rank prints only that it lost its peers, in case
rank 0 is the one that died).
"""

import dataclasses
import os
import sys
import warnings
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

import tyro

from .devices import process_device
from .errors import Interrupted, PeerLost, PyroLVMError
from .inference import distributed
from .inference.compiled import compile_mode
from .runs import RUNS, compare_runs, evaluate_run, load_config, train_seeds
from .runs.common import format_summary
from .runs.compare import FILES
from .runs.config_files import config_flag, kind_of_file, read_config_file
from .runs.registry import evaluate_options
from .settings import Seeds


@dataclass
class Evaluate:
    """Reload a run folder's checkpoint and recompute its test figures."""

    folder: tyro.conf.Positional[str]
    """a run folder written by `pyrolvm train`"""
    data_root: str | None = None
    """MNIST root, if it moved"""
    progress: bool = True
    """show progress bars"""
    device: str = "auto"
    """where to evaluate: auto (CUDA when available), cpu, cuda or cuda:N"""
    nproc: int = 1
    """processes that share the importance sampling out (N > 1 launches `torchrun
    --standalone --nproc-per-node N`; ignored when already under torchrun)"""
    compile: Literal["auto", "inductor", "graph", "off"] = "auto"
    """the evaluator's chunks traced once per shape and replayed (graph) or compiled by
    inductor; off: eager (see `pyrolvm train vae --help`)"""


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


#: The flags ``pyrolvm train KIND`` adds to the kind's config: (name, type, help, metavar).
TRAIN_FLAGS = (
    (
        "config",
        str | None,
        "start from the settings in this file (a run folder's config.json, or YAML or JSON "
        "of setting: value); the flags given override it; pyrolvm train --config "
        "runs/a/config.json --out runs/b reruns run a",
        "FILE",
    ),
    (
        "seeds",
        Seeds | None,  # pyright: ignore[reportOperatorIssue] (an Annotated type, or None)
        "run these settings once per seed (e.g. 0,1,2) into OUT/seed-N; pyrolvm compare OUT "
        "gives the mean and s.d. across them",
        "SEEDS",
    ),
)


def train_type(kind: Any) -> type:
    """The kind's config with :data:`TRAIN_FLAGS` (what ``pyrolvm train KIND`` parses; the
    run itself gets the kind's config without them, :func:`as_run_config`)."""
    fields = [
        (
            name,
            Annotated[tp, tyro.conf.arg(help=text, metavar=var)],
            dataclasses.field(default=None),
        )
        for name, tp, text, var in TRAIN_FLAGS
    ]
    cls = dataclasses.make_dataclass(kind.config.__name__, fields, bases=(kind.config,))
    cls.__doc__ = kind.config.__doc__
    return cls


def as_run_config(kind: Any, command: Any) -> Any:
    """``command`` (a :func:`train_type`) as the kind's own config."""
    return kind.config(
        **{f.name: getattr(command, f.name) for f in dataclasses.fields(kind.config)}
    )


def evaluate_type() -> type:
    """:class:`Evaluate` with the options the run kinds declare
    (:func:`pyrolvm.runs.registry.evaluate_options`: ``--eval-samples``...), each ``None``
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


def command_type() -> Any:
    """The type tyro parses ``pyrolvm ...`` into: a ``train`` subcommand per run kind, whose
    value is that kind's config, or :class:`Evaluate` (built at run time from
    :data:`pyrolvm.runs.RUNS`, so static type checkers see ``Any``)."""
    configs = tuple(
        Annotated[train_type(k), tyro.conf.subcommand(k.name, description=k.description)]
        for k in _kinds()
    )

    kinds = Union[configs]  # noqa: UP007 (a union of the registry's configs, built at run time)

    @dataclass
    class Train:
        """Train a model and write a run folder."""

        config: Annotated[kinds, tyro.conf.arg(name="")]
        """the kind of run"""

    return Union[  # noqa: UP007 (a union built from the registry)
        Annotated[Train, tyro.conf.subcommand("train")],
        Annotated[evaluate_type(), tyro.conf.subcommand("evaluate")],
        Annotated[Compare, tyro.conf.subcommand("compare")],
    ]


_CONFIG = (tyro.conf.OmitSubcommandPrefixes,)


def parse(argv: list[str] | None = None) -> Any:
    """Parse a ``pyrolvm`` command line: a run config (``train``) or :class:`Evaluate`.

    Raises:
        SystemExit: status 2 with tyro's message for a malformed command line; 0 after
            ``--help``.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv in (["--version"], ["-V"]):
        from . import __version__

        print(f"pyrolvm {__version__}")
        raise SystemExit(0)
    argv = taken_over(argv)
    if argv[:1] == ["train"]:
        try:
            argv, path = config_flag(argv)
            if path is not None:
                return with_config_file(argv, path)
        except PyroLVMError as exc:
            print(f"pyrolvm: error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
    command = tyro.cli(command_type(), args=argv, prog="pyrolvm", config=_CONFIG)
    return getattr(command, "config", command)


def with_config_file(argv: list[str], path: str) -> Any:
    """Parse ``train [KIND] FLAGS`` (``argv`` without its ``--config``) with the settings of
    the file ``path`` as the defaults of the flags (tyro's ``default=``): the file validated
    by the kind's declaration, the flags overriding it; KIND, when not given, from the file.

    Raises:
        ConfigError: see :func:`pyrolvm.runs.load_config`.
    """
    named = argv[1] if len(argv) > 1 and argv[1] in RUNS else None
    kind = kind_of_file(read_config_file(path), path, named)
    config = load_config(path, kind.name)
    cls = train_type(kind)
    default = cls(**dataclasses.asdict(config), config=path)
    flags = argv[2:] if named else argv[1:]
    prog = f"pyrolvm train {kind.name}"
    return tyro.cli(cls, args=flags, default=default, prog=prog, config=_CONFIG)


def taken_over(argv: list[str]) -> list[str]:
    """``argv`` with ``train OLD ... --SETTING VALUE`` as ``train NEW ...`` where the kind NEW
    took over those runs of OLD (:attr:`~pyrolvm.runs.RunKind.takes_over`: ``pyrolvm train vae
    --latent bernoulli`` is ``pyrolvm train sbn --latent bernoulli``)."""
    if len(argv) < 2 or argv[0] != "train":
        return argv
    for kind in RUNS.values():
        for old, setting, values in kind.takes_over:
            flag = "--" + setting.replace("_", "-")
            given = [b for a, b in zip(argv, argv[1:], strict=False) if a == flag]
            given += [a.split("=", 1)[1] for a in argv if a.startswith(flag + "=")]
            if argv[1] == old and given and given[-1] in values:
                return ["train", kind.name, *argv[2:]]
    return argv


def parser() -> Any:
    """The argument parser of the ``pyrolvm`` command (for documentation): an
    ``argparse.ArgumentParser`` of tyro's own argparse."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return tyro.extras.get_parser(command_type(), prog="pyrolvm", config=_CONFIG)


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
    kind = next(k for k in RUNS.values() if isinstance(command, k.config))
    config = as_run_config(kind, command)
    if getattr(command, "seeds", None):
        runs = train_seeds(kind.name, command.seeds, config)
        summaries = [
            kind.summary(m, config, os.path.join(config.out, f"seed-{s}")) for s, m in runs.items()
        ]
        table = compare_runs([config.out]).table()
        return "\n\n".join(
            [
                *summaries,
                table,
                f"files: pyrolvm compare {config.out} --out DIR ({', '.join(FILES)})",
            ]
        )
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
