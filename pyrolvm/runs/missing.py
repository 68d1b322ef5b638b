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
    result = impute(
        model,
        guide,
        data.test,
        test_mask,
        num_samples=cfg.eval_samples,
        batch_size=cfg.eval_batch_size,
        progress=cfg.progress,
    )
    mse, mse_se = imputation_error(result.imputed, data.test, test_mask)
    baseline = mean_imputation(data.train, train_mask).expand_as(data.test)
    mean_mse, mean_se = imputation_error(
        torch.where(test_mask, data.test, baseline), data.test, test_mask
    )
    metrics = {
        "mask": cfg.mask,
        "missing_rate": cfg.missing_rate,
        "missing_share": (~test_mask).double().mean().item(),
        "test_all_missing": int((~test_mask.any(-1)).sum().item()),
        "imputation_mse": mse,
        "imputation_mse_stderr": mse_se,
        "mean_imputation_mse": mean_mse,
        "mean_imputation_mse_stderr": mean_se,
    }
    return metrics, result


def imputation_figure(folder, data, masks, result):
    """Write imputation.png: rows of masked test inputs (missing pixels at 0.5 grey),
    their SNIS imputations and the truth; returns the file name."""
    n = FIGURE_IMAGES
    x, mask = data.test[:n], masks[1][:n]
    shown = torch.where(mask, x, torch.full_like(x, 0.5))
    rows = torch.cat([shown, result.imputed[:n], x])
    name = "imputation.png"
    plots.image_grid(
        os.path.join(folder, name),
        rows,
        data.image_shape,
        "masked input (missing: grey) / SNIS imputation / truth",
        ncols=n,
    )
    return name


def missing_rows(metrics):
    """Summary rows of a missing-data run (none without missing data)."""
    if "imputation_mse" not in metrics:
        return []
    return [
        (
            "missing pixels (test)",
            f"{100 * metrics['missing_share']:.1f} % ({metrics['mask']} mask), "
            f"{metrics['test_all_missing']} images with none observed",
        ),
        (
            "imputation MSE (SNIS / mean)",
            f"{metrics['imputation_mse']:.4f} ± {metrics['imputation_mse_stderr']:.4f} / "
            f"{metrics['mean_imputation_mse']:.4f} ± {metrics['mean_imputation_mse_stderr']:.4f}",
        ),
    ]
