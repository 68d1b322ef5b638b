"""A run with an annealed beta resumed after SIGINT ends bitwise equal to
the uninterrupted run: the schedule follows the epoch that the checkpoint holds."""

import pytest
import torch
from test_reliability import KillAt, checkpoint, without_times

from pyrolvm.errors import Interrupted
from pyrolvm.runs import train_vae

VAE = dict(epochs=3, hidden=(16,), eval_samples=20, progress=False)  # 15 steps per epoch


def test_resume_mid_epoch_equals_the_uninterrupted_run(tmp_path):
    # cyclical with W = 1: beta = 0, 2, 0 in epochs 1-3; the kill falls in epoch 2
    options = dict(elbo="beta", beta=2.0, anneal="cyclical", warmup_epochs=1)
    full = train_vae(out=str(tmp_path / "full"), **VAE, **options)
    out = str(tmp_path / "run")
    with pytest.raises(Interrupted):
        train_vae(out=out, data=KillAt(20), **VAE, **options)  # mid-epoch 2
    resumed = train_vae(out=out, resume=True, **VAE, **options)
    assert without_times(resumed) == without_times(full)
    a, b = checkpoint(str(tmp_path / "full")), checkpoint(out)
    for part in ("model", "guide"):
        assert all(torch.equal(a["parts"][part][k], b["parts"][part][k]) for k in a["parts"][part])
