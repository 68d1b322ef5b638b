"""``pyrolvm compare RUN_FOLDER...``: runs of one kind side by side.

:func:`compare_runs` reads the run folders (``config.json``, ``metrics.json`` and, where the
kind saves them, the per-datapoint test log-likelihoods ``test_log_likelihood.pt``) and
returns a :class:`Comparison`: the settings that differ, the metrics of each run, the paired
differences of the test NLL between runs that scored the same test points, and, for a sweep
folder (``pyrolvm train ... --seeds 0,1,2``: ``OUT/seed-N``), the mean and standard deviation
across its runs. :meth:`Comparison.write` writes ``comparison.csv``, ``comparison.json``,
``curves.png`` (the learning curves, one axis per bound) and ``test_nll.png`` (the test NLL
with its error bars).

**Paired differences.** For runs a and b that scored the same N test points (the same data,
binarization draw and masks: the fingerprint saved beside the log-likelihoods), the
difference of their test NLLs is the mean of ``nll_a,n - nll_b,n`` over the points, with
standard error ``sd / sqrt(N)`` of those N differences: the variation between test points,
which both runs share, cancels, so the paired error is far smaller than either run's own.
"""

from __future__ import annotations

import csv
import glob
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any

import torch

from .errors import ConfigError
from .folders import CHECKPOINT, POINTWISE, load_checkpoint, read_json, write_json
from .inference import is_elbo, mean_and_stderr, trained_bound

#: Settings that say where and how a run ran, not what it computed: never "settings that
#: differ".
BOOKKEEPING = ("out", "progress", "data_root", "resume", "overwrite", "tensorboard", "kind")
#: The metrics the printed table shows first, with their column titles (a kind reports
#: those it has).
HEADLINE = {
    "test_nll": "test NLL",
    "test_elbo": "test ELBO",
    "test_ess": "ESS",
    "rate": "rate",
    "distortion": "distortion",
    "active_units": "active units",
    "seconds_per_epoch": "s/epoch",
}
#: The files :meth:`Comparison.write` writes.
FILES = ("comparison.csv", "comparison.json", "curves.png", "test_nll.png")


@dataclass
class RunRecord:
    """One run folder as :func:`compare_runs` reads it.

    Attributes:
        folder (str): the folder; ``group`` the sweep folder it belongs to (or ``None``).
        kind (str): the run kind; ``config`` its settings (``config.json``).
        metrics (dict): its ``metrics.json`` (empty for a run that never wrote one).
        status (str): ``"ok"``, ``"interrupted"``, ``"diverged"`` or ``"unfinished"`` (no
            ``metrics.json``: stopped by a kill, or still running).
    """

    folder: str
    kind: str
    config: dict
    metrics: dict
    status: str
    group: str | None = None

    @property
    def complete(self) -> bool:
        """Whether the run finished (its test figures are final)."""
        return self.status == "ok"

    def scalars(self) -> dict[str, float]:
        """The numeric figures of ``metrics.json`` (top level, booleans excluded)."""
        return {
            k: v
            for k, v in self.metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "complete"
        }

    def bound(self) -> str:
        """The name of the training bound of its ``train_elbo`` (``ELBO``, ``IWAE-5 bound``)."""
        curves = self.metrics.get("curves") or {}
        return self.metrics.get("bound_name") or trained_bound(curves)


@dataclass
class Comparison:
    """What :func:`compare_runs` returns.

    Attributes:
        kind (str), dataset (str): of every run.
        runs (list of RunRecord): in the table's order.
        settings (list of str): the settings whose values differ between the runs.
        metrics (list of str): every scalar figure some run reports, in first-seen order.
        paired (list of dict): per pair of complete runs that scored the same test points,
            ``{"a", "b", "metric": "test_nll", "difference", "stderr", "points"}``: the mean
            over the points of ``nll_a - nll_b`` (nats) and its standard error ``sd /
            sqrt(N)``.
        reference (dict): per run folder, its paired difference to the first run of the
            table that scored the same points (``{"reference", "difference", "stderr"}``).
        groups (list of dict): per sweep folder, ``{"folder", "runs", "mean", "sd"}``: the
            number of its complete runs and the mean and standard deviation (``n - 1``) of
            each figure across them.
        files (list of str): the files :meth:`write` wrote.
    """

    kind: str
    dataset: str
    runs: list[RunRecord]
    settings: list[str]
    metrics: list[str]
    paired: list[dict] = field(default_factory=list)
    reference: dict[str, dict] = field(default_factory=dict)
    groups: list[dict] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def columns(self) -> list[str]:
        """The metrics the printed table shows: ``HEADLINE``'s that some run reports
        (for a kind without ``test_nll``, first every figure reported with a standard error)."""
        shown = [k for k in HEADLINE if k in self.metrics]
        if "test_nll" not in shown:
            errors = [k for k in self.metrics if f"{k}_stderr" in self.metrics]
            shown = [k for k in errors if k not in shown] + shown
        return shown

    def nll_key(self) -> str | None:
        """The figure the NLL plot shows: ``test_nll``, else the first with a standard error."""
        if "test_nll" in self.metrics:
            return "test_nll"
        return next((k for k in self.metrics if f"{k}_stderr" in self.metrics), None)

    def table(self) -> str:
        """The comparison as text: the runs' table (and the sweeps' means), with notes."""
        columns = self.columns()
        head = ["run", *self.settings]
        unfinished = any(not r.complete for r in self.runs)
        head += ["status"] if unfinished else []
        head += ["train bound"] if any("train_elbo" in r.metrics for r in self.runs) else []
        head += [HEADLINE.get(k, k) for k in columns]
        paired = bool(self.reference)
        head += ["Δ test NLL (paired)"] if paired else []
        rows = []
        for r in self.runs:
            row = [r.folder + ("" if r.complete else " *")]
            row += [_text(r.config.get(s)) for s in self.settings]
            row += [r.status] if unfinished else []
            if "train bound" in head:
                value = r.metrics.get("train_elbo")
                row.append("" if value is None else f"{value:.2f} {r.bound()}")
            row += [_figure(r.metrics, k) for k in columns]
            if paired:
                ref = self.reference.get(r.folder)
                if ref is None:
                    row.append("")
                elif ref["reference"] == r.folder:
                    row.append("reference")
                else:
                    row.append(f"{ref['difference']:+.3f} ± {ref['stderr']:.3f}")
            rows.append(row)
        title = f"{len(self.runs)} {self.kind} runs on {self.dataset}"
        if self.settings:
            title += f"; settings that differ: {', '.join(self.settings)}"
        out = [title, "", _grid(head, rows)]
        notes = []
        if unfinished:
            notes.append("* unfinished: its figures are those of the epochs it ran, or none")
        if paired:
            notes.append(
                "Δ test NLL (paired): the run's test NLL minus its reference's on the same test "
                "points (mean of the per-point differences ± sd / sqrt(N))"
            )
        if any("_stderr" in k for k in self.metrics):
            notes.append("a ± b: the figure and its standard error over the test points")
        if self.groups:
            gcols = [k for k in columns if k != "seconds_per_epoch"] + ["seconds_per_epoch"]
            gcols = [k for k in dict.fromkeys(gcols) if k in self.metrics]
            ghead = ["sweep", "runs", *[HEADLINE.get(k, k) for k in gcols]]
            grows = [
                [g["folder"], str(g["runs"])]
                + [_spread(g["mean"].get(k), g["sd"].get(k)) for k in gcols]
                for g in self.groups
            ]
            out += ["", "across the runs of each sweep: mean ± s.d.", _grid(ghead, grows)]
        return "\n".join(out + ([""] + notes if notes else []))

    def records(self) -> list[dict]:
        """The CSV rows: one per run (folder, group, status, the settings that differ, every
        scalar figure, the paired difference to its reference), then per sweep a mean and an
        s.d. row."""
        out = []
        for r in self.runs:
            row: dict[str, Any] = {"folder": r.folder, "group": r.group or "", "status": r.status}
            row |= {s: _text(r.config.get(s)) for s in self.settings}
            row["bound_name"] = r.bound() if "train_elbo" in r.metrics else ""
            row |= {k: r.metrics.get(k, "") for k in self.metrics}
            ref = self.reference.get(r.folder) or {}
            row["paired_reference"] = ref.get("reference", "")
            row["test_nll_minus_reference"] = ref.get("difference", "")
            row["test_nll_minus_reference_stderr"] = ref.get("stderr", "")
            out.append(row)
        for g in self.groups:
            for stat in ("mean", "sd"):
                row = {
                    "folder": g["folder"],
                    "group": g["folder"],
                    "status": f"{stat} of {g['runs']}",
                }
                out.append(row | {k: g[stat].get(k, "") for k in self.metrics})
        return out

    def to_dict(self) -> dict:
        """The comparison as ``comparison.json`` holds it."""
        return {
            "kind": self.kind,
            "dataset": self.dataset,
            "settings_that_differ": self.settings,
            "runs": [
                {
                    "folder": r.folder,
                    "group": r.group,
                    "status": r.status,
                    "settings": r.config,
                    "bound_name": r.bound() if "train_elbo" in r.metrics else None,
                    "metrics": r.scalars(),
                }
                for r in self.runs
            ],
            "paired": self.paired,
            "groups": self.groups,
            "files": self.files,
        }

    def write(self, out: str) -> list[str]:
        """Write comparison.csv, comparison.json, curves.png and test_nll.png into the folder
        ``out`` (created; the files of an earlier comparison there replaced); returns their
        paths.

        Raises:
            ConfigError: ``out`` is a run folder, or cannot be written.
        """
        if os.path.exists(os.path.join(out, "config.json")) or os.path.exists(
            os.path.join(out, CHECKPOINT)
        ):
            raise ConfigError(f"{out!r} is a run folder: write the comparison elsewhere (--out)")
        try:
            os.makedirs(out, exist_ok=True)
            path = lambda name: os.path.join(out, name)  # noqa: E731
            rows = self.records()
            names = list(dict.fromkeys(k for row in rows for k in row))
            with open(path("comparison.csv"), "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=names, restval="")
                writer.writeheader()
                writer.writerows(rows)
            self.files = [path("comparison.csv"), path("comparison.json")]
            self.files += curves_figure(self, path("curves.png"))
            self.files += nll_figure(self, path("test_nll.png"))
            write_json(path("comparison.json"), self.to_dict())
        except OSError as exc:
            raise ConfigError(f"cannot write the comparison to {out!r}: {exc.strerror}") from None
        return self.files


def compare_runs(folders: list[str] | str, sort: str | None = None, out: str | None = None):
    """Compare run folders of one kind on one data set: ``pyrolvm compare`` in one call.

    Args:
        folders (list of str): run folders, glob patterns (``"runs/*"``) or sweep folders
            (whose subfolders are runs, as ``--seeds`` writes them), in the table's order.
        sort (str or None): a metric or setting to order the runs by (``"test_nll"``,
            ``"elbo"``); ``"-KEY"`` for descending; runs lacking it go last.
        out (str or None): write the comparison's files there (:meth:`Comparison.write`).

    Returns:
        Comparison: ``print(comparison.table())`` prints what the command prints.

    Raises:
        ConfigError: a pattern that matches nothing, a folder that holds no run, runs of
            different kinds or data sets, an unknown ``sort`` key.
    """
    runs = read_runs([folders] if isinstance(folders, str) else list(folders))
    kinds = {}
    for r in runs:
        kinds.setdefault(r.kind, r.folder)
    if len(kinds) > 1:
        which = ", ".join(f"{f} is a {k} run" for k, f in kinds.items())
        raise ConfigError(
            f"runs of different kinds cannot be compared ({which}): give runs of one kind"
        )
    data = {}
    for r in runs:
        data.setdefault((r.config.get("dataset"), r.config.get("data_dim")), r.folder)
    if len(data) > 1:
        which = ", ".join(f"{f} on {d} ({dim} dimensions)" for (d, dim), f in data.items())
        raise ConfigError(
            f"runs on different data cannot be compared ({which}): give runs on one data set"
        )
    keys = list(dict.fromkeys(k for r in runs for k in r.config))
    settings = [
        k for k in keys if k not in BOOKKEEPING and len({_text(r.config.get(k)) for r in runs}) > 1
    ]
    metrics = list(dict.fromkeys(k for r in runs for k in r.scalars()))
    if sort:
        runs = sorted_runs(runs, sort, metrics + keys)
    comparison = Comparison(
        runs[0].kind, str(runs[0].config.get("dataset")), runs, settings, metrics
    )
    comparison.paired, comparison.reference = paired_differences(runs)
    comparison.groups = group_spreads(runs, metrics)
    if out is not None:
        comparison.write(out)
    return comparison


def read_runs(patterns: list[str]) -> list[RunRecord]:
    """The runs named by ``patterns`` (folders, glob patterns, sweep folders), each once; a
    glob pattern's matches that hold no run (a comparison's folder, a file) are passed over.

    Raises:
        ConfigError: no pattern, a pattern that matches no run, a folder that holds none.
    """
    if not patterns:
        raise ConfigError("give the run folders to compare (e.g. pyrolvm compare runs/*)")
    members: list[tuple[str, str | None]] = []
    for pattern in patterns:
        if not glob.has_magic(pattern):
            if not os.path.isdir(pattern):
                raise ConfigError(
                    f"no run folder {pattern!r}: give folders written by pyrolvm train"
                )
            members += [(pattern, None)] if _is_run(pattern) else _sweep(pattern)
            continue
        found = []
        for match in sorted(glob.glob(pattern), key=_natural):
            if _is_run(match):
                found.append((match, None))
            elif os.path.isdir(match) and any(_is_run(e.path) for e in os.scandir(match)):
                found += _sweep(match)
        if not found:
            raise ConfigError(f"no run folder matches {pattern!r}")
        members += found
    runs, seen = [], set()
    for path, group in members:
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            runs.append(read_run(path, group))
    return runs


def _is_run(folder: str) -> bool:
    return any(os.path.exists(os.path.join(folder, f)) for f in ("config.json", CHECKPOINT))


def _sweep(folder: str) -> list[tuple[str, str]]:
    """The runs in the subfolders of ``folder`` (a sweep), in natural order (seed-2 before
    seed-10).

    Raises:
        ConfigError: ``folder`` holds no run.
    """
    subs = sorted((e.path for e in os.scandir(folder) if e.is_dir()), key=_natural)
    runs = [(s, folder.rstrip("/")) for s in subs if _is_run(s)]
    if not runs:
        raise ConfigError(
            f"{folder!r} holds no run (no config.json in it or its subfolders): give run "
            "folders written by `pyrolvm train` or sweep folders of `--seeds`"
        )
    return runs


def _natural(path: str) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path)]


def read_run(folder: str, group: str | None = None) -> RunRecord:
    """The run in ``folder``: its settings, kind, metrics and status.

    Raises:
        ConfigError: ``config.json`` or ``metrics.json`` is not JSON of a run.
    """
    path = os.path.join(folder, "config.json")
    config = _json(path) if os.path.exists(path) else None
    kind = (config or {}).get("kind")
    if config is None or kind is None:  # (a run of a version that did not write its kind)
        state = load_checkpoint(folder)
        config, kind = config or dict(state["config"]), state["kind"]
    path = os.path.join(folder, "metrics.json")
    metrics = _json(path) if os.path.exists(path) else {}
    status = str(metrics.get("status", "ok")) if metrics else "unfinished"
    if metrics and metrics.get("complete") is False and status == "ok":
        status = "unfinished"
    return RunRecord(folder.rstrip("/"), str(kind), dict(config), metrics, status, group)


def _json(path: str) -> dict:
    try:
        value = read_json(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path!r} is not readable JSON ({exc}): is it a run folder?") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{path!r} does not hold a run's settings or metrics (not a JSON object)")
    return value


def sorted_runs(runs: list[RunRecord], key: str, known: list[str]) -> list[RunRecord]:
    """``runs`` ordered by the metric or setting ``key`` (``-key``: descending), the runs
    lacking it last, ties in their given order.

    Raises:
        ConfigError: ``key`` is neither a metric nor a setting of these runs.
    """
    name, descending = key.removeprefix("-"), key.startswith("-")
    if name not in known:
        figures = [k for k in HEADLINE if k in known] or [k for k in known if "_" in k][:8]
        raise ConfigError(
            f"--sort {key}: no run has a figure or setting {name!r}; sort by a figure "
            f"({', '.join(figures)}, ...) or a setting (elbo, seed, ...), -KEY for descending"
        )

    def value(r: RunRecord):
        v = r.metrics.get(name, r.config.get(name))
        return v if isinstance(v, (int, float)) and not isinstance(v, bool) else _text(v)

    have = [r for r in runs if value(r) not in ("", None)]
    numeric = all(isinstance(value(r), (int, float)) for r in have)
    order = sorted(have, key=lambda r: value(r) if numeric else str(value(r)), reverse=descending)
    return order + [r for r in runs if r not in have]


def pointwise(run: RunRecord) -> dict | None:
    """The run's saved per-datapoint test log-likelihoods (``torch.load(weights_only=True)``),
    or ``None`` where it has none or is unfinished."""
    path = os.path.join(run.folder, POINTWISE)
    if not run.complete or not os.path.exists(path):
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a truncated or foreign file: no paired difference for this run
        return None
    ok = isinstance(saved, dict) and isinstance(saved.get("log_likelihood"), torch.Tensor)
    return saved if ok and "test_set" in saved else None


def paired_differences(runs: list[RunRecord]) -> tuple[list[dict], dict[str, dict]]:
    """(every pair's paired difference of the test NLL, each run's to its reference): see
    :class:`Comparison`. Runs pair when they scored the same test points."""
    saved = {r.folder: p for r in runs if (p := pointwise(r)) is not None}
    by_set: dict[str, list[str]] = {}
    for folder, p in saved.items():
        by_set.setdefault(p["test_set"], []).append(folder)
    pairs, reference = [], {}
    for folders in by_set.values():
        if len(folders) < 2:
            continue
        for i, a in enumerate(folders):
            for b in folders[i + 1 :]:
                pairs.append(paired(a, b, saved[a]["log_likelihood"], saved[b]["log_likelihood"]))
        reference[folders[0]] = {"reference": folders[0], "difference": 0.0, "stderr": 0.0}
        for b in folders[1:]:
            diff = paired(
                b, folders[0], saved[b]["log_likelihood"], saved[folders[0]]["log_likelihood"]
            )
            reference[b] = {
                "reference": folders[0],
                "difference": diff["difference"],
                "stderr": diff["stderr"],
            }
    return pairs, reference


def paired(a: str, b: str, ll_a: torch.Tensor, ll_b: torch.Tensor) -> dict:
    """The paired difference of the test NLL of runs ``a`` and ``b`` from their per-datapoint
    log-likelihoods (shape (N,)): mean of ``(-ll_a) - (-ll_b)`` and ``sd / sqrt(N)``."""
    mean, stderr = mean_and_stderr(ll_b.double() - ll_a.double())
    return {
        "a": a,
        "b": b,
        "metric": "test_nll",
        "difference": mean,
        "stderr": stderr,
        "points": len(ll_a),
    }


def group_spreads(runs: list[RunRecord], metrics: list[str]) -> list[dict]:
    """Per sweep folder, the mean and s.d. (``n - 1``) of each figure over its complete runs."""
    groups: dict[str, list[RunRecord]] = {}
    for r in runs:
        if r.group is not None and r.complete:
            groups.setdefault(r.group, []).append(r)
    out = []
    for folder, members in groups.items():
        mean, sd = {}, {}
        for k in metrics:
            values = [float(r.metrics[k]) for r in members if _number(r.metrics.get(k))]
            if values:
                mean[k] = sum(values) / len(values)
                n = len(values)
                sd[k] = (
                    math.sqrt(sum((v - mean[k]) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
                )
        out.append({"folder": folder, "runs": len(members), "mean": mean, "sd": sd})
    return out


def curves_figure(comparison: Comparison, path: str) -> list[str]:
    """``curves.png``: the runs' learning curves, one axis per quantity: the test ELBO
    (K = 1) of every run that records it, then the training bound per bound name (runs
    trained under the ELBO on one axis, under the IWAE-5 bound on another: never two
    different bounds on one axis), then the other per-epoch curves every run records. Returns
    ``[path]``, or ``[]`` when no run has curves."""
    from . import plots

    curves = {r.folder: r.metrics.get("curves") or {} for r in comparison.runs}
    panels = []
    test_elbo = {f: c["test_elbo"] for f, c in curves.items() if c.get("test_elbo")}
    if test_elbo:
        panels.append(("test ELBO (K = 1)", "ELBO per datapoint (nats)", test_elbo))
    by_bound: dict[str, dict] = {}
    for r in comparison.runs:
        if curves[r.folder].get("train_elbo"):
            by_bound.setdefault(r.bound(), {})[r.folder] = curves[r.folder]["train_elbo"]
    for bound, series in by_bound.items():
        what = "ELBO" if is_elbo(bound) else bound
        panels.append((f"training objective: {what}", f"train {what} per datapoint (nats)", series))
    skip = {"train_elbo", "test_elbo", "bound_name", "seconds", "test_bound", "train_loss"}
    shared = [
        k
        for k in dict.fromkeys(k for c in curves.values() for k in c)
        if k not in skip and all(_numbers(c.get(k)) for c in curves.values())
    ]
    panels += [
        (k.replace("_", " "), k.replace("_", " "), {f: c[k] for f, c in curves.items()})
        for k in shared[:3]
    ]
    if not panels:
        return []
    plots.curve_panels(path, panels, f"{comparison.kind} runs on {comparison.dataset}")
    return [path]


def nll_figure(comparison: Comparison, path: str) -> list[str]:
    """``test_nll.png``: each complete run's test NLL (or the kind's first figure with a
    standard error) with ± 1 standard error bars, each sweep's mean with ± 1 s.d.; beside it,
    where runs pair, the paired differences to the reference with ± 1 paired standard error.
    Returns ``[path]``, or ``[]`` when no run has the figure."""
    import matplotlib.pyplot as plt

    key = comparison.nll_key()
    if key is None:
        return []
    rows = [
        (r.folder, r.metrics[key], r.metrics.get(f"{key}_stderr") or 0.0)
        for r in comparison.runs
        if r.complete and _number(r.metrics.get(key))
    ]
    rows += [
        (f"{g['folder']} (mean ± s.d. of {g['runs']})", g["mean"][key], g["sd"].get(key, 0.0))
        for g in comparison.groups
        if key in g["mean"]
    ]
    if not rows:
        return []
    deltas = [
        (f"{f} − {d['reference']}", d["difference"], d["stderr"])
        for f, d in comparison.reference.items()
        if f != d["reference"]
    ]
    panels = [(f"{HEADLINE.get(key, key)} (nats) ± 1 s.e.", rows)]
    if deltas:
        panels.append(("paired difference of the test NLL (nats) ± 1 paired s.e.", deltas))
    height = 1.2 + 0.35 * max(len(p[1]) for p in panels)
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), height), squeeze=False)
    for ax, (title, values) in zip(axes[0], panels, strict=True):
        labels, means, errors = zip(*values, strict=True)
        y = list(range(len(values)))[::-1]
        ax.errorbar(means, y, xerr=errors, fmt="o", capsize=3)
        ax.set_yticks(y, labels, fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3, axis="x")
        if title.startswith("paired"):
            ax.axvline(0.0, color="grey", lw=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [path]


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _numbers(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(x is None or _number(x) for x in v)


def _text(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return ",".join(map(str, v))
    return "" if v is None else str(v)


def _figure(metrics: dict, key: str) -> str:
    v = metrics.get(key)
    if not _number(v):
        return ""
    se = metrics.get(f"{key}_stderr")
    text = str(v) if isinstance(v, int) else f"{v:.2f}"
    return f"{text} ± {se:.2f}" if _number(se) and se else text


def _spread(mean: float | None, sd: float | None) -> str:
    return "" if mean is None else f"{mean:.2f} ± {sd or 0.0:.2f}"


def _grid(head: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return "  ".join(f"{c:<{w}}" for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([line(head), "  ".join("-" * w for w in widths), *map(line, rows)])


__all__ = ["Comparison", "RunRecord", "compare_runs"]
