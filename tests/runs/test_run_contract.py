"""The contract every kind of run keeps, checked for each registered kind with its own tiny
settings (:attr:`pyrolvm.runs.RunKind.tiny`): a short run writes its folder (config.json,
metrics.json, checkpoint.pt and the figures it names); ``evaluate`` recomputes the test
figures of its metrics.json exactly; a run interrupted by SIGINT two thirds of the way
through its steps (in a later stage of a multi-stage kind) and resumed ends with metrics and
parts bitwise equal to the uninterrupted run's; a folder holding a run is refused without
``--overwrite`` and left as it was; a bad setting gets one line and exit status 2."""

import os
import pathlib
import signal

import pytest
import torch
from helpers import cli_error

from pyrolvm.errors import ConfigError, Interrupted
from pyrolvm.inference import training
from pyrolvm.runs import RUNS, evaluate_run
from pyrolvm.runs.common import load_checkpoint, read_json

TIMES = ("seconds", "seconds_per_epoch", "sklearn_seconds")


def without_times(obj):
    """``obj`` (nested dicts and lists) without its wall-clock times."""
    if isinstance(obj, dict):
        return {k: without_times(v) for k, v in obj.items() if k not in TIMES}
    return [without_times(v) for v in obj] if isinstance(obj, list) else obj


def same_tensors(a, b, path="parts"):
    """Nested dicts of tensors, equal bitwise."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
        return
    assert isinstance(a, dict) and a.keys() == b.keys(), path
    for key in a:
        same_tensors(a[key], b[key], f"{path}/{key}")


def shared_numbers(evaluated, metrics, path=""):
    """The (path, evaluated, trained) pairs of the numbers both dicts hold."""
    out = []
    for key, value in evaluated.items():
        if isinstance(value, dict) and isinstance(metrics.get(key), dict):
            out += shared_numbers(value, metrics[key], f"{path}{key}/")
        elif isinstance(value, (int, float)) and key in metrics:
            out.append((path + key, value, metrics[key]))
    return out


class Steps:
    """A stand-in for the training loop's progress bar that counts the SVI steps of the
    process and sends it SIGINT after step ``stop_at`` (the loop then stops after the next
    step, with a checkpoint)."""

    count, stop_at = 0, None

    def __init__(self, *args, **kwargs):
        pass

    def update(self, n=1):
        Steps.count += n
        if Steps.count == Steps.stop_at:
            os.kill(os.getpid(), signal.SIGINT)

    def set_postfix_str(self, *args, **kwargs):
        pass

    def close(self):
        pass


@pytest.fixture
def steps(monkeypatch):
    monkeypatch.setattr(training, "tqdm", Steps)
    Steps.count, Steps.stop_at = 0, None
    return Steps


def snapshot(folder):
    return {p.name: p.read_bytes() for p in pathlib.Path(folder).iterdir() if p.name != ".lock"}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_the_run_contract(name, tmp_path, steps, capsys):
    kind = RUNS[name]
    assert kind.tiny, f"{name}: declare the settings of a run of seconds as RunKind(tiny=...)"
    settings = dict(kind.tiny, progress=False)
    full = str(tmp_path / "full")
    metrics = kind.train(out=full, **settings)
    total = steps.count
    assert metrics["status"] == "ok" and metrics["complete"] is True
    written = set(os.listdir(full))
    assert {"config.json", "metrics.json", "checkpoint.pt", *metrics.get("figures", [])} <= written
    assert read_json(os.path.join(full, "metrics.json")).keys() == metrics.keys()
    state = load_checkpoint(full)
    assert state["kind"] == name and state["complete"] is True and state["parts"]

    # evaluate reproduces the test figures of metrics.json
    evaluated_kind, evaluated = evaluate_run(full, progress=False)
    assert evaluated_kind is kind
    pairs = shared_numbers(evaluated, metrics)
    assert pairs, "the evaluation shares no figure with metrics.json"
    assert [(p, a) for p, a, _ in pairs] == [(p, b) for p, _, b in pairs]

    # killed two thirds of the way through and resumed: bitwise the uninterrupted run
    out = str(tmp_path / "run")
    steps.count, steps.stop_at = 0, max(1, 2 * total // 3)
    with pytest.raises(Interrupted, match="--resume"):
        kind.train(out=out, **settings)
    assert read_json(os.path.join(out, "metrics.json"))["status"] == "interrupted"
    stages = [s.name for s in kind.stage_list(kind.config(**settings).resolved())]
    stopped_in = load_checkpoint(out)["stage"]
    if stopped_in != stages[-1]:  # a stage before the last one: nothing to evaluate yet
        with pytest.raises(ConfigError, match="--resume"):
            evaluate_run(out, progress=False)
    resumed = kind.train(out=out, resume=True, **settings)
    assert without_times(resumed) == without_times(metrics)
    same_tensors(state["parts"], load_checkpoint(out)["parts"])

    # a folder holding a run is refused without --overwrite, and left as it was
    before = snapshot(full)
    with pytest.raises(ConfigError, match="--overwrite"):
        kind.train(out=full, **settings)
    assert snapshot(full) == before

    # a bad setting: one line, exit status 2, nothing written
    err = cli_error(capsys, ["train", name, "--out", str(tmp_path / "bad"), "--nproc", "0"])
    assert err.strip() == "pyrolvm: error: --nproc must be >= 1, got 0"
    assert not os.path.exists(tmp_path / "bad")
