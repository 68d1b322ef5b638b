"""The `pyrolvm` command end to end on digits, and its errors for bad input."""

import os

import numpy as np
import pytest
import torch
from helpers import cli_error, command_help, malformed

from pyrolvm.cli import main
from pyrolvm.inference import ELBOS
from pyrolvm.runs import RUNS, evaluate_vae, train_vae
from pyrolvm.runs.common import read_json

FAST = ["--epochs", "1", "--eval-samples", "20", "--no-progress", "--hidden", "32"]


def test_train_writes_every_artifact_and_evaluate_reproduces(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["train", "vae", "--latent-dim", "2", "--out", out, "--seed", "3", *FAST]) == 0
    printed = capsys.readouterr().out
    for label in ("train ELBO", "test ELBO", "test NLL (K=20)", "seconds per epoch"):
        assert label in printed
    files = set(os.listdir(out))
    assert {
        "config.json",
        "metrics.json",
        "checkpoint.pt",
        "samples.png",
        "reconstructions.png",
        "elbo_curve.png",
        "latent_manifold.png",
    } <= files
    metrics = read_json(os.path.join(out, "metrics.json"))
    for key in ("train_elbo", "test_elbo", "test_nll", "test_nll_stderr", "seconds_per_epoch"):
        assert isinstance(metrics[key], float)
    assert len(metrics["curves"]["train_elbo"]) == 1 and len(metrics["curves"]["test_elbo"]) == 1
    # NLL >= -ELBO on average is not guaranteed per estimate, but the bound holds in expectation:
    assert metrics["test_nll"] < -metrics["test_elbo"] + 0.5
    config = read_json(os.path.join(out, "config.json"))
    assert config["latent_dim"] == 2 and config["seed"] == 3
    state = torch.load(os.path.join(out, "checkpoint.pt"), weights_only=True)
    assert {"parts", "config", "train", "epoch", "kind", "stage", "complete"} <= set(state)
    assert {"model", "guide"} == set(state["parts"]) and state["complete"]
    assert {"optim", "params", "rng", "history", "epoch", "step"} <= set(state["train"])
    # `evaluate` reloads the checkpoint and reproduces the test figures exactly (same seed).
    again = evaluate_vae(out, progress=False)
    for key in ("test_elbo", "test_nll", "test_nll_stderr"):
        assert again[key] == pytest.approx(metrics[key], abs=1e-9)
    assert main(["evaluate", out, "--no-progress"]) == 0
    assert (
        f"{metrics['test_nll']:.2f} ± {metrics['test_nll_stderr']:.2f}" in capsys.readouterr().out
    )
    # ... and the figures are what they say: from the checkpoint's model and guide, with the
    # run's seed and K, the mean of -log p^(x), its standard error (sample sd / sqrt(N)), the
    # mean ELBO and the mean ESS over the 360 test digits, computed here.
    import pyro

    from pyrolvm.data import load
    from pyrolvm.guides import AmortizedNormal
    from pyrolvm.inference import importance_sample
    from pyrolvm.models import VAE

    model = VAE(64, 2, (32,))
    guide = AmortizedNormal(64, 2, (32,))
    model.load_state_dict(state["parts"]["model"])
    guide.load_state_dict(state["parts"]["guide"])
    test = load("digits", binarize="dynamic", seed=3).test
    pyro.set_rng_seed(3)
    result = importance_sample(model, guide, test, num_samples=20)
    nll = -result.log_likelihood
    assert nll.shape == (360,)
    assert metrics["test_nll"] == pytest.approx(nll.mean().item(), abs=1e-9)
    assert metrics["test_nll_stderr"] == pytest.approx(
        (((nll - nll.mean()) ** 2).sum() / 359).sqrt().item() / 360**0.5, abs=1e-9
    )
    assert metrics["test_elbo"] == pytest.approx(result.elbo.mean().item(), abs=1e-9)
    assert metrics["test_ess"] == pytest.approx(result.ess.mean().item(), abs=1e-9)
    assert 1 <= metrics["test_ess"] <= 20


def test_same_seed_same_run(tmp_path):
    a = train_vae(out=str(tmp_path / "a"), epochs=2, hidden=(16,), eval_samples=10, progress=False)
    b = train_vae(out=str(tmp_path / "b"), epochs=2, hidden=(16,), eval_samples=10, progress=False)
    c = train_vae(
        out=str(tmp_path / "c"), epochs=2, hidden=(16,), eval_samples=10, progress=False, seed=1
    )
    # Everything but the wall-clock times is identical under the same seed.
    assert a["test_nll"] == b["test_nll"] and a["test_elbo"] == b["test_elbo"]
    assert a["curves"]["train_elbo"] == b["curves"]["train_elbo"]
    assert a["test_nll"] != c["test_nll"]


@pytest.mark.parametrize("elbo", sorted(ELBOS))
def test_each_objective_trains_one_epoch(tmp_path, elbo):
    # Each objective's loss is checked against its bound on the same draws in
    # tests/inference/test_objectives.py; here the whole run is pinned. Measured (seeds 0-3,
    # every objective, K = 2): train ELBO -27.29 to -27.66 (seed-to-seed sd ~0.1 nats), test
    # NLL (K = 20) 26.98 to 27.29 (sd ~0.13); the untrained VAE starts near -28 nats. The
    # tolerances are 4 such sds, far tighter than a step in the wrong direction would land.
    out = str(tmp_path / elbo)
    assert main(["train", "vae", "--elbo", elbo, "--num-particles", "2", "--out", out, *FAST]) == 0
    metrics = read_json(os.path.join(out, "metrics.json"))
    assert metrics["status"] == "ok"
    assert metrics["train_elbo"] == pytest.approx(-27.5, abs=0.4)
    assert metrics["test_nll"] == pytest.approx(27.15, abs=0.5)
    # log (1/K) sum w >= (1/K) sum log w on every datapoint's draws (Jensen), so on the mean
    assert metrics["test_nll"] <= -metrics["test_elbo"]
    assert metrics["train_elbo"] == metrics["curves"]["train_elbo"][-1]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dataset", "cifar"], "unknown dataset 'cifar'"),
        (["--likelihood", "poisson"], "invalid choice 'poisson'"),
        (["--elbo", "renyi2"], "invalid choice 'renyi2'"),
        (["--latent-dim", "0"], "--latent-dim must be >= 1, got 0"),
        (["--binarize", "none"], "not binary, but a Bernoulli likelihood needs values in {0, 1}"),
        (["--num-particles", "0"], "--num-particles must be >= 1"),
        (["--epochs", "0"], "--epochs must be >= 1, got 0"),
        (["--betas", "1.5", "0.9"], "--betas must be >= 0 and < 1, got 1.5"),
        (["--eval-samples", "0"], "--eval-samples must be >= 1, got 0"),
    ],
)
def test_bad_input_gives_one_clear_error(tmp_path, capsys, argv, message):
    err = cli_error(capsys, ["train", "vae", "--out", str(tmp_path / "r"), *FAST, *argv])
    assert message in err


def test_missing_data_root(tmp_path, capsys):
    err = cli_error(
        capsys,
        ["train", "vae", "--dataset", "mnist", "--data-root", str(tmp_path / "nothing"), *FAST],
    )
    assert "MNIST files not found" in err and "train-images-idx3-ubyte" in err


def test_nan_data(tmp_path, capsys):
    train = np.random.rand(40, 4)
    train[7, 2] = np.nan
    np.savez(tmp_path / "d.npz", train=train, test=np.random.rand(10, 4))
    err = cli_error(
        capsys,
        [
            "train",
            "vae",
            "--dataset",
            str(tmp_path / "d.npz"),
            "--likelihood",
            "gaussian",
            "--out",
            str(tmp_path / "r"),
            *FAST,
        ],
    )
    assert "NaN or infinite values (first in row 7)" in err


def test_evaluate_without_checkpoint(tmp_path, capsys):
    assert "no checkpoint" in cli_error(capsys, ["evaluate", str(tmp_path)])


def test_nan_loss_keeps_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    from pyro.infer import Trace_ELBO

    class NaNInEpochThree(Trace_ELBO):
        steps = 0

        def loss_and_grads(self, *args, **kwargs):
            NaNInEpochThree.steps += 1
            value = super().loss_and_grads(*args, **kwargs)
            # (the first call is the run's trial step on a copy, before the folder opens)
            return float("nan") if NaNInEpochThree.steps > 1 + 2 * 15 + 4 else value

    from pyrolvm.runs import objective

    monkeypatch.setattr(objective, "make_elbo", lambda name, k: NaNInEpochThree())
    out = str(tmp_path / "run")
    err = cli_error(
        capsys, ["train", "vae", "--out", out, "--epochs", "5", "--hidden", "16", "--no-progress"]
    )
    assert "the loss became nan at epoch 3, step 5" in err and "holds epoch 2" in err
    state = torch.load(os.path.join(out, "checkpoint.pt"), weights_only=True)
    assert state["epoch"] == 2
    assert all(torch.isfinite(v).all() for v in state["parts"]["model"].values())
    metrics = read_json(os.path.join(out, "metrics.json"))
    assert metrics["status"] == "diverged" and len(metrics["train_elbo"]) == 2


def test_every_flag_reaches_the_run_config():
    from pyrolvm.cli import parse
    from pyrolvm.runs import VAEConfig

    cfg = parse(
        [
            "train",
            "vae",
            "--dataset",
            "mnist",
            "--data-root",
            "/d",
            "--lr",
            "0.5",
            "--no-reparam",
            "--betas",
            "0.8",
            "0.9",
            "--no-progress",
            "--hidden",
            "10,20",
            "--eval-samples",
            "7",
        ]
    )
    assert isinstance(cfg, VAEConfig)
    assert (
        cfg.dataset,
        cfg.data_root,
        cfg.lr,
        cfg.reparameterized,
        cfg.betas,
        cfg.progress,
        cfg.hidden,
        cfg.eval_samples,
    ) == ("mnist", "/d", 0.5, False, (0.8, 0.9), False, (10, 20), 7)


def flag_entries(text):
    """The flags' entries of a ``--help`` drawn in boxes: ``[(flag, its help on one line)]``."""
    out = []
    for line in text.splitlines():
        if not line.startswith("│"):
            continue
        body = line[2:].rstrip().removesuffix("│").rstrip()
        if body.startswith("-"):
            out.append((body.split()[0].rstrip(","), " ".join(body.split())))
        elif body.startswith(" ") and out:
            out[-1] = (out[-1][0], out[-1][1] + " " + body.strip())
    return out


def flag_of(config, field):
    """The flag of a config field, as the CLI makes it: ``--name``; ``--no-name`` for a bool
    that defaults to true; a Switch's own flag."""
    import typing

    from pyrolvm.settings import Switch

    tp = typing.get_type_hints(config, include_extras=True)[field.name]
    switch = [m.name for m in getattr(tp, "__metadata__", ()) if isinstance(m, Switch)]
    if switch:
        return "--" + switch[0]
    name = field.name.replace("_", "-")
    return "--no-" + name if field.default is True else "--" + name


@pytest.mark.parametrize("kind", sorted(RUNS))
def test_help_is_short_grouped_by_concern_and_shows_each_default_once(kind, monkeypatch):
    # generated from the run configs: each field of the kind is a flag, once, with the
    # docstring under the field as its help, in the group its config's GROUPS names, the
    # groups in GROUP_ORDER; a default is said once, and None is no choice
    import dataclasses
    import re

    from pyrolvm.runs.config import GROUP_ORDER, group_of

    text = command_help(["train", kind], monkeypatch)
    assert len(text.splitlines()) <= 90, len(text.splitlines())
    config = RUNS[kind].config
    fields = dataclasses.fields(config)
    titles = re.findall(r"^╭─ (?:(.+?) )?options ─", text, flags=re.M)
    expected = [g for g in GROUP_ORDER if any(group_of(config, f.name) == g for f in fields)]
    assert titles == ["", *expected]
    entries = flag_entries(text)
    flags = [flag for flag, _ in entries]
    added = ["--config", "--seeds"]  # pyrolvm.cli.TRAIN_FLAGS, in the group "run folder"
    assert sorted(flags) == sorted(["-h", *added, *(flag_of(config, f) for f in fields)])
    for _, line in entries:
        assert line.count("(default") <= 1, line
    assert "(default: None)" not in text and "{None" not in text
    assert "seed of every random draw" in text
    if kind == "vae":  # the dataset defaults said once, from DATASET_DEFAULTS
        assert "--latent-dim N latent dimensions (default: 8; mnist: 50)" in dict(entries).values()


def test_evaluate_and_the_command_have_help_that_reads(monkeypatch):
    text = command_help([], monkeypatch)
    assert "examples:" in text and "pyrolvm train vae --epochs 20" in text
    assert "pyrolvm evaluate runs/vae" in text and "pyrolvm compare" in text
    text = command_help(["evaluate"], monkeypatch)
    entries = flag_entries(text)
    assert {"--eval-samples", "--amortization-gap", "--no-progress", "--device"} <= {
        flag for flag, _ in entries
    }
    for _, line in entries:
        assert line.count("(default") <= 1, line
    assert "FOLDER" in text and "(default: None)" not in text


def test_switches_and_renamed_flags_reach_the_run_config():
    from pyrolvm.cli import parse

    cfg = parse(["train", "m2", "--sample-labels", "--no-aux-loss", "--resume", "--overwrite"])
    assert (cfg.enumerate, cfg.aux_loss, cfg.resume, cfg.overwrite) == (False, False, True, True)
    cfg = parse(["train", "m2"])
    assert (cfg.enumerate, cfg.aux_loss, cfg.resume, cfg.progress) == (True, True, False, True)
    assert parse(["train", "vae", "--no-reparam"]).reparameterized is False
    # a family split off a kind: `train vae --latent bernoulli` is `train sbn`
    assert type(parse(["train", "vae", "--latent", "bernoulli"])).__name__ == "SBNConfig"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "vae", "--likelihood", "poisson"], "invalid choice 'poisson' for --likelihood"),
        (["train", "vae", "--elbo", "renyi2"], "invalid choice 'renyi2' for --elbo: choose one"),
        (["train", "cvae", "--quadrants", "4"], "--quadrants: choose one of 1, 2, 3"),
        (
            ["train", "vae", "--laten-dim", "3"],
            "has no flag --laten-dim; did you mean --latent-dim?",
        ),
        (["train", "m2", "--sample-label"], "did you mean --sample-labels?"),
        (
            ["train", "sbn", "--guide", "iaf"],
            "`pyrolvm train sbn` has no flag --guide (a flag of vae",
        ),
        (["train", "gmm", "--no-reparam"], "has no flag --no-reparam (a flag of vae)"),
        (
            ["train", "vae", "--latent", "bernoulli", "--guide", "iaf"],
            "`pyrolvm train vae --latent bernoulli` is `pyrolvm train sbn`, which has no flag",
        ),
        (["train", "vea"], "`pyrolvm train` has no command 'vea': choose one of vae,"),
        (
            ["trian"],
            "has no command 'trian': choose one of train, evaluate, compare; did you mean train?",
        ),
        (["train"], "`pyrolvm train` needs a command: one of vae,"),
        ([], "`pyrolvm` needs a command: one of train, evaluate"),
        (["train", "vae", "--epochs", "x"], "--epochs takes an integer, got x"),
        (["train", "vae", "--lr=fast"], "--lr takes a number, got fast"),
        (["train", "vae", "--hidden", "a,b"], "--hidden takes sizes like 200,200, got a,b"),
        (["train", "vae", "--epochs"], "--epochs needs a value"),
        (["train", "vae", "--betas", "0.5"], "--betas needs 2 values"),
        (["train", "vae", "extra"], "`pyrolvm train vae` takes no argument 'extra'"),
        (["evaluate"], "`pyrolvm evaluate` needs FOLDER"),
        (["evaluate", "a", "b"], "`pyrolvm evaluate` takes no argument 'b'"),
        (["evaluate", "a", "--eval-sampels", "5"], "did you mean --eval-samples?"),
    ],
)
def test_a_malformed_command_line_gets_two_lines_and_status_2(argv, message, capsys):
    err = malformed(capsys, argv)
    assert message in err.splitlines()[0], err
    assert err.splitlines()[1].startswith("see `pyrolvm"), err
    if argv[:2] == ["train", "vae"] and "--laten-dim" in argv:  # suggested from its own kind
        assert not any(k in err for k in ("cvae", "m2", "mvae", "sbn", "gmm"))


def test_version_comes_from_the_package_metadata(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"pyrolvm {version('pyro-lvm')}"
