"""Figures of a latent space: traversals, interpolations, and the rate-distortion plane.
PNG files via :mod:`pyrolvm.plots` (matplotlib, Agg backend)."""

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from . import plots  # noqa: E402


@torch.no_grad()
def latent_traversals(path, decode, z, image_shape, dims=None, span=3.0, n=9):
    """Save one row per latent dimension u in ``dims``: images decoded from ``z`` (shape (L,))
    with z_u replaced by n values evenly spaced in [-span, span] (standard-normal units), the
    other dimensions held fixed (Higgins et al. 2017, figure 1). ``decode`` maps (M, L) -> (M, D).
    Returns the dimensions shown."""
    dims = list(range(z.shape[-1])) if dims is None else list(dims)
    values = torch.linspace(-span, span, n, dtype=z.dtype, device=z.device)
    rows = []
    for u in dims:
        zz = z.expand(n, -1).clone()
        zz[:, u] = values
        rows.append(decode(zz))
    plots.image_grid(
        path,
        torch.cat(rows),
        image_shape,
        f"latent traversals: rows = dimensions {dims}, z_u in [-{span}, {span}]",
        ncols=n,
    )
    return dims


@torch.no_grad()
def interpolation(path, decode, z0, z1, image_shape, n=10):
    """Save the images decoded along the straight line from ``z0`` to ``z1`` (shape (L,)),
    n points including both ends."""
    t = torch.linspace(0, 1, n, dtype=z0.dtype, device=z0.device)[:, None]
    plots.image_grid(
        path,
        decode((1 - t) * z0 + t * z1),
        image_shape,
        "interpolation between the posterior means of two test images",
        ncols=n,
    )


def rate_distortion(path, points, title="rate-distortion (Alemi et al. 2018)"):
    """Save the rate-distortion plane: ``points`` is a list of dicts with ``rate``,
    ``distortion`` (nats) and ``label``; the lines R + D = const are the negative ELBO's
    level sets (dotted)."""
    fig, ax = plt.subplots(figsize=(5, 4))
    r = [p["rate"] for p in points]
    d = [p["distortion"] for p in points]
    for p in points:
        ax.scatter(p["rate"], p["distortion"], s=25)
        ax.annotate(
            p["label"],
            (p["rate"], p["distortion"]),
            fontsize=8,
            textcoords="offset points",
            xytext=(4, 4),
        )
    lo = min(x + y for x, y in zip(r, d, strict=True))
    hi = max(x + y for x, y in zip(r, d, strict=True))
    top = max(r) * 1.1 + 1
    for level in torch.linspace(lo, hi, 4).tolist():
        ax.plot([0, top], [level, level - top], ":", color="gray", lw=0.7)
    ax.set_xlim(0, top)
    ax.set_ylim(min(d) - 1, max(d) + 1)
    ax.set_xlabel("rate R = E KL(q(z|x) || p(z)) (nats)")
    ax.set_ylabel("distortion D = -E log p(x|z) (nats)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def latent_pictures(folder, model, guide, test, image_shape, kl_per_dim, device) -> list[str]:
    """latent_traversals.png (the first test image's posterior mean along the 10 dimensions
    of highest KL ``kl_per_dim``), interpolation.png (between the first two test images'
    posterior means) and, for a 2-D latent, latent_manifold.png; returns their names."""
    kl = kl_per_dim or []
    by_kl = sorted(range(len(kl)), key=lambda u: -kl[u])[:10]
    dims = by_kl if len(kl) == model.latent_dim else range(min(10, model.latent_dim))
    loc = guide.encode(test[:2])[0].detach()
    path = lambda name: os.path.join(folder, name)  # noqa: E731
    latent_traversals(path("latent_traversals.png"), model.decode, loc[0], image_shape, dims=dims)
    interpolation(path("interpolation.png"), model.decode, loc[0], loc[-1], image_shape)
    if model.latent_dim != 2:
        return ["latent_traversals.png", "interpolation.png"]
    plots.latent_manifold(path("latent_manifold.png"), model.decode, image_shape, device=device)
    return ["latent_traversals.png", "interpolation.png", "latent_manifold.png"]
