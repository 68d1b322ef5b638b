"""Property-based tests (hypothesis): random command lines, shapes, dtypes, NaN/inf, empty
data and sizes at the public API either work or raise the project's error
(:class:`~pyrolvm.errors.PyroLVMError`); none escapes as a raw PyTorch or Pyro exception,
and the command line always ends with status 0 or 2, no traceback, at most 2 lines of error."""

import contextlib
import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyrolvm.cli import parse
from pyrolvm.data import load
from pyrolvm.errors import PyroLVMError
from pyrolvm.guides import AmortizedNormal
from pyrolvm.inference import IWAE, importance_sample, make_optim, train
from pyrolvm.models import VAE
from pyrolvm.runs import RUNS

FAST = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

values = st.one_of(
    st.integers(-3, 5).map(str),
    st.sampled_from(
        [
            "1e9",
            "-1",
            "0",
            "nan",
            "inf",
            "-inf",
            "0.5",
            "1.5",
            "",
            "x",
            "200,200",
            "3,-1",
            "gaussian",
            "dreg",
            "concrete",
            "none",
        ]
    ),
    st.text(max_size=6),
)


def flags(kind):
    names = sorted("--" + f.name.replace("_", "-") for f in dataclasses.fields(RUNS[kind].config))
    names += ["--no-reparam", "--sample-labels", "--no-progress", "--no-aux-loss", "--bogus"]
    return st.lists(st.tuples(st.sampled_from(names), st.lists(values, max_size=2)), max_size=4)


@pytest.mark.parametrize("kind", sorted(RUNS))
def test_random_command_lines_parse_and_validate_or_fail_cleanly(kind, capsys):
    @FAST
    @given(flags(kind))
    def check(pairs):
        argv = ["train", kind] + [tok for flag, vals in pairs for tok in (flag, *vals)]
        try:
            config = parse(argv)
        except SystemExit as exc:
            assert exc.code in (0, 2)
            err = capsys.readouterr().err
            assert "Traceback" not in err
            assert exc.code == 0 or len(err.splitlines()) <= 2, err  # a malformed line: 2 lines
            return
        with contextlib.suppress(PyroLVMError):
            config.resolved()

    check()


def small_pair(dtype=torch.float32):
    torch.manual_seed(0)
    model = VAE(4, 2, (8,)).to(dtype)
    guide = AmortizedNormal(4, 2, (8,)).to(dtype)
    return model, guide


tensors = st.builds(
    lambda shape, dtype, fill, special: _tensor(shape, dtype, fill, special),
    st.lists(st.integers(0, 5), min_size=0, max_size=3),
    st.sampled_from([torch.float32, torch.float64, torch.int64, torch.bool]),
    st.sampled_from(["binary", "uniform", "wide"]),
    st.sampled_from([None, "nan", "inf"]),
)


def _tensor(shape, dtype, fill, special):
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(shape, generator=gen, dtype=torch.float64)
    x = x.round() if fill == "binary" else (x * 10 - 5 if fill == "wide" else x)
    if special and x.numel():
        x.view(-1)[0] = float(special)
    return x.to(dtype) if dtype != torch.bool else x > 0.5


@FAST
@given(tensors, st.integers(-1, 4), st.integers(-1, 3))
def test_importance_sample_on_random_data_works_or_raises_ours(x, k, batch):
    model, guide = small_pair()
    try:
        result = importance_sample(model, guide, x, num_samples=k, batch_size=batch)
    except PyroLVMError:
        return
    assert x.shape[-1] == 4 and x.dim() == 2 and torch.isfinite(result.log_likelihood).all()


@FAST
@given(tensors, st.integers(-1, 2), st.integers(-1, 3))
def test_train_on_random_data_works_or_raises_ours(x, epochs, batch):
    model, guide = small_pair()
    try:
        train(
            model,
            guide,
            x,
            IWAE(2),
            make_optim(1e-3),
            epochs=epochs,
            batch_size=batch,
            progress=False,
            handle_signals=False,
        )
    except PyroLVMError:
        return
    assert epochs == 0 or (x.dim() == 2 and x.shape[-1] == 4)  # 0 epochs touch no data


@FAST
@given(
    st.lists(st.integers(0, 4), min_size=1, max_size=3),
    st.lists(st.integers(0, 4), min_size=1, max_size=3),
    st.sampled_from(["f4", "i8", "U3", "O", "bool"]),
    st.booleans(),
)
def test_npz_files_of_any_content_load_or_raise_ours(
    tmp_path_factory, train_shape, test_shape, dtype, labels
):
    path = tmp_path_factory.mktemp("npz") / "d.npz"
    arrays = {"train": np.zeros(train_shape, dtype=dtype), "test": np.zeros(test_shape, dtype)}
    if labels:
        arrays["train_labels"] = np.arange(train_shape[0]) - 1
    np.savez(path, **arrays)
    try:
        data = load(str(path))
    except PyroLVMError:
        return
    assert data.train.dim() == 2 and data.train.shape[1] == data.test.shape[1]


def test_a_text_file_named_npz_gets_one_clear_error(tmp_path):
    path = tmp_path / "d.npz"
    path.write_text("not an archive")
    with pytest.raises(PyroLVMError, match="not a readable .npz"):
        load(str(path))


@pytest.mark.parametrize(
    "x, message",
    [
        (torch.rand(3, 5), "has 5 dimensions per datapoint but the model was built for 4"),
        (torch.rand(2, 3, 4), "must have shape (B, 4)"),
        (torch.rand(4), "one datapoint: x.unsqueeze(0)"),
        (torch.full((2, 4), float("nan"), dtype=torch.float32), "NaN or infinite"),
        (torch.rand(2, 4, dtype=torch.float32) + 0.1, "is not binary"),
        (
            torch.rand(2, 4).double().round(),
            "dtype torch.float64 but the networks use torch.float32",
        ),
    ],
)
def test_bad_data_at_the_model_gets_one_clear_error(x, message):
    model, guide = small_pair()
    with pytest.raises(PyroLVMError) as info:
        IWAE(2).loss(model, guide, x)
    assert message in str(info.value)
