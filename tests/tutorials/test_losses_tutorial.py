"""The losses-and-collapse tutorial runs end to end in fast mode and writes its table and
figure."""

import os

from helpers import run_tutorial_fast

from pyrolvm.runs.common import read_json


def test_tutorial_fast_mode(tmp_path):
    proc = run_tutorial_fast("losses_and_collapse.py", tmp_path)
    assert os.path.getsize(tmp_path / "rate_distortion.png") > 1000
    results = read_json(tmp_path / "losses_and_collapse.json")
    assert len(results["part1"]) == 6 and len(results["part2"]) == 5
    for row in list(results["part1"].values()) + list(results["part2"].values()):
        assert 0 < row["test_nll"] < 64 * 0.6932
        assert row["rate"] + row["distortion"] > 0
    assert "amortization_gap_stderr" in results["part1"]["β = 1 (ELBO)"]
    assert "| objective | test NLL |" in proc.stdout
