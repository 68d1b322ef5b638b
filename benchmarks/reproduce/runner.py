"""Run one entry of the reproducibility table at a budget fraction, resumably, and write its
results file (JSON)."""

import dataclasses
import datetime
import json
import math
import os
import shlex
import time

from .entries import Entry, TutorialEntry

__all__ = [
    "RESULTS",
    "RUNS_ROOT",
    "command",
    "config",
    "curve_path",
    "epochs_at",
    "learning_curves",
    "partial_result",
    "result_path",
    "run_entry",
    "write_curve_figure",
    "write_result",
]

HERE = os.path.dirname(os.path.abspath(__file__))
#: The committed results files, one JSON per entry.
RESULTS = os.path.join(HERE, "results")
#: The run folders (not committed: checkpoints).
RUNS_ROOT = os.path.join("benchmarks", "reproduce", "runs")


def epochs_at(entry: Entry, budget: float) -> dict:
    """The budget fields of ``entry``'s config at fraction ``budget`` of the paper's."""
    return {
        k: max(1, round(share * budget * entry.full_epochs))
        for k, share in entry.epochs_fields.items()
    }


def folder_name(entry, budget, overrides=None):
    """``NAME``, ``NAME-budgetF`` below the full budget, then ``-FIELDVALUE`` per override."""
    name = entry.name if budget == 1 else f"{entry.name}-budget{budget:g}"
    return name + "".join(f"-{k.replace('_', '-')}{v}" for k, v in (overrides or {}).items())


def config(
    entry,
    budget,
    *,
    dataset="mnist",
    data_root=None,
    device="auto",
    seed=0,
    root=RUNS_ROOT,
    progress=True,
    smoke=False,
    overrides=None,
):
    """The run config of ``entry`` at ``budget`` (fraction of the paper's epochs)."""
    from pyrolvm.runs import RUNS

    kind = RUNS[entry.kind]
    fields = dict(entry.options)
    fields.update(epochs_at(entry, budget))
    if smoke:
        fields.update(entry.smoke)
    fields.update(overrides or {})
    return kind.config(
        dataset=dataset,
        data_root=data_root,
        device=device,
        seed=seed,
        progress=progress,
        out=os.path.join(root, folder_name(entry, budget, overrides)),
        **fields,
    )


def _value(v):
    if isinstance(v, (tuple, list)):
        return ",".join(str(x) for x in v)
    return str(v)


def command(entry, cfg, overrides=None) -> str:
    """The ``pyrolvm train KIND`` command line of ``cfg`` (the fields the entry sets, the
    budget, the data, the device, the seed and the folder)."""
    from pyrolvm.runs.config import flag

    names = ["dataset", *entry.options, *entry.epochs_fields]
    names += [k for k in overrides or () if k not in names]
    names += ["seed", "device", "out"]
    parts = [f"pyrolvm train {entry.kind}"]
    if cfg.data_root:
        parts.append("--data-root DIR")
    for name in dict.fromkeys(names):
        value = getattr(cfg, name)
        if isinstance(value, bool):
            parts.append(flag(name) if value else flag(name).replace("--", "--no-", 1))
        else:
            parts.append(f"{flag(name)} {shlex.quote(_value(value))}")
    return " ".join(parts)


def result_path(name, results=RESULTS):
    return os.path.join(results, f"{name}.json")


def _versions():
    import pyro
    import torch

    import pyrolvm

    return {"pyrolvm": pyrolvm.__version__, "torch": torch.__version__, "pyro": pyro.__version__}


def _result(entry, budget, cfg, ours, stderr, published, seconds, overrides=None):
    from pyrolvm.devices import resolve_device

    return {
        "name": entry.name,
        "source": entry.source,
        "protocol": entry.protocol,
        "differs": entry.differs,
        "metric": entry.metric,
        "lower_is_better": entry.lower_is_better,
        "published": published,
        "ours": ours,
        "stderr": stderr,
        "budget": budget,
        "epochs": epochs_at(entry, budget),
        "device": str(resolve_device(cfg.device)),
        "train_seconds": seconds,
        "command": command(entry, cfg, overrides),
        "run_folder": cfg.out,
        "date": datetime.date.today().isoformat(),
        "versions": _versions(),
    }


def _finished(folder):
    """The metrics of a finished run in ``folder``, else None."""
    path = os.path.join(folder, "metrics.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        metrics = json.load(f)
    return metrics if metrics.get("complete") else None


def run_entry(entry, budget=1.0, *, results=RESULTS, **options) -> dict:
    """Train ``entry`` at ``budget`` (or resume its interrupted run, or read back its finished
    one), then write and return its result.

    The run folder is ``RUNS_ROOT/NAME`` (``NAME-budgetF`` below the full budget): a finished
    run (metrics.json with ``complete``) is read back, an interrupted one resumed (its
    checkpoint), so the command can be stopped at any time and rerun.

    Returns:
        dict: ``name``, ``source``, ``protocol``, ``differs``, ``metric``, ``published``,
        ``ours``, ``stderr``, ``budget``, ``epochs`` (the budget fields), ``device``,
        ``train_seconds`` (sum of the epochs' wall times), ``command``, ``run_folder``,
        ``date``, ``versions``, ``curves`` (:func:`learning_curves`; plotted beside the
        result, :func:`curve_path`).

    Raises:
        pyrolvm.PyroLVMError: bad settings or data (as the run's ``pyrolvm train``).
        ValueError: ``budget`` outside (0, 1].
    """
    if isinstance(entry, TutorialEntry):
        return tutorial_result(entry, results=results)
    if not 0 < budget <= 1:
        raise ValueError(f"the budget is a fraction of the paper's epochs in (0, 1], got {budget}")
    from pyrolvm.runs import RUNS

    cfg = config(entry, budget, **options)
    metrics = _finished(cfg.out)
    t0 = time.perf_counter()
    if metrics is None:
        resume = os.path.exists(os.path.join(cfg.out, "checkpoint.pt"))
        metrics = RUNS[entry.kind].train(dataclasses.replace(cfg, resume=resume))
    ours, stderr = entry.read(metrics)
    published = entry.published
    if math.isnan(published) and "sklearn_test_log_likelihood" in metrics:
        published = metrics["sklearn_test_log_likelihood"]  # a reference computed in the run
    curves = metrics.get("curves", {})
    seconds = curves.get("seconds", []) if isinstance(curves, dict) else []
    seconds = sum(seconds) if seconds else time.perf_counter() - t0
    result = _result(entry, budget, cfg, ours, stderr, published, seconds, options.get("overrides"))
    if entry.read_curves is not None:
        curves = entry.read_curves(metrics)
    elif not (isinstance(curves, dict) and curves):  # (per-epoch lists at the top level)
        curves = metrics
    result["curves"] = learning_curves(curves)
    also = ("test_accuracy_at_best_validation", "best_validation_epoch")
    if any(k in metrics for k in also):
        result["also"] = {k: metrics[k] for k in also if k in metrics}
    write_result(result, results)
    return result


def partial_result(entry, budget=1.0, *, results=RESULTS, **options) -> dict | None:
    """Record the progress of ``entry``'s unfinished run at ``budget`` from its checkpoint,
    without training: the result has ``"partial": {"epochs_done", "epochs_planned"}`` and
    ``ours`` from the per-epoch curves (:attr:`Entry.read_partial`).

    Returns:
        dict or None: the result written, or None (nothing written) when the entry has no
        per-epoch figure, the run no checkpoint, or the run is finished.
    """
    import torch

    if isinstance(entry, TutorialEntry) or entry.read_partial is None:
        return None
    cfg = config(entry, budget, **options)
    path = os.path.join(cfg.out, "checkpoint.pt")
    if not os.path.exists(path) or _finished(cfg.out) is not None:
        return None
    history = torch.load(path, map_location="cpu", weights_only=True)["train"]["history"]
    if not history.get("seconds"):
        return None
    ours, stderr = entry.read_partial(history)
    seconds = sum(history["seconds"])
    result = _result(
        entry, budget, cfg, ours, stderr, entry.published, seconds, options.get("overrides")
    )
    result["partial"] = {
        "epochs_done": len(history["seconds"]),
        "epochs_planned": epochs_at(entry, budget)["epochs"],
    }
    result["curves"] = learning_curves(history)
    write_result(result, results)
    return result


def tutorial_result(entry: TutorialEntry, *, results=RESULTS) -> dict:
    """The result of a :class:`TutorialEntry`, read from the tutorial's committed JSON."""
    with open(entry.path) as f:
        value = json.load(f)
    for key in entry.keys:
        value = value[key]
    ours, stderr = entry.reduce(value)
    result = {
        "name": entry.name,
        "source": entry.source,
        "protocol": entry.protocol,
        "differs": entry.differs,
        "metric": entry.metric,
        "lower_is_better": entry.lower_is_better,
        "published": entry.published,
        "ours": ours,
        "stderr": stderr,
        "budget": 1.0,
        "epochs": {},
        "device": "cpu",
        "train_seconds": None,
        "command": f"python {entry.tutorial}",
        "run_folder": entry.path,
        "date": datetime.date.today().isoformat(),
        "versions": _versions(),
    }
    write_result(result, results)
    return result


def learning_curves(curves) -> dict[str, list[float]]:
    """The per-epoch curves of a run's metrics (``{name: [value per epoch]}``: the lists of
    numbers among ``curves``), kept in its result."""
    if not isinstance(curves, dict):
        return {}
    return {
        k: [float(v) for v in values]
        for k, values in curves.items()
        if isinstance(values, list)
        and values
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    }


def curve_path(name, results=RESULTS):
    """The learning-curve figure of entry ``name`` beside its result."""
    return os.path.join(results, f"{name}.png")


def write_curve_figure(result, results=RESULTS) -> str | None:
    """Plot a result's learning curves, one panel per curve against the epoch (the wall time
    per epoch left out), into :func:`curve_path`; None when it has none."""
    keys = [k for k in result.get("curves", {}) if k != "seconds"]
    if not keys:
        return None
    from pyrolvm.plots import plt  # (with matplotlib's non-interactive backend)

    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.8), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        values = result["curves"][key]
        ax.plot(range(1, len(values) + 1), values, marker="." if len(values) < 30 else None)
        ax.set_title(key.replace("_", " "), fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{result['name']}: budget {result['budget']:g}, {result['device']}", fontsize=10)
    fig.tight_layout()
    path = curve_path(result["name"], results)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_result(result, results=RESULTS):
    """Write ``result`` to :func:`result_path` (atomically) and its learning curves to
    :func:`curve_path`."""
    os.makedirs(results, exist_ok=True)
    path = result_path(result["name"], results)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)  # a stop mid-write leaves the old file whole
    write_curve_figure(result, results)
