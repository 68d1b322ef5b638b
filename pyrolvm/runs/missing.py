"""The missing data of ``pyrolvm train vae --mask ...`` (Mattei & Frellsen 2019, "MIWAE",
sections 3-4): the run's masks, the imputation scores (:mod:`pyrolvm.fitting.scores`) and
the figure."""

import os

from .. import plots
from ..data import make_mask
from ..fitting.scores import imputation_scores, mean_imputation

__all__ = ["TEST_MASK_SEED", "mean_imputation", "missing_metrics", "run_masks"]

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


def missing_metrics(model, guide, data, masks, cfg):
    """:func:`~pyrolvm.fitting.scores.imputation_scores` with ``cfg.eval_samples`` samples,
    seeded by ``cfg.seed``, with ``mask`` and ``missing_rate``."""
    options = (cfg.eval_samples, cfg.eval_batch_size, cfg.seed, cfg.progress)
    scores, result = imputation_scores(model, guide, data, masks, *options)
    return {"mask": cfg.mask, "missing_rate": cfg.missing_rate} | scores, result


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
