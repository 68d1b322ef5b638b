"""Shared test fixtures: a linear-Gaussian model with guides of known quality."""

import os
import signal

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyrolvm.data import load
from pyrolvm.models import LinearGaussian


def linear_gaussian(data_dim=5, latent_dim=2, noise_scale=0.5, seed=1):
    """A LinearGaussian model with fixed random W, b and 20 datapoints drawn from it."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(data_dim, latent_dim, generator=gen)
    b = torch.randn(data_dim, generator=gen)
    model = LinearGaussian(w, b, noise_scale)
    with torch.no_grad():
        x = model.marginal().sample((20,))
    return model, x


def exact_guide(model):
    """The exact posterior p(z | x) as a guide: every importance weight equals p(x)."""

    def guide(x):
        post = model.posterior(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", post)

    return guide


def shifted_guide(model, shift=0.5, inflate=1.5):
    """A poor guide: the exact posterior's marginals, mean shifted and scale inflated."""

    def guide(x):
        post = model.posterior(x)
        scale = post.covariance_matrix.diagonal(dim1=-2, dim2=-1).sqrt() * inflate
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(post.loc + shift, scale).to_event(1))

    return guide


def cli_error(capsys, argv):
    """Run the `pyrolvm` command with ``argv``; assert it exits with status 2 and a one-line
    error (no traceback), and return what it printed to stderr."""
    from pyrolvm.cli import main

    with pytest.raises(SystemExit) as info:
        raise SystemExit(main(argv))
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def malformed(capsys, argv):
    """Run the `pyrolvm` command with a malformed command line ``argv``; assert it exits with
    status 2, prints nothing on stdout and at most 2 lines on stderr, the first an error
    (``pyrolvm: error: ...``); return the stderr."""
    err = cli_error(capsys, argv)
    assert len(err.splitlines()) <= 2, err
    assert err.startswith("pyrolvm: error: "), err
    return err


def command_help(argv, monkeypatch, columns=80):
    """What ``pyrolvm ARGV --help`` prints on a UTF-8 terminal ``columns`` wide (tyro draws
    its boxes there; on another stream it draws plain titles, one more line per group)."""
    import io
    import sys

    from pyrolvm.cli import parse

    monkeypatch.setenv("COLUMNS", str(columns))
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    monkeypatch.setattr(sys, "stdout", out)
    with pytest.raises(SystemExit) as info:
        parse([*argv, "--help"])
    assert info.value.code == 0
    out.flush()
    return out.buffer.getvalue().decode()


def run_tutorial_fast(name, figures_dir):
    """Run ``tutorials/NAME`` in a fresh interpreter in its fast mode (``PYROLVM_FAST=1``),
    writing its figures to ``figures_dir``; assert it succeeds."""
    import os
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(
        os.environ,
        PYROLVM_FAST="1",
        PYROLVM_FIGURES=str(figures_dir),
        PYTHONPATH=repo + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    proc = subprocess.run(
        [sys.executable, os.path.join(repo, "tutorials", name)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=repo,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


class KillAt:
    """A dynamically binarized digits dataset whose k-th training minibatch sends ``sig`` to
    this process (a real signal, delivered while the step runs)."""

    def __init__(self, step, sig=signal.SIGINT):
        self.data = load("digits", binarize="dynamic", seed=0)
        self.step, self.sig, self.calls = step, sig, 0

    def __getattr__(self, name):
        return getattr(self.data, name)

    @property
    def train_transform(self):
        def transform(x):
            self.calls += 1
            if self.calls == self.step:
                os.kill(os.getpid(), self.sig)
            return torch.bernoulli(x)

        return transform
