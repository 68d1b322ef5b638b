"""`--compile` on every run kind: a tiny run of each kind through the CLI with the compiled
step (``graph``) gives the metrics of the eager run (``off``) exactly; the kinds whose
objective enumerates (m2, gmm, mixture-vae) fall back with one line saying why; a vae run
compiled by inductor trains and evaluates (and `pyrolvm evaluate --compile` takes it)."""

import logging
import os

import pytest

from pyrolvm.cli import main
from pyrolvm.inference.compiled import has_cpp_compiler
from pyrolvm.runs import RUNS
from pyrolvm.runs.common import read_json

#: A tiny run of each kind (digits).
KINDS = {
    "vae": ["--epochs", "2", "--eval-samples", "10", "--hidden", "16"],
    "sbn": ["--epochs", "1", "--eval-samples", "10", "--hidden", "16", "--elbo", "vimco"]
    + ["--num-particles", "2"],
    "m2": ["--labels", "50", "--epochs", "1", "--hidden", "16"],
    "gmm": ["--epochs", "3", "--sklearn-n-init", "1", "--pca-dim", "5", "--components", "3"],
    "mixture-vae": ["--warmup-epochs", "1", "--epochs", "1", "--hidden", "16", "--components", "3"],
    "mvae": ["--epochs", "1", "--hidden", "16", "--eval-samples", "10"],
    "cvae": ["--epochs", "1", "--baseline-epochs", "1", "--hidden", "16"],
    "vqvae": ["--epochs", "1", "--prior-epochs", "1", "--num-codes", "8", "--channels", "8"]
    + ["--prior-channels", "8", "--train-size", "200"],
    "made": ["--hidden", "16", "--num-masks", "2", "--epochs", "1", "--train-size", "200"],
    "pixelcnn": ["--channels", "4", "--num-layers", "2", "--kernel-size", "3", "--epochs", "1"]
    + ["--train-size", "200"],
}
#: The kinds whose main objective is TraceEnum_ELBO (enumeration): the eager step.
ENUMERATED = {"m2", "gmm", "mixture-vae"}
TIMES = ("seconds", "seconds_per_epoch", "sklearn_seconds", "figures")


def without_times(metrics):
    if isinstance(metrics, dict):
        return {k: without_times(v) for k, v in metrics.items() if k not in TIMES}
    if isinstance(metrics, list):
        return [without_times(v) for v in metrics]
    return metrics


def run(kind, mode, out):
    argv = ["train", kind, *KINDS[kind], "--out", out, "--no-progress", "--compile", mode]
    assert main(argv) == 0
    return read_json(os.path.join(out, "metrics.json"))


def test_every_kind_is_covered():
    assert set(KINDS) == set(RUNS)


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_compiled_run_of_every_kind_equals_the_eager_run(kind, tmp_path, caplog):
    eager = run(kind, "off", str(tmp_path / "off"))
    with caplog.at_level(logging.WARNING, logger="pyrolvm.compile"):
        graph = run(kind, "graph", str(tmp_path / "graph"))
    assert read_json(str(tmp_path / "graph" / "config.json"))["compile"] == "graph"
    assert without_times(graph) == without_times(eager)
    lines = [r.getMessage() for r in caplog.records if r.name == "pyrolvm.compile"]
    if kind in ENUMERATED:
        assert lines and all("enumeration (TraceEnum_ELBO)" in line for line in lines)
    else:
        assert not lines, lines


@pytest.mark.skipif(not has_cpp_compiler(), reason="inductor on the CPU needs a C++ compiler")
def test_a_vae_run_compiled_by_inductor_resumes_with_another_mode_and_evaluates(
    tmp_path, caplog, monkeypatch
):
    from helpers import KillAt

    from pyrolvm.runs import common

    out = str(tmp_path / "run")
    argv = ["train", "vae", "--epochs", "2", "--eval-samples", "10", "--hidden", "16"]
    argv += ["--out", out, "--no-progress"]
    monkeypatch.setattr(common, "load", lambda *a, **k: KillAt(20))  # SIGINT in epoch 2
    with caplog.at_level(logging.WARNING, logger="pyrolvm.compile"):
        assert main([*argv, "--compile", "inductor"]) == 130
        monkeypatch.undo()
        # --compile may differ on resume (the state is the same whatever the mode)
        assert main([*argv, "--compile", "graph", "--resume"]) == 0
        metrics = read_json(os.path.join(out, "metrics.json"))
        assert metrics["epochs"] == 2 and metrics["train_elbo"] > -40
        assert main(["evaluate", out, "--no-progress", "--compile", "inductor"]) == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "pyrolvm.compile"]
    assert not lines, lines
