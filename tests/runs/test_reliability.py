"""Reliability of runs: checkpoints that cannot run code, resume equal to the uninterrupted
run at several kill points (SIGINT mid-epoch and at an epoch's end, SIGKILL), run folders
that are never overwritten silently, a lock against two writers. (What every kind keeps, a
resume in a later stage included: tests/runs/test_run_contract.py.)"""

import os
import pathlib
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from helpers import KillAt, cli_error

from pyrolvm.cli import main
from pyrolvm.errors import ConfigError, Interrupted
from pyrolvm.runs import evaluate_run, train_m2, train_vae
from pyrolvm.runs.common import read_json

REPO = pathlib.Path(__file__).resolve().parents[2]
VAE = dict(epochs=3, hidden=(16,), eval_samples=20, progress=False)  # 15 steps per epoch


def without_times(metrics):
    out = {k: v for k, v in metrics.items() if k not in ("seconds_per_epoch", "seconds")}
    out["curves"] = {k: v for k, v in metrics["curves"].items() if k != "seconds"}
    return out


def checkpoint(folder):
    return torch.load(os.path.join(folder, "checkpoint.pt"), weights_only=True)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("full") / "run")
    return out, train_vae(out=out, **VAE)


@pytest.mark.parametrize("kill_step", [5, 15, 38])  # mid-epoch 1, epoch 1's last step, epoch 3
def test_resume_after_sigint_equals_the_uninterrupted_run(tmp_path, uninterrupted, kill_step):
    full_out, full = uninterrupted
    out = str(tmp_path / "run")
    with pytest.raises(Interrupted, match="--resume"):
        train_vae(out=out, data=KillAt(kill_step), **VAE)
    stopped = read_json(os.path.join(out, "metrics.json"))
    assert stopped["status"] == "interrupted" and stopped["complete"] is False
    state = checkpoint(out)["train"]
    assert (state["epoch"] - 1) * 15 + state["step"] == kill_step  # the step that was running
    resumed = train_vae(out=out, resume=True, **VAE)
    assert without_times(resumed) == without_times(full)
    a, b = checkpoint(full_out), checkpoint(out)
    for part in ("model", "guide"):
        assert all(torch.equal(a["parts"][part][k], b["parts"][part][k]) for k in a["parts"][part])
    assert all(
        torch.equal(a["train"]["params"][k], b["train"]["params"][k]) for k in a["train"]["params"]
    )


def test_resume_after_sigkill_starts_from_the_last_epoch(tmp_path, uninterrupted):
    _, full = uninterrupted
    out = str(tmp_path / "run")
    script = textwrap.dedent(f"""
        import signal, sys
        sys.path[:0] = [{str(REPO / "tests")!r}, {str(REPO / "tests" / "runs")!r}]
        import torch
        torch.set_num_threads(1)
        import conftest  # the float64 job's default dtype, as in this process
        from test_reliability import KillAt, VAE
        from pyrolvm.runs import train_vae
        train_vae(out={out!r}, data=KillAt(24, signal.SIGKILL), **VAE)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert checkpoint(out)["epoch"] == 1  # killed in epoch 2: the epoch-1 checkpoint is kept
    resumed = train_vae(out=out, resume=True, **VAE)
    assert without_times(resumed) == without_times(full)


def test_m2_interleaved_resume_equals_the_uninterrupted_run(tmp_path, monkeypatch):
    # stopped mid-epoch and resumed: the interleaved schedule's labelled order of an epoch
    # is a function of the seed and the epoch, so it needs no state of its own (the
    # every-step schedule: the run contract, tests/runs/test_run_contract.py)
    schedule = "interleaved"
    from pyrolvm.runs import common

    kw = dict(labels=50, epochs=2, hidden=(16,), progress=False, labelled_schedule=schedule)
    full = train_m2(out=str(tmp_path / "full"), **kw)
    monkeypatch.setattr(common, "load", lambda *a, **k: KillAt(20))
    with pytest.raises(Interrupted):
        train_m2(out=str(tmp_path / "run"), **kw)
    monkeypatch.undo()
    resumed = train_m2(out=str(tmp_path / "run"), resume=True, **kw)
    assert without_times(resumed) == without_times(full)


# The resume of every kind, in a later stage of the multi-stage ones (mixture-vae, vqvae, gmm
# restarts, cvae settings): tests/runs/test_run_contract.py.


def test_interrupted_cli_run_says_how_to_resume(tmp_path, capsys, monkeypatch):
    from pyrolvm.runs import common

    monkeypatch.setattr(common, "load", lambda *a, **k: KillAt(3))
    out = str(tmp_path / "run")
    assert (
        main(["train", "vae", "--epochs", "2", "--hidden", "16", "--out", out, "--no-progress"])
        == 130
    )
    err = capsys.readouterr().err
    assert "SIGINT at epoch 1, step 3" in err and "--resume" in err and "Traceback" not in err


# -- checkpoints that are not ours ---------------------------------------------------------


class Crafted:
    """A pickle that runs code when loaded without weights_only (it creates a file)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


@pytest.mark.parametrize("content", ["crafted", "truncated", "random", "empty", "foreign"])
def test_bad_checkpoints_get_one_clear_error_and_run_nothing(
    tmp_path, capsys, uninterrupted, content
):
    folder = tmp_path / "run"
    folder.mkdir()
    path, marker = folder / "checkpoint.pt", tmp_path / "code-ran"
    if content == "crafted":
        torch.save({"kind": "vae", "config": {}, "payload": Crafted(marker)}, path)
    elif content == "truncated":
        data = (pathlib.Path(uninterrupted[0]) / "checkpoint.pt").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif content == "random":
        path.write_bytes(os.urandom(4096))
    elif content == "empty":
        path.write_bytes(b"")
    else:
        torch.save({"weights": torch.zeros(3)}, path)
    err = cli_error(capsys, ["evaluate", str(folder)])
    assert "checkpoint" in err and str(path) in err
    assert not marker.exists()
    with pytest.raises(ConfigError):
        evaluate_run(str(folder))


# -- run folders ---------------------------------------------------------------------------

FAST = ["--epochs", "1", "--eval-samples", "5", "--hidden", "8", "--no-progress"]


def snapshot(folder):
    return {p.name: p.read_bytes() for p in pathlib.Path(folder).iterdir() if p.name != ".lock"}


def test_a_folder_holding_a_run_is_never_written_silently(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["train", "vae", "--latent-dim", "2", "--out", out, *FAST]) == 0
    before = snapshot(out)
    for argv in (
        ["train", "vae", "--out", out, *FAST],
        ["train", "gmm", "--out", out, "--epochs", "2", "--no-progress"],
        ["train", "vae", "--out", out, "--epochs", "0"],  # fails validation
        ["train", "vae", "--out", out, "--resume", "--lr", "0.5", *FAST],
        ["train", "gmm", "--out", out, "--resume", "--no-progress"],
        ["train", "vae", "--out", out, "--resume", "--overwrite", *FAST],
    ):
        err = cli_error(capsys, argv)
        assert "Traceback" not in err
    assert snapshot(out) == before
    err = cli_error(capsys, ["train", "vae", "--out", out, "--resume", "--lr", "0.5", *FAST])
    assert "these differ: --latent-dim: 2 in the run, 8 now; --lr: 0.003 in the run, 0.5 now" in err
    err = cli_error(capsys, ["train", "vae", "--out", out, *FAST])
    assert "--overwrite" in err and "--resume" in err
    # --overwrite clears the old run first: the 2-D run's manifold does not survive
    assert main(["train", "vae", "--latent-dim", "3", "--out", out, "--overwrite", *FAST]) == 0
    assert "latent_manifold.png" not in os.listdir(out)
    assert read_json(os.path.join(out, "config.json"))["latent_dim"] == 3


def test_overwrite_never_clears_a_folder_that_is_not_a_run(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("precious")
    err = cli_error(capsys, ["train", "vae", "--out", str(tmp_path), "--overwrite", *FAST])
    assert "--overwrite clears only run folders" in err and "notes.txt" in err
    assert (tmp_path / "notes.txt").read_text() == "precious"


def test_resume_needs_a_checkpoint_of_the_same_kind(tmp_path, capsys):
    err = cli_error(capsys, ["train", "vae", "--out", str(tmp_path / "new"), "--resume", *FAST])
    assert "nothing to resume" in err


@pytest.mark.parametrize("where", ["under a file", "in /proc"])
def test_an_unusable_out_gets_one_clear_error(tmp_path, capsys, where):
    (tmp_path / "file").write_text("")
    out = str(tmp_path / "file" / "run") if where == "under a file" else "/proc/pyrolvm-run"
    err = cli_error(capsys, ["train", "vae", "--out", out, *FAST])
    assert "run folder" in err and "choose another --out" in err


def test_two_processes_cannot_write_one_folder(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from filelock import FileLock; "
            f"lock = FileLock({str(out / '.lock')!r}); lock.acquire(); print('held', flush=True); "
            "sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout.readline().strip() == b"held"
        err = cli_error(capsys, ["train", "vae", "--out", str(out), *FAST])
        assert "another pyrolvm process is writing" in err
    finally:
        holder.communicate(b"")
    assert main(["train", "vae", "--out", str(out), *FAST]) == 0  # the lock is released


def test_mixture_vae_resumed_in_its_fine_tuning_equals_the_uninterrupted_run(tmp_path, monkeypatch):
    # the VaDE protocol stopped in the fine-tuning, its last stage (29 steps per epoch: the
    # transform's 70th call is the 12th fine-tuning step): the warm-up's curve and the scores
    # right after the prior's fit come from the checkpoint's finished stages
    from pyrolvm.runs import common, train_mixture_vae

    kw = dict(components=3, latent_dim=2, hidden=(16,), warmup_epochs=2, epochs=2)
    kw |= dict(pretrain="autoencoder", prior_init="means", progress=False)
    full = train_mixture_vae(out=str(tmp_path / "full"), **kw)
    monkeypatch.setattr(common, "load", lambda *a, **k: KillAt(70))
    with pytest.raises(Interrupted, match="--resume"):
        train_mixture_vae(out=str(tmp_path / "run"), **kw)
    monkeypatch.undo()
    state = checkpoint(str(tmp_path / "run"))
    assert state["stage"] == "finetune" and set(state["stages"]) == {"warmup", "prior"}
    resumed = train_mixture_vae(out=str(tmp_path / "run"), resume=True, **kw)
    drop = ("seconds",)
    assert {k: v for k, v in resumed.items() if k not in drop} == {
        k: v for k, v in full.items() if k not in drop
    }
