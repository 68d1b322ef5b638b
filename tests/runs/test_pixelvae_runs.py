"""``pyrolvm train vae --decoder pixelcnn`` (the PixelVAE decoder): the run folder says which
decoder, ``evaluate`` rebuilds it from the checkpoint, ``--resume`` ends bitwise as the
uninterrupted run, and what it cannot model gets one error."""

import os

import pytest
import torch
from helpers import cli_error
from test_reliability import KillAt, checkpoint, without_times

from pyrolvm.cli import main
from pyrolvm.errors import Interrupted
from pyrolvm.runs import evaluate_vae, train_vae

RUN = dict(
    decoder="pixelcnn",
    decoder_layers=2,
    decoder_channels=4,
    hidden=(16,),
    eval_samples=5,
    progress=False,
)


def test_run_resumes_bitwise_and_evaluate_rebuilds_it(tmp_path):
    full = train_vae(out=str(tmp_path / "full"), epochs=2, **RUN)
    assert full["decoder"] == "pixelcnn" and "rate" in full and "active_units" in full
    assert {"samples.png", "reconstructions.png"} <= set(os.listdir(tmp_path / "full"))
    out = str(tmp_path / "run")
    with pytest.raises(Interrupted):
        train_vae(out=out, data=KillAt(20), epochs=2, **RUN)  # mid-epoch 2
    resumed = train_vae(out=out, resume=True, epochs=2, **RUN)
    assert without_times(resumed) == without_times(full)
    a, b = checkpoint(str(tmp_path / "full")), checkpoint(out)
    assert any(k.startswith("pixelcnn.") for k in a["parts"]["model"])
    for part in ("model", "guide"):
        assert all(torch.equal(a["parts"][part][k], b["parts"][part][k]) for k in a["parts"][part])
    again = evaluate_vae(out, progress=False)
    assert again["test_nll"] == full["test_nll"]


def test_command_line_flags(tmp_path, capsys):
    out = str(tmp_path / "cli")
    argv = ["train", "vae", "--out", out, "--epochs", "1", "--eval-samples", "3"]
    argv += ["--hidden", "8", "--no-progress", "--decoder", "pixelcnn"]
    assert main([*argv, "--decoder-layers", "1", "--decoder-channels", "4"]) == 0
    assert "decoder=pixelcnn (1 layers of 4 channels)" in capsys.readouterr().out
    err = cli_error(capsys, [*argv, "--mask", "half", "--out", out + "2"])
    assert "--mask (missing data) reads the mask" in err and "--decoder" in err
