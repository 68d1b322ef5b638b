"""The Burda et al. (2016) Table 1 script: rows as run folders, read back when finished, the
paper's protocol in the configs."""

import dataclasses
import importlib.util
import json
import os

import pytest
from conftest import REPO

from benchmarks.reproduce.entries import ENTRIES, Entry


def read_json(*parts):
    with open(os.path.join(*parts)) as f:
        return json.load(f)


def load_script():
    path = os.path.join(REPO, "benchmarks", "reproduce_iwae_table1.py")
    spec = importlib.util.spec_from_file_location("reproduce_iwae_table1", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rows_follow_the_protocol_and_finished_rows_are_read_back(tmp_path, capsys):
    script = load_script()
    out = str(tmp_path / "table1")
    argv = [
        "--dataset",
        "digits",
        "--budget",
        "0.0003",
        "--rows",
        "vae-1",
        "iwae-5",
        "--eval-samples",
        "4",
        "--out",
        out,
        "--no-progress",
        "--device",
        "cpu",
    ]
    assert script.main(argv) == 0
    results = read_json(out, "results.json")
    assert [r["row"] for r in results] == ["vae-1", "iwae-5"]
    assert [r["published_nll"] for r in results] == [86.76, 85.54]
    config = read_json(out, "iwae-5", "config.json")
    assert (config["elbo"], config["num_particles"], config["batch_size"]) == ("iwae", 5, 20)
    assert (config["lr"], config["eps"], config["lr_schedule"]) == (1e-3, 1e-4, "burda")
    assert config["hidden"] == [200, 200] and config["latent_dim"] == 50
    assert results[0]["epochs"] == 1 and "--lr-schedule burda" in results[0]["command"]
    printed = capsys.readouterr().out
    assert "86.76" in printed and "85.54" in printed
    # a second call reads the finished rows back instead of training them again
    before = os.path.getmtime(os.path.join(out, "vae-1", "checkpoint.pt"))
    assert script.main(argv) == 0
    assert os.path.getmtime(os.path.join(out, "vae-1", "checkpoint.pt")) == before
    assert read_json(out, "results.json") == results


def test_budget_outside_zero_one_is_refused():
    with pytest.raises(SystemExit):
        load_script().main(["--budget", "2"])


# --- the reproducibility table (benchmarks/reproduce) ---------------------------------------
RUN_ENTRIES = [n for n, e in ENTRIES.items() if isinstance(e, Entry)]


@pytest.mark.parametrize("name", RUN_ENTRIES)
def test_every_entry_runs_at_a_tiny_budget_and_is_read_back(name, tmp_path, monkeypatch):
    # smoke: each entry's run at the smallest budget (1 epoch) on the digits with tiny
    # networks, so that none rots; its result file; a finished run is read back, not rerun
    from benchmarks.reproduce.runner import curve_path, result_path, run_entry
    from pyrolvm.runs import RUNS

    entry = ENTRIES[name]
    where = dict(dataset="digits", root=str(tmp_path / "runs"), device="cpu", progress=False)
    results = str(tmp_path / "results")
    r = run_entry(entry, 1e-9, results=results, smoke=True, **where)
    assert all(v == 1 for v in r["epochs"].values()) and set(r["epochs"]) == set(
        entry.epochs_fields
    )
    assert r["ours"] == r["ours"] and abs(r["ours"]) < 1e6  # a finite figure
    assert r["command"].startswith(f"pyrolvm train {entry.kind} --dataset digits")
    assert read_json(result_path(name, results)) == json.loads(json.dumps(r))
    # the run's per-epoch curves are in its result (one epoch of each phase) and plotted
    longest = sum(r["epochs"].values())
    assert r["curves"] and all(1 <= len(v) <= longest for v in r["curves"].values()), r["curves"]
    assert os.path.getsize(curve_path(name, results)) > 0

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run is trained again")

    monkeypatch.setitem(RUNS, entry.kind, dataclasses.replace(RUNS[entry.kind], train=no_training))
    again = run_entry(entry, 1e-9, results=results, smoke=True, **where)
    assert again["ours"] == r["ours"]


def test_partial_results_and_the_generated_table(tmp_path, monkeypatch):
    # an unfinished M2 run is recorded from its checkpoint's curves; the table lists every
    # entry, the run ones with their budget, the others as not run with their command
    from helpers import KillAt

    from benchmarks.reproduce import table
    from benchmarks.reproduce.runner import partial_result, run_entry, write_result
    from pyrolvm.errors import Interrupted
    from pyrolvm.runs import common

    entry = ENTRIES["m2-pyro-100"]
    where = dict(dataset="digits", root=str(tmp_path / "runs"), device="cpu", smoke=True)
    results = str(tmp_path / "results")
    # 2 epochs planned (0.04 x 50) of 17 minibatches (16 unlabelled, 1 labelled): a SIGINT
    # in the 25th stops the run in epoch 2, with epoch 1 in its checkpoint
    monkeypatch.setattr(common, "load", lambda *a, **k: KillAt(25))
    with pytest.raises(Interrupted):
        run_entry(entry, 0.04, results=results, progress=False, **where)
    monkeypatch.undo()
    r = partial_result(entry, 0.04, results=results, **where)
    assert r is not None and r["partial"] == {"epochs_done": 1, "epochs_planned": 2}
    assert partial_result(ENTRIES["vae-1"], 0.04, results=results, **where) is None
    assert len(r["curves"]["test_accuracy"]) == 1  # the curves so far
    # a finished row after the unfinished one is listed too
    write_result({k: v for k, v in r.items() if k != "partial"} | {"name": "vae-1"}, results)
    md = table.markdown(results)
    assert "(unfinished: epoch 1 of 2)" in md
    assert md.count("| not run |") == len(ENTRIES) - 2
    assert "[curve](../benchmarks/reproduce/results/m2-pyro-100.png)" in md
    page = tmp_path / "reproducing.md"
    page.write_text(f"intro\n{table.BEGIN}\nSTALE-TABLE\n{table.END}\nrest\n")
    table.rewrite_page(str(page), results)
    text = page.read_text()
    assert text.startswith("intro\n") and text.endswith("rest\n") and "STALE-TABLE" not in text
    assert "pyrolvm train vae --data-root DIR --dataset mnist" in text


def test_an_override_is_in_the_folder_and_the_command():
    # a run with fewer importance samples than the paper's is another folder (never read back
    # as the paper's protocol) and says so in its command
    from benchmarks.reproduce.runner import command, config

    entry = ENTRIES["vampprior"]
    cfg = config(entry, 0.005, data_root="DIR", overrides={"eval_samples": 500})
    assert cfg.eval_samples == 500 and cfg.epochs == 10
    assert cfg.out.endswith("vampprior-budget0.005-eval-samples500")
    assert "--eval-samples 500 --epochs 10" in command(entry, cfg, {"eval_samples": 500})
    assert config(entry, 1.0).out.endswith(os.path.join("runs", "vampprior"))


def test_the_docs_table_is_generated_from_the_committed_results():
    # docs/reproducing.md's reproducibility table is exactly what the generator writes from
    # benchmarks/reproduce/results/: regenerate it (python -m benchmarks.reproduce.table
    # --page docs/reproducing.md) after a run
    from benchmarks.reproduce import table

    with open(os.path.join(REPO, "docs", "reproducing.md")) as f:
        text = f.read()
    inside = text.split(table.BEGIN, 1)[1].split(table.END, 1)[0]
    assert inside == "\n" + table.markdown()
