"""A battery of bad command lines and API calls (those a user tried, and their neighbours):
each ends with exit status 2 and one message, or raises the project's error; none escapes as
a raw PyTorch, Pyro or numpy exception."""

import os

import numpy as np
import pytest
import torch
from helpers import cli_error

from pyrolvm.data import load
from pyrolvm.errors import PyroLVMError
from pyrolvm.guides import AmortizedNormal
from pyrolvm.inference import IWAE, importance_sample, make_elbo, make_optim, train
from pyrolvm.models import VAE, LinearGaussian
from pyrolvm.runs import train_vae


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    rng = np.random.default_rng(0)
    np.savez(d / "width.npz", train=rng.random((20, 4)), test=rng.random((5, 3)))
    np.savez(d / "strings.npz", train=np.array([["a", "b"]] * 5), test=np.array([["a"]] * 2))
    (d / "text.npz").write_text("hello")
    np.savez(d / "nan.npz", train=np.full((10, 4), np.nan), test=rng.random((5, 4)))
    np.savez(d / "big.npz", train=rng.random((10, 4)) * 255, test=rng.random((5, 4)) * 255)
    np.savez(d / "empty.npz", train=np.zeros((0, 4)), test=np.zeros((0, 4)))
    np.savez(d / "3d.npz", train=np.zeros((3, 2, 2)), test=np.zeros((3, 2, 2)))
    np.savez(d / "nokeys.npz", x=np.zeros((3, 2)))
    (d / "regular").write_text("")
    for name, content in (("trunc", b"PK\x03\x04abc"), ("rand", os.urandom(500)), ("empty", b"")):
        (d / "ck" / name).mkdir(parents=True)
        (d / "ck" / name / "checkpoint.pt").write_bytes(content)
    return str(d)


FAST = ["--epochs", "1", "--hidden", "8", "--eval-samples", "5", "--no-progress"]
CLI = [
    ["train", "vae", "--epochs", "0"],
    ["train", "vae", "--betas", "1.5", "0.9"],
    ["train", "vae", "--betas", "0.9"],
    ["train", "vae", "--lr", "-1"],
    ["train", "vae", "--lr", "nan"],
    ["train", "vae", "--eps", "0"],
    ["train", "vae", "--hidden", "0"],
    ["train", "vae", "--hidden", "a,b"],
    ["train", "vae", "--batch-size", "0"],
    ["train", "vae", "--temperature", "0"],
    ["train", "vae", "--num-categories", "1", "--latent", "categorical"],
    ["train", "vae", "--relaxation", "concrete"],
    ["train", "vae", "--baseline", "neural"],
    ["train", "vae", "--latent", "bernoulli", "--likelihood", "gaussian"],
    ["train", "vae", "--dataset", "{d}/width.npz", *FAST],
    ["train", "vae", "--dataset", "{d}/strings.npz", *FAST],
    ["train", "vae", "--dataset", "{d}/text.npz", *FAST],
    ["train", "vae", "--dataset", "{d}/nan.npz", "--likelihood", "gaussian", *FAST],
    ["train", "vae", "--dataset", "{d}/big.npz", *FAST],
    ["train", "vae", "--dataset", "{d}/empty.npz", *FAST],
    ["train", "vae", "--dataset", "{d}/3d.npz", *FAST],
    ["train", "vae", "--dataset", "{d}/nokeys.npz", *FAST],
    ["train", "vae", "--dataset", "{d}/missing.npz", *FAST],
    ["train", "vae", "--out", "{d}/regular/run", *FAST],
    ["train", "vae", "--out", "", *FAST],
    ["train", "vae", "--bogus"],
    ["train", "foo"],
    ["train"],
    [],
    ["evaluate"],
    ["evaluate", "{d}/ck/trunc"],
    ["evaluate", "{d}/ck/rand"],
    ["evaluate", "{d}/ck/empty"],
    ["evaluate", "{d}/ck/trunc", "--eval-samples", "0"],
    ["train", "gmm", "--components", "5000"],
    ["train", "gmm", "--pca-dim", "100"],
    ["train", "gmm", "--lr-decay", "0"],
    ["train", "m2", "--labels", "7"],
    ["train", "m2", "--labels", "5000"],
    ["train", "mixture-vae", "--components", "0"],
    ["train", "mixture-vae", "--resume", "--out", "{d}/mixture"],
    ["train", "vae", "--resume", "--overwrite"],
]


@pytest.mark.parametrize("argv", CLI, ids=[" ".join(a)[:60] or "(none)" for a in CLI])
def test_bad_command_lines_end_with_one_message(files, capsys, argv):
    cli_error(capsys, [a.format(d=files) for a in argv])


def _pair():
    return VAE(4, 2, (8,)), AmortizedNormal(4, 2, (8,))


X = torch.bernoulli(torch.rand(6, 4, generator=torch.Generator().manual_seed(0)))
OTHER_DTYPE = torch.float32 if torch.get_default_dtype() == torch.float64 else torch.float64
API = {
    "width": lambda m, g: IWAE(2).loss(m, g, torch.rand(6, 5).round()),
    "3-D": lambda m, g: IWAE(2).loss(m, g, torch.rand(2, 3, 4)),
    "NaN": lambda m, g: IWAE(2).loss(m, g, torch.full((3, 4), float("nan"))),
    "outside {0, 1}": lambda m, g: IWAE(2).loss(m, g, torch.rand(3, 4) + 0.2),
    "batch_size 0": lambda m, g: importance_sample(m, g, X, batch_size=0),
    "chunk_size 0": lambda m, g: importance_sample(m, g, X, chunk_size=0),
    "no rows": lambda m, g: importance_sample(m, g, X[:0]),
    "negative noise": lambda m, g: LinearGaussian(torch.zeros(3, 2), torch.zeros(3), -1.0),
    "1-D x to a guide": lambda m, g: g(torch.rand(4).round()),
    "epochs -1": lambda m, g: train(m, g, X, epochs=-1),
    "ragged tuple": lambda m, g: train(m, g, (X, torch.zeros(3))),
    # data in a dtype other than the networks' (float64, or float32 in the float64 job)
    "float64 data": lambda m, g: train(m, g, X.to(OTHER_DTYPE), progress=False),
    "unknown ELBO": lambda m, g: make_elbo("renyi2"),
    "lr 0": lambda m, g: make_optim(lr=0),
    "unknown dataset": lambda m, g: load("cifar"),
    "unknown binarization": lambda m, g: load("digits", binarize="sometimes"),
    "unknown latent": lambda m, g: train_vae(latent="spiky", out="unused"),
    "latent_dim 0": lambda m, g: VAE(4, 0),
    "unknown likelihood": lambda m, g: VAE(4, 2, likelihood="poisson"),
    "K 0": lambda m, g: IWAE(0),
}


@pytest.mark.parametrize("name", list(API))
def test_bad_api_calls_raise_the_projects_error(name):
    with pytest.raises(PyroLVMError):
        API[name](*_pair())
