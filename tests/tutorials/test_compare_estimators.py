"""The estimator-comparison tutorial runs end to end in fast mode and writes its figures."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_tutorial_fast_mode(tmp_path):
    env = dict(os.environ, PYROLVM_FAST="1", PYROLVM_FIGURES=str(tmp_path),
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tutorials", "compare_estimators.py")],
                          env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("estimators_curves.png", "snr_vs_k.png", "discrete.png", "naive_vs_is.png"):
        assert os.path.getsize(tmp_path / name) > 1000
    results = json.load(open(tmp_path / "compare_estimators.json"))
    assert len(results["continuous"]) == 9 and len(results["discrete"]) == 4
    for row in list(results["continuous"].values()) + list(results["discrete"].values()):
        # a trained 8x8 binary-digit model: a finite NLL between 0 and 64 log 2 nats
        assert 0 < row["test_nll"] < 64 * 0.6932
    assert set(results["snr"]["IWAE"]) == {"1", "5"}
    assert set(results["coin"]) == {"no baseline", "decaying avg baseline"}
