"""Figures of a run, written as PNG files (matplotlib, Agg backend)."""

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


def _tile(images, image_shape, ncols):
    """Arrange (N, D) images into one (rows*H, ncols*W) array with 1-pixel gaps."""
    h, w = image_shape
    n = images.shape[0]
    nrows = math.ceil(n / ncols)
    canvas = torch.ones(nrows * (h + 1) - 1, ncols * (w + 1) - 1)
    for i in range(n):
        r, c = divmod(i, ncols)
        canvas[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = images[i].reshape(h, w)
    return canvas


def image_grid(path, images, image_shape, title, ncols=8):
    """Save (N, D) images with values in [0, 1] as a grid of ``image_shape`` tiles."""
    fig, ax = plt.subplots(figsize=(ncols * 0.6 + 0.4, math.ceil(len(images) / ncols) * 0.6 + 0.6))
    ax.imshow(_tile(images.detach().cpu().clamp(0, 1), image_shape, ncols), cmap="gray_r",
              vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def reconstructions(path, originals, recons, image_shape, ncols=8):
    """Save test images (odd rows) above their reconstructions (even rows)."""
    rows = []
    for i in range(0, len(originals), ncols):
        rows += [originals[i:i + ncols], recons[i:i + ncols]]
    image_grid(path, torch.cat(rows), image_shape,
               "test images (rows 1, 3, ...) and reconstructions (rows 2, 4, ...)", ncols)


def curves(path, history, keys, ylabel, title):
    """Save per-epoch curves ``history[key]`` for each key against the epoch."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for key in keys:
        values = history.get(key) or []
        if values:
            ax.plot(range(1, len(values) + 1), values, marker="." if len(values) < 30 else None,
                    label=key.replace("_", " "))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def latent_manifold(path, decode, image_shape, n=15):
    """Save the learned 2-D manifold: images decoded on an n x n grid of latent points at the
    standard-normal quantiles (Kingma & Welling 2014, figure 4). ``decode`` maps (M, 2) -> (M, D)."""
    q = torch.linspace(0.5 / n, 1 - 0.5 / n, n)
    grid = torch.distributions.Normal(0.0, 1.0).icdf(q)
    z = torch.stack(torch.meshgrid(grid, grid.flip(0), indexing="xy"), -1).reshape(-1, 2)
    image_grid(path, decode(z), image_shape, "latent manifold (z at N(0, 1) quantiles)", ncols=n)
