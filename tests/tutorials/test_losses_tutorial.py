"""The losses-and-collapse tutorial runs end to end in fast mode and writes its table and
figure."""

import os
import subprocess
import sys

from pyrolvm.runs.common import read_json

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_tutorial_fast_mode(tmp_path):
    env = dict(
        os.environ,
        PYROLVM_FAST="1",
        PYROLVM_FIGURES=str(tmp_path),
        PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "tutorials", "losses_and_collapse.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert os.path.getsize(tmp_path / "rate_distortion.png") > 1000
    results = read_json(tmp_path / "losses_and_collapse.json")
    assert len(results["part1"]) == 6 and len(results["part2"]) == 5
    for row in list(results["part1"].values()) + list(results["part2"].values()):
        assert 0 < row["test_nll"] < 64 * 0.6932
        assert row["rate"] + row["distortion"] > 0
    assert "amortization_gap_stderr" in results["part1"]["β = 1 (ELBO)"]
    assert "| objective | test NLL |" in proc.stdout
