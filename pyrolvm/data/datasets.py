"""Dataset loaders: real handwritten digits as (N, D) float tensors in [0, 1], with labels.

Two sources:

* ``digits``: scikit-learn's 8x8 handwritten digits (1797 images, UCI optical recognition of
  handwritten digits; pixel values 0..16 scaled to [0, 1]). Shipped with scikit-learn, so it
  needs no download; the embedded default. Split into 1437 training and 360 test images,
  stratified by label, with ``sklearn.model_selection.train_test_split(random_state=0)``.
* ``mnist``: MNIST (LeCun et al. 1998), 60,000 training and 10,000 test images of 28x28 pixels,
  read by ``torchvision.datasets.MNIST`` from a data root (argument, or the environment
  variable ``PYROLVM_DATA_ROOT``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import ConfigError, DataError

#: The dataset names :func:`load` knows (besides the path of an ``.npz`` file).
DATASETS: tuple[str, ...] = ("digits", "mnist")
#: The ``binarize`` choices of :func:`load`.
BINARIZATIONS: tuple[str, ...] = ("dynamic", "static", "none")
DIGITS_SPLIT_SEED = 0
DIGITS_TEST_SIZE = 360
DATA_ROOT_ENV = "PYROLVM_DATA_ROOT"
MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@dataclass
class Dataset:
    """Train and test images of one dataset, flattened, with labels.

    Attributes:
        name (str): ``"digits"`` or ``"mnist"``.
        train (torch.Tensor): shape (N_train, D), torch's default dtype (float32 unless
            changed), values in [0, 1] (in {0, 1} after static binarization).
        test (torch.Tensor): the same dtype, shape (N_test, D); binarized once with a fixed
            seed under ``"dynamic"`` and ``"static"`` binarization so that evaluation is
            reproducible.
        train_labels (torch.Tensor): int64, shape (N_train,), digit classes 0..9.
        test_labels (torch.Tensor): int64, shape (N_test,).
        image_shape (tuple): (height, width) of one image; ``D = height * width``.
        binarize (str): ``"dynamic"``, ``"static"`` or ``"none"``.
    """

    name: str
    train: torch.Tensor
    test: torch.Tensor
    train_labels: torch.Tensor
    test_labels: torch.Tensor
    image_shape: tuple[int, ...]
    binarize: str = "none"
    _seed: int = field(default=0, repr=False)

    @property
    def data_dim(self) -> int:
        """Number of pixels D of one flattened image."""
        return self.train.shape[-1]

    @property
    def train_transform(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """The per-minibatch transform for training. Under ``"dynamic"`` binarization a fresh
        Bernoulli draw of every pixel each time a minibatch is drawn (Burda et al. 2016,
        section 5.1), else ``None``."""
        return torch.bernoulli if self.binarize == "dynamic" else None

    def to(self, device: torch.device | str) -> Dataset:
        """A copy with images and labels on ``device`` (moved once, so that training and
        evaluation index them there); ``self`` when they are already there."""
        if self.train.device == torch.device(device):
            return self
        return dataclasses.replace(
            self,
            train=self.train.to(device),
            test=self.test.to(device),
            train_labels=self.train_labels.to(device),
            test_labels=self.test_labels.to(device),
        )


def load(
    name: str = "digits",
    root: str | os.PathLike[str] | None = None,
    binarize: str = "none",
    seed: int = 0,
    download: bool = True,
) -> Dataset:
    """Load a dataset by name as flattened float tensors in [0, 1].

    Args:
        name (str): ``"digits"`` (embedded, no download), ``"mnist"``, or the path of an ``.npz``
            file with arrays ``train`` and ``test`` of shape (N, D) and values in [0, 1]
            (optional: ``train_labels``, ``test_labels``, ``image_shape``).
        root (str or None): for ``"mnist"``, the folder that
            ``torchvision.datasets.MNIST(root=...)`` reads (it holds ``MNIST/raw/``); defaults to
            ``$PYROLVM_DATA_ROOT``.
        binarize (str): ``"dynamic"`` (fresh Bernoulli draw of each training minibatch; the test
            set is binarized once with ``seed``), ``"static"`` (train and test binarized once with
            ``seed``) or ``"none"``.
        seed (int): seed of the fixed binarization draws (the digits split is fixed separately).
        download (bool): for ``"mnist"``, try to download the files when they are absent.

    Returns:
        Dataset: train/test tensors of shape (N, D) and labels of shape (N,).

    Raises:
        ConfigError: unknown dataset or binarization name, or ``"mnist"`` without a root.
        DataError: the data root does not hold the MNIST files and they cannot be downloaded;
            an .npz file that is unreadable or of the wrong shapes or dtypes; data outside
            [0, 1] to binarize.
    """
    if name not in DATASETS and not str(name).endswith(".npz"):
        raise ConfigError(
            f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}, or give an .npz file"
        )
    if binarize not in BINARIZATIONS:
        raise ConfigError(
            f"unknown binarization {binarize!r}: choose one of {', '.join(BINARIZATIONS)}"
        )
    if name == "digits":
        train, test, ytrain, ytest, shape = _load_digits()
    elif name.endswith(".npz"):
        train, test, ytrain, ytest, shape = _load_npz(name)
    else:
        train, test, ytrain, ytest, shape = _load_mnist(root, download)
    if binarize != "none":
        for x, which in ((train, "training"), (test, "test")):
            if not ((x >= 0) & (x <= 1)).all():
                raise DataError(
                    f"binarization draws each pixel from Bernoulli(intensity), so the {which} "
                    f"data must lie in [0, 1] (it spans {x.min().item():g} to "
                    f"{x.max().item():g}): rescale it (e.g. x / 255) or use binarize='none'"
                )
        gen = torch.Generator().manual_seed(seed)
        test = torch.bernoulli(test, generator=gen)
        if binarize == "static":
            train = torch.bernoulli(train, generator=gen)
    return Dataset(name, train, test, ytrain, ytest, shape, binarize, seed)


def _load_digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits: Any = load_digits()  # a Bunch (typed as Bunch | tuple)
    x = torch.as_tensor(digits.data, dtype=torch.get_default_dtype()) / 16.0
    y = torch.as_tensor(digits.target, dtype=torch.int64)
    idx_train, idx_test = train_test_split(
        torch.arange(len(y)).numpy(),
        test_size=DIGITS_TEST_SIZE,
        random_state=DIGITS_SPLIT_SEED,
        stratify=y.numpy(),
    )
    idx_train, idx_test = torch.as_tensor(idx_train), torch.as_tensor(idx_test)
    return x[idx_train], x[idx_test], y[idx_train], y[idx_test], (8, 8)


def _load_npz(path):
    import numpy as np

    if not os.path.exists(path):
        raise DataError(f"no such file: {path!r}")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = dict(f)
    except Exception as exc:  # not a zip, truncated, object arrays: one clear error
        raise DataError(
            f"{path!r} is not a readable .npz file of numeric arrays "
            f"({type(exc).__name__}); write it with numpy.savez"
        ) from None
    if "train" not in arrays or "test" not in arrays:
        raise DataError(
            f"{path!r} must hold arrays named 'train' and 'test' of shape (N, D); it has "
            f"{sorted(arrays)}"
        )
    for which in ("train", "test"):
        if arrays[which].dtype.kind not in "biuf":
            raise DataError(
                f"array {which!r} of {path!r} must be numeric, got dtype {arrays[which].dtype}"
            )
    dtype = torch.get_default_dtype()
    train = torch.as_tensor(arrays["train"]).to(dtype)
    test = torch.as_tensor(arrays["test"]).to(dtype)
    for x, which in ((train, "train"), (test, "test")):
        if x.dim() != 2 or 0 in x.shape:
            raise DataError(
                f"array {which!r} of {path!r} must have shape (N, D) with N, D >= 1, "
                f"got {tuple(x.shape)}"
            )
    if train.shape[-1] != test.shape[-1]:
        raise DataError(
            f"the train and test arrays of {path!r} must have the same width D, got "
            f"{train.shape[-1]} and {test.shape[-1]}"
        )
    d = train.shape[-1]

    def labels(key, n):
        if key not in arrays:
            return torch.zeros(n, dtype=torch.int64)
        y = arrays[key]
        if y.dtype.kind not in "biu" or y.shape != (n,) or (n and y.min() < 0):
            raise DataError(
                f"array {key!r} of {path!r} must hold {n} non-negative integer "
                f"labels, got dtype {y.dtype} and shape {y.shape}"
            )
        return torch.as_tensor(y).long()

    side = int(round(d**0.5))
    shape = (
        tuple(int(s) for s in arrays["image_shape"])
        if "image_shape" in arrays
        else ((side, side) if side * side == d else (1, d))
    )
    return train, test, labels("train_labels", len(train)), labels("test_labels", len(test)), shape


def mnist_help(root: str | os.PathLike[str] | None) -> str:
    """The message telling a user how to get the MNIST files into ``root``."""
    raw = os.path.join(str(root), "MNIST", "raw")
    files = "\n".join(f"    {raw}/{f}" for f in MNIST_FILES)
    return (
        f"MNIST files not found under data root {root!r}. Expected (uncompressed):\n{files}\n"
        "Get them on a machine with internet access with\n"
        '    python -c "from torchvision.datasets import MNIST; '
        f'MNIST({str(root)!r}, download=True)"\n'
        "(or copy the four files from http://yann.lecun.com/exdb/mnist/ there and gunzip them),\n"
        f"then pass --data-root {root} or set {DATA_ROOT_ENV}."
    )


def _load_mnist(root, download):
    root = root if root is not None else os.environ.get(DATA_ROOT_ENV)
    if not root:
        raise ConfigError(
            f"the mnist dataset needs a data root: pass --data-root DIR (Python: root=DIR) or "
            f"set {DATA_ROOT_ENV}; DIR is the folder that holds MNIST/raw/"
        )
    from torchvision.datasets import MNIST

    raw = os.path.join(root, "MNIST", "raw")
    present = all(os.path.exists(os.path.join(raw, f)) for f in MNIST_FILES)
    if not present and not download:
        raise DataError(mnist_help(root))
    try:
        train = MNIST(root, train=True, download=download and not present)
        test = MNIST(root, train=False, download=False)
    except Exception as exc:  # network errors, truncated files, permission errors
        raise DataError(
            f"{mnist_help(root)}\n(the attempt to read or download failed: {exc})"
        ) from exc

    def flat(ds):
        return ds.data.reshape(len(ds.data), -1).to(
            torch.get_default_dtype()
        ) / 255.0, ds.targets.long()

    (xtr, ytr), (xte, yte) = flat(train), flat(test)
    return xtr, xte, ytr, yte, (28, 28)


def check_data(x: torch.Tensor, name: str = "data", binary: bool = False) -> None:
    """Check that ``x`` can be fed to a model: a 2-D floating tensor of finite values.

    Args:
        x (torch.Tensor): shape (N, D).
        name (str): what to call the tensor in the message.
        binary (bool): also require every value to be 0 or 1 (the support of a Bernoulli
            likelihood).

    Raises:
        DataError: with a message that says what is wrong and what to do.
    """
    if not isinstance(x, torch.Tensor):
        raise DataError(f"{name} must be a torch.Tensor of shape (N, D), got {type(x).__name__}")
    if x.dim() != 2:
        raise DataError(f"{name} must have shape (N, D) (flattened images), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise DataError(f"{name} must be a floating tensor (e.g. x.float() / 255), got {x.dtype}")
    bad = ~torch.isfinite(x)
    if bad.any():
        rows = bad.any(-1).nonzero().flatten()
        raise DataError(
            f"{name} holds {int(bad.sum())} NaN or infinite values (first in row {int(rows[0])}); "
            "remove or impute those rows"
        )
    if binary and not ((x == 0) | (x == 1)).all():
        raise DataError(
            f"{name} is not binary, but a Bernoulli likelihood needs values in {{0, 1}}: "
            "binarize it (--binarize dynamic or static) or use --likelihood gaussian"
        )
