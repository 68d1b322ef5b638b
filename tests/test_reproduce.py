"""The Burda et al. (2016) Table 1 script: rows as run folders, read back when finished, the
paper's protocol in the configs."""

import importlib.util
import json
import os

import pytest
from conftest import REPO


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
