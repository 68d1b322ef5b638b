"""The reproducibility table of ``docs/reproducing.md``, generated from the results files.

    python -m benchmarks.reproduce.table            # print the table (markdown)
    python -m benchmarks.reproduce.table --page docs/reproducing.md   # rewrite it in place

The table goes between the lines ``<!-- reproduce:begin -->`` and ``<!-- reproduce:end -->``.
An entry without a results file is listed as not run, with its command at the full budget.
"""

import argparse
import json
import math
import os
import sys

from .entries import ENTRIES, TutorialEntry
from .runner import RESULTS, command, config, curve_path, result_path

BEGIN, END = "<!-- reproduce:begin -->", "<!-- reproduce:end -->"
#: Where the page links the learning-curve figures (relative to ``docs/``).
FIGURES = "../benchmarks/reproduce/results"

__all__ = ["BEGIN", "END", "markdown", "rewrite_page"]


def _fmt(value, stderr=None):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    text = f"{value:.2f}" if abs(value) < 1000 else f"{value:.0f}"
    return text + (f" ± {stderr:.2f}" if stderr else "")


def _budget(r):
    if not r["epochs"]:
        return "full"
    epochs = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in r["epochs"].items())
    return f"{r['budget']:g} ({epochs})"


def _time(seconds):
    if seconds is None:
        return "—"
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def load_results(results=RESULTS):
    out = {}
    for name in ENTRIES:
        path = result_path(name, results)
        if os.path.exists(path):
            with open(path) as f:
                out[name] = json.load(f)
    return out


def markdown(results=RESULTS) -> str:
    """The table (markdown): one row per entry, then each row's command and what differs."""
    done = load_results(results)
    rows = [
        "| # | published figure (source) | metric | published | ours | budget (epochs) | device "
        "| train time | curve |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    commands, protocols = [], {}
    for i, (name, entry) in enumerate(ENTRIES.items(), 1):
        r = done.get(name)
        if r is None:
            if isinstance(entry, TutorialEntry):
                cmd = f"python {entry.tutorial}"
            else:
                cmd = command(entry, config(entry, 1.0, data_root="DIR"))
            rows.append(
                f"| {i} | {entry.source} | {entry.metric} | {_fmt(entry.published)} | not run "
                "| — | — | — | — |"
            )
        else:
            cmd = r["command"]
            also = r.get("also", {})
            ours = _fmt(r["ours"], r["stderr"])
            if "partial" in r:
                progress = r["partial"]
                ours += (
                    f" (unfinished: epoch {progress['epochs_done']} of "
                    f"{progress['epochs_planned']})"
                )
            if "test_accuracy_at_best_validation" in also:
                best = 100 * also["test_accuracy_at_best_validation"]
                ours += f" (at best validation: {best:.2f})"
            curve = "—"
            if r.get("curves") and os.path.exists(curve_path(name, results)):
                curve = f"[curve]({FIGURES}/{name}.png)"
            rows.append(
                f"| {i} | {r['source']} | {r['metric']} | {_fmt(r['published'])} | {ours} "
                f"| {_budget(r)} | {r['device']} | {_time(r['train_seconds'])} | {curve} |"
            )
        note = f" ({r['note']})" if r is not None and r.get("note") else ""
        commands.append(f"{i}. `{cmd}`{note}")
        key = (entry.protocol, entry.differs or "nothing")
        protocols.setdefault(key, []).append(str(i))
    lines = [*rows, "", "The commands (each resumable: rerun it after a stop):", "", *commands, ""]
    lines += ["The papers' protocols, and what of ours differs:", ""]
    for (protocol, differs), which in protocols.items():
        label = "rows" if len(which) > 1 else "row"
        lines.append(f"- {label} {', '.join(which)}: {protocol}. *Ours differs:* {differs}.")
    return "\n".join(lines) + "\n"


def rewrite_page(path, results=RESULTS):
    """Replace the text between :data:`BEGIN` and :data:`END` in ``path`` with the table.

    Raises:
        ValueError: the markers are missing.
    """
    with open(path) as f:
        text = f.read()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{path} has no {BEGIN} ... {END} block")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = head + BEGIN + "\n" + markdown(results) + END + tail
    with open(path + ".tmp", "w") as f:
        f.write(new)
    os.replace(path + ".tmp", path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--page", help="rewrite the table in this file (docs/reproducing.md)")
    parser.add_argument("--results", default=RESULTS)
    args = parser.parse_args(argv)
    if args.page:
        rewrite_page(args.page, args.results)
    else:
        sys.stdout.write(markdown(args.results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
