"""A class-conditional CVAE run (``--condition label``: one stage, no baseline) resumed after
SIGINT ends bitwise equal to the uninterrupted run. (Quadrant completion, whose settings and
phases are stages, and the MVAE: the run contract, tests/runs/test_run_contract.py.)"""

import pytest
from test_reliability import KillAt, checkpoint
from test_run_contract import same_tensors, without_times

from pyrolvm.errors import Interrupted
from pyrolvm.runs import evaluate_cvae, train_cvae

LABEL = dict(condition="label", epochs=2, hidden=(16,), eval_samples=5, progress=False)


def test_class_conditional_resume_equals_the_uninterrupted_run(tmp_path):
    full = train_cvae(out=str(tmp_path / "full"), **LABEL)
    out = str(tmp_path / "run")
    with pytest.raises(Interrupted):
        train_cvae(out=out, data=KillAt(20), **LABEL)  # mid-epoch 2
    stopped = evaluate_cvae(out, progress=False)  # its one stage in progress: evaluated as is
    assert stopped["label"]["cvae_nll"] != full["label"]["cvae_nll"]
    resumed = train_cvae(out=out, resume=True, **LABEL)
    assert without_times(resumed) == without_times(full)
    same_tensors(checkpoint(str(tmp_path / "full"))["parts"], checkpoint(out)["parts"])
