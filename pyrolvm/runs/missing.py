"""The missing-data part of a VAE run (``pyrolvm train vae --mask ... --missing-rate ...``):
the run's masks, the imputation figures of merit and the imputation figure.

Training and evaluation of a VAE on partly observed images follow Mattei & Frellsen (2019),
"MIWAE", sections 3-4: the likelihood scores the observed pixels only, the encoder reads the
zero-imputed image and the mask, the test log-likelihood is the importance-sampled
log p(x_obs), and the missing pixels are imputed by self-normalized importance sampling.
"""

import os

import pyro
import torch

from .. import plots
from ..data import make_mask
from ..inference import imputation_error, impute

#: Offset of the test masks' seed from the run's seed (the training masks use the seed).
TEST_MASK_SEED = 1_000_003
#: Test images shown in imputation.png.
FIGURE_IMAGES = 8


def run_masks(cfg, data):
    """The run's (training mask, test mask), bool of shapes (N_train, D) and (N_test, D),
    ``True`` where observed, drawn from ``cfg.mask`` and ``cfg.missing_rate`` with seeds
    ``cfg.seed`` and ``cfg.seed + TEST_MASK_SEED`` (on the CPU, then moved to the data's
    device); ``None`` for a run without missing data."""
    if cfg.mask == "none":
        return None
    shape, device = data.image_shape, data.train.device
    return (
        make_mask(cfg.mask, len(data.train), shape, cfg.missing_rate, seed=cfg.seed).to(device),
        make_mask(
            cfg.mask, len(data.test), shape, cfg.missing_rate, seed=cfg.seed + TEST_MASK_SEED
        ).to(device),
    )


def mean_imputation(train, train_mask):
    """Per-pixel mean of the observed training pixels, shape (D,) (0.5 at a pixel never
    observed): the baseline imputation."""
    count = train_mask.sum(0)
    total = (train * train_mask).sum(0)
    return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, 0.5))


def missing_metrics(model, guide, data, masks, cfg):
    """Imputation of the test set's missing pixels by self-normalized importance sampling with
    ``cfg.eval_samples`` samples (:func:`pyrolvm.inference.impute`), seeded by ``cfg.seed``,
    against the true (binarized) pixels and against mean imputation.

    Returns:
        (dict, ImputationResult): the dict holds ``imputation_mse`` and
        ``mean_imputation_mse`` (mean squared error over missing test pixels; the Brier score
        for binary pixels) with their ``*_stderr`` (over test images), ``missing_share`` (share
        of missing test pixels), ``test_all_missing`` (test images with no observed pixel:
        they contribute log p(x_obs) = 0), ``mask`` and ``missing_rate``.
    """
    train_mask, test_mask = masks
    pyro.set_rng_seed(cfg.seed)
    options = dict(batch_size=cfg.eval_batch_size, progress=cfg.progress)
    result = impute(model, guide, data.test, test_mask, num_samples=cfg.eval_samples, **options)
    mse, mse_se = imputation_error(result.imputed, data.test, test_mask)
    baseline = mean_imputation(data.train, train_mask).expand_as(data.test)
    by_mean = torch.where(test_mask, data.test, baseline)
    mean_mse, mean_se = imputation_error(by_mean, data.test, test_mask)
    metrics = {"mask": cfg.mask, "missing_rate": cfg.missing_rate}
    metrics["missing_share"] = (~test_mask).double().mean().item()
    metrics["test_all_missing"] = int((~test_mask.any(-1)).sum().item())
    metrics |= {"imputation_mse": mse, "imputation_mse_stderr": mse_se}
    return metrics | {
        "mean_imputation_mse": mean_mse,
        "mean_imputation_mse_stderr": mean_se,
    }, result


def imputation_figure(folder, data, masks, result):
    """Write imputation.png: masked test inputs (missing pixels grey), their SNIS imputations
    and the truth; returns the file name."""
    n, title = FIGURE_IMAGES, "masked input (missing: grey) / SNIS imputation / truth"
    fills = [result.imputed[:n]]
    path = os.path.join(folder, "imputation.png")
    plots.completions(path, data.test[:n], masks[1][:n], fills, data.image_shape, title)
    return "imputation.png"


#: The rows of a missing-data run.
ROWS = (
    (
        "missing pixels (test)",
        "{missing_share:.1%} ({mask} mask), {test_all_missing} images with none observed",
    ),
    (
        "imputation MSE (SNIS / mean)",
        "{imputation_mse:.4f} ± {imputation_mse_stderr:.4f} / "
        "{mean_imputation_mse:.4f} ± {mean_imputation_mse_stderr:.4f}",
    ),
)
