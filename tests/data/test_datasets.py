import os

import numpy as np
import pytest
import torch
from conftest import MNIST_ROOT, needs_mnist

from pyrolvm.data import check_data, load
from pyrolvm.errors import ConfigError, DataError


def test_digits_split_shapes_and_range():
    ds = load("digits")
    assert ds.train.shape == (1437, 64) and ds.test.shape == (360, 64)
    assert ds.train.dtype == torch.get_default_dtype() and ds.image_shape == (8, 8)
    assert ds.train.min() == 0 and ds.train.max() == 1
    # Stratified fixed split: every class appears in the test set in proportion (~36 each).
    counts = torch.bincount(ds.test_labels, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37
    again = load("digits")
    assert torch.equal(ds.train, again.train) and torch.equal(ds.test_labels, again.test_labels)
    assert ds.train_transform is None


def test_binarization():
    dyn = load("digits", binarize="dynamic", seed=4)
    static = load("digits", binarize="static", seed=4)
    raw = load("digits")
    # The test set is binarized once with the seed (same draw for dynamic and static).
    assert torch.equal(dyn.test, static.test)
    assert set(dyn.test.unique().tolist()) == {0.0, 1.0}
    # Dynamic: training data stays grey, each minibatch gets a fresh Bernoulli draw.
    assert torch.equal(dyn.train, raw.train)
    a, b = dyn.train_transform(dyn.train), dyn.train_transform(dyn.train)
    assert set(a.unique().tolist()) == {0.0, 1.0} and not torch.equal(a, b)
    # The draws are Bernoulli(pixel intensity): mean of the draw ~ mean intensity
    # (1437*64 pixels; standard error < 0.002).
    assert abs(a.mean() - raw.train.mean()) < 0.01
    # Static: one fixed draw, reproducible from the seed.
    assert torch.equal(static.train, load("digits", binarize="static", seed=4).train)
    assert not torch.equal(static.train, load("digits", binarize="static", seed=5).train)


def test_unknown_names():
    with pytest.raises(ConfigError, match="unknown dataset 'cifar'.*digits, mnist"):
        load("cifar")
    with pytest.raises(ConfigError, match="unknown binarization"):
        load("digits", binarize="threshold")


def test_npz_file(tmp_path):
    path = tmp_path / "mine.npz"
    np.savez(path, train=np.random.rand(30, 4), test=np.random.rand(10, 4))
    ds = load(str(path))
    assert ds.train.shape == (30, 4) and ds.test.shape == (10, 4)
    assert ds.train.dtype == torch.get_default_dtype() and ds.image_shape == (2, 2)
    np.savez(path, train=np.random.rand(30, 4))
    with pytest.raises(DataError, match="arrays named 'train' and 'test'"):
        load(str(path))
    with pytest.raises(DataError, match="no such file"):
        load(str(tmp_path / "absent.npz"))


def test_check_data():
    with pytest.raises(DataError, match="shape \\(N, D\\)"):
        check_data(torch.zeros(3, 4, 4))
    with pytest.raises(DataError, match="floating"):
        check_data(torch.zeros(3, 4, dtype=torch.int64))
    bad = torch.zeros(3, 4)
    bad[2, 1] = float("nan")
    with pytest.raises(DataError, match="1 NaN or infinite values \\(first in row 2\\)"):
        check_data(bad)
    with pytest.raises(DataError, match="not binary.*--binarize"):
        check_data(torch.full((2, 2), 0.5), binary=True)
    check_data(torch.ones(2, 2), binary=True)


def test_mnist_without_root(monkeypatch):
    monkeypatch.delenv("PYROLVM_DATA_ROOT", raising=False)
    with pytest.raises(ConfigError, match="--data-root"):
        load("mnist")


def test_mnist_root_without_files(tmp_path):
    with pytest.raises(DataError) as info:
        load("mnist", root=str(tmp_path), download=False)
    message = str(info.value)
    assert "t10k-images-idx3-ubyte" in message and "MNIST(" in message and "--data-root" in message


@needs_mnist
def test_mnist_loads_with_documented_label_counts():
    ds = load("mnist", root=MNIST_ROOT, download=False)
    assert ds.train.shape == (60000, 784) and ds.test.shape == (10000, 784)
    assert ds.train.max() == 1 and ds.train.min() == 0
    assert torch.bincount(ds.train_labels).tolist() == [
        5923,
        6742,
        5958,
        6131,
        5842,
        5421,
        5918,
        6265,
        5851,
        5949,
    ]
    assert torch.bincount(ds.test_labels).tolist() == [
        980,
        1135,
        1032,
        1010,
        982,
        892,
        958,
        1028,
        974,
        1009,
    ]
    assert os.path.isdir(os.path.join(MNIST_ROOT, "MNIST", "raw"))


def test_binarizing_data_outside_the_unit_interval_gets_one_clear_error(tmp_path):
    import numpy as np

    np.savez(tmp_path / "d.npz", train=np.random.rand(10, 4) * 255, test=np.random.rand(5, 4))
    with pytest.raises(DataError, match="must lie in \\[0, 1\\].*x / 255"):
        load(str(tmp_path / "d.npz"), binarize="dynamic")
