"""CVAE and MVAE runs resumed after SIGINT end bitwise equal to the uninterrupted runs: the
CVAE's checkpoint holds the finished settings and the phase (baseline or CVAE) in training,
the MVAE's the one training loop with its sub-sampled objectives."""

import os

import pytest
import torch
from test_reliability import KillAt, checkpoint

from pyrolvm.errors import ConfigError, Interrupted
from pyrolvm.runs import evaluate_cvae, train_cvae, train_mvae
from pyrolvm.runs.common import read_json

# 15 steps per epoch on digits: q1 baseline = steps 1-15, q1 CVAE 16-30, q3 baseline 31-45,
# q3 CVAE 46-60
CVAE = dict(quadrants=(1, 3), epochs=1, baseline_epochs=1, hidden=(16,), eval_samples=5)
LABEL = dict(condition="label", epochs=2, hidden=(16,), eval_samples=5)
MVAE = dict(modalities="halves", epochs=2, hidden=(16,), eval_samples=5)


def without_seconds(metrics):
    out = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if k != "seconds"}
        if key not in ("seconds", "seconds_per_epoch"):
            out[key] = value
    return out


def same_states(a, b):
    """Nested dicts of tensors, equal bitwise."""
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), key
        else:
            same_states(a[key], b[key])


@pytest.fixture(scope="module")
def uninterrupted_cvae(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("full") / "run")
    return out, train_cvae(out=out, progress=False, **CVAE)


# mid q1 baseline; mid q1 CVAE; q3's baseline done (its last step: the CVAE phase not begun)
@pytest.mark.parametrize("kill_step", [5, 20, 45])
def test_cvae_resume_equals_the_uninterrupted_run(tmp_path, uninterrupted_cvae, kill_step):
    full_out, full = uninterrupted_cvae
    out = str(tmp_path / "run")
    with pytest.raises(Interrupted, match="--resume"):
        train_cvae(out=out, data=KillAt(kill_step), progress=False, **CVAE)
    assert read_json(os.path.join(out, "metrics.json"))["status"] == "interrupted"
    with pytest.raises(ConfigError, match="unfinished"):
        evaluate_cvae(out, progress=False)
    resumed = train_cvae(out=out, resume=True, progress=False, **CVAE)
    assert without_seconds(resumed) == without_seconds(full)
    same_states(checkpoint(full_out)["states"], checkpoint(out)["states"])
    assert {"completions_q1.png", "completions_q3.png"} <= set(os.listdir(out))


def test_class_conditional_resume_equals_the_uninterrupted_run(tmp_path):
    full = train_cvae(out=str(tmp_path / "full"), progress=False, **LABEL)
    out = str(tmp_path / "run")
    with pytest.raises(Interrupted):
        train_cvae(out=out, data=KillAt(20), progress=False, **LABEL)  # mid-epoch 2
    resumed = train_cvae(out=out, resume=True, progress=False, **LABEL)
    assert without_seconds(resumed) == without_seconds(full)
    same_states(checkpoint(str(tmp_path / "full"))["states"], checkpoint(out)["states"])


def test_mvae_resume_equals_the_uninterrupted_run(tmp_path):
    full = train_mvae(out=str(tmp_path / "full"), progress=False, **MVAE)
    out = str(tmp_path / "run")
    with pytest.raises(Interrupted):
        train_mvae(out=out, data=KillAt(20), progress=False, **MVAE)  # mid-epoch 2
    state = checkpoint(out)["train"]
    assert (state["epoch"], state["step"]) == (2, 5)
    resumed = train_mvae(out=out, resume=True, progress=False, **MVAE)
    assert without_seconds(resumed) == without_seconds(full)
    a, b = checkpoint(str(tmp_path / "full")), checkpoint(out)
    same_states(
        {"model": a["model"], "guide": a["guide"]}, {"model": b["model"], "guide": b["guide"]}
    )
