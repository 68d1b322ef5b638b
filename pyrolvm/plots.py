"""Figures of a run, written as PNG files (matplotlib, Agg backend)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def _tile(images: torch.Tensor, image_shape: Sequence[int], ncols: int) -> torch.Tensor:
    """Arrange (N, D) images into one (rows*H, ncols*W) array with 1-pixel gaps."""
    h, w = image_shape
    n = images.shape[0]
    nrows = math.ceil(n / ncols)
    canvas = torch.full((nrows * (h + 1) - 1, ncols * (w + 1) - 1), 0.15, device=images.device)
    for i in range(n):
        r, c = divmod(i, ncols)
        canvas[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = images[i].reshape(
            h, w
        )
    return canvas


def image_grid(
    path: str | os.PathLike[str],
    images: torch.Tensor,
    image_shape: Sequence[int],
    title: str,
    ncols: int = 8,
) -> None:
    """Save (N, D) images with values in [0, 1] as a grid of ``image_shape`` tiles."""
    fig, ax = plt.subplots(figsize=(ncols * 0.6 + 0.4, math.ceil(len(images) / ncols) * 0.6 + 0.6))
    ax.imshow(
        _tile(images.detach().cpu().clamp(0, 1), image_shape, ncols),
        cmap="gray_r",
        vmin=0,
        vmax=1,
        interpolation="nearest",
    )
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def reconstructions(
    path: str | os.PathLike[str],
    originals: torch.Tensor,
    recons: torch.Tensor,
    image_shape: Sequence[int],
    ncols: int = 8,
) -> None:
    """Save test images (odd rows) above their reconstructions (even rows)."""
    rows = []
    for i in range(0, len(originals), ncols):
        rows += [originals[i : i + ncols], recons[i : i + ncols]]
    image_grid(
        path,
        torch.cat(rows),
        image_shape,
        "test images (rows 1, 3, ...) and reconstructions (rows 2, 4, ...)",
        ncols,
    )


def completions(
    path: str | os.PathLike[str],
    images: torch.Tensor,
    observed: torch.Tensor,
    fills: Sequence[torch.Tensor],
    image_shape: Sequence[int],
    title: str,
) -> None:
    """Save one column per image of ``images`` (N, D): the image with its unobserved pixels
    grey (``observed``: bool, (D,) or (N, D)), then one row per tensor of ``fills`` in their
    place (the unobserved pixels' values, (N, M) for a (D,) mask, or whole images (N, D)), then
    the image itself."""
    observed = observed.expand_as(images)

    def filled(values):
        if values.shape == images.shape:
            return torch.where(observed, images, values)
        out = images.clone()
        out[~observed] = values.reshape(-1)
        return out

    rows = [filled(torch.full_like(images, 0.5)), *map(filled, fills), images]
    image_grid(path, torch.cat(rows), image_shape, title, ncols=len(images))


def curves(
    path: str | os.PathLike[str],
    history: Mapping[str, Sequence[float]],
    keys: Sequence[str],
    ylabel: str,
    title: str,
) -> None:
    """Save per-epoch curves ``history[key]`` for each key against the epoch."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for key in keys:
        values = history.get(key) or []
        if values:
            ax.plot(
                range(1, len(values) + 1),
                values,
                marker="." if len(values) < 30 else None,
                label=key.replace("_", " "),
            )
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def bound_panels(history: Mapping[str, list]) -> list[tuple[str, str, dict]]:
    """The panels of ``elbo_curve.png`` (for :func:`curve_panels`) from a training history: one
    axis of train and test ELBO when the training objective's bound is the ELBO; else one axis
    of the training bound on the training and test data (``test_bound``) and a second of the
    test ELBO, so that no axis shows two different bounds as train against test."""
    from .inference import is_elbo, trained_bound

    bound = trained_bound(dict(history))
    if all(is_elbo(n) for n in history.get("bound_name", []) if n):
        series = {"train ELBO": history["train_elbo"], "test ELBO": history.get("test_elbo")}
        return [("ELBO", "ELBO per datapoint (nats)", series)]
    series = {f"train {bound}": history["train_elbo"], f"test {bound}": history.get("test_bound")}
    return [
        (f"the training objective: {bound}", "nats per datapoint", series),
        ("ELBO (K = 1)", "ELBO per datapoint (nats)", {"test ELBO": history.get("test_elbo")}),
    ]


def curve_panels(
    path: str | os.PathLike[str],
    panels: Sequence[tuple[str, str, Mapping[str, Sequence[float]]]],
    title: str | None = None,
) -> None:
    """Save side-by-side axes of per-epoch curves: ``panels`` is a list of ``(axis title,
    y label, {legend label: values})``; each axis holds only curves of one quantity (a train
    and a test curve of the same bound, never two different bounds)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.4), squeeze=False)
    for ax, (axis_title, ylabel, series) in zip(axes[0], panels, strict=True):
        for label, values in series.items():
            values = [v for v in values if v is not None] if values else []
            if values:
                ax.plot(
                    range(1, len(values) + 1),
                    values,
                    marker="." if len(values) < 30 else None,
                    label=label,
                )
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.set_title(axis_title, fontsize=9)
        ax.grid(alpha=0.3)
        if any(series.values()):
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def latent_manifold(
    path: str | os.PathLike[str],
    decode: Callable[[torch.Tensor], torch.Tensor],
    image_shape: Sequence[int],
    n: int = 15,
    device: torch.device | str | None = None,
) -> None:
    """Save the learned 2-D manifold: images decoded on an n x n grid of latent points at the
    standard-normal quantiles (Kingma & Welling 2014, figure 4). ``decode`` maps (M, 2) to
    (M, D); the grid is made on ``device`` (default: the CPU), that of the decoder."""
    q = torch.linspace(0.5 / n, 1 - 0.5 / n, n, device="cpu")
    grid = torch.special.ndtri(q)  # the standard normal's quantile function
    z = torch.stack(torch.meshgrid(grid, grid.flip(0), indexing="xy"), -1).reshape(-1, 2)
    z = z.to(device=device, dtype=torch.get_default_dtype())
    image_grid(path, decode(z), image_shape, "latent manifold (z at N(0, 1) quantiles)", ncols=n)


def mixture_clusters(
    path: str | os.PathLike[str],
    points: torch.Tensor,
    assignment: torch.Tensor,
    locs: torch.Tensor,
    covariances: torch.Tensor,
    title: str,
    max_points: int = 3000,
) -> None:
    """Save a 2-D scatter of ``points`` (N, 2) coloured by their component ``assignment`` (N,)
    with each component's ellipses at 1 and 2 standard deviations of its 2-D marginal
    N(locs[k], covariances[k]) (locs (K, 2), covariances (K, 2, 2)); at most ``max_points``
    points are drawn (the first ones)."""
    from matplotlib.patches import Ellipse

    points, assignment = points[:max_points].cpu(), assignment[:max_points].cpu()
    k = len(locs)
    cmap = plt.get_cmap("tab10" if k <= 10 else "tab20")
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.scatter(
        points[:, 0],
        points[:, 1],
        c=[cmap(int(a) % cmap.N) for a in assignment],
        s=6,
        alpha=0.5,
        linewidths=0,
    )
    for j in range(k):
        evals, evecs = torch.linalg.eigh(covariances[j].double())
        angle = math.degrees(math.atan2(evecs[1, 1], evecs[0, 1]))
        for n_std in (1, 2):
            w, h = (2 * n_std * evals.clamp_min(0).sqrt().flip(0)).tolist()
            ax.add_patch(
                Ellipse(
                    (float(locs[j, 0]), float(locs[j, 1])),
                    w,
                    h,
                    angle=angle,
                    fill=False,
                    color=cmap(j % cmap.N),
                    lw=1.5 if n_std == 1 else 0.8,
                )
            )
        ax.plot(*locs[j].tolist(), "x", color="black", ms=5)
    ax.set_xlabel("projection 1")
    ax.set_ylabel("projection 2")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- the figures of the runs (``pyrolvm train KIND`` writes them into its run folder) --------


def model_pictures(folder, model, guide, test, image_shape, history) -> list[str]:
    """samples.png (64 means of p(x | z), z ~ p(z)), reconstructions.png (of 32 test images,
    through the guide's means) and elbo_curve.png (:func:`bound_panels` of the training
    ``history``) of a VAE-like pair; returns their names."""
    names = ["samples.png", "reconstructions.png", "elbo_curve.png"]
    if getattr(model, "decoder_kind", "mlp") == "pixelcnn":
        what = "p(x_d = 1 | x_<d, z) along one draw, z ~ p(z)"
    else:
        what = "mean of p(x | z), z ~ p(z)"
    path = lambda name: os.path.join(folder, name)  # noqa: E731
    image_grid(path(names[0]), model.sample(64), image_shape, f"samples from the model ({what})")
    with torch.no_grad():
        x = test[:32]
        recon = model.decode(guide.encode(x)[0])
    reconstructions(path(names[1]), x, recon, image_shape)
    curve_panels(path(names[2]), bound_panels(history))
    return names


def class_samples(path, sample, classes, like, image_shape, title, per_class=10) -> None:
    """Save ``per_class`` images per class, one row per class: ``sample(labels, n)`` of the
    one-hot ``labels`` (C, C) (of ``like``'s dtype and device) gives (n, C, D)."""
    labels = torch.nn.functional.one_hot(torch.arange(classes, device=like.device), classes)
    samples = sample(labels.to(like.dtype), per_class)  # (n, C, D)
    grid = samples.transpose(0, 1).reshape(-1, like.shape[-1])
    image_grid(path, grid, image_shape, title, ncols=per_class)


def quadrant_completions(path, images, mask, baseline, model, given, image_shape, n=4) -> None:
    """Save completions of ``images`` whose pixels ``mask`` are given: the input, the
    baseline's prediction, ``n`` CVAE samples (means of p(y | x, z), z ~ p(z | x)), the
    truth."""
    x = images[:, mask]
    fills = [baseline.predict(x), *model.sample(x, n)]
    title = f"{given} quadrant(s) given: input / baseline / {n} CVAE samples / truth"
    completions(path, images, mask, fills, image_shape, title)


def halves_completions(folder, model, guide, images, top, image_shape, n=4) -> list[str]:
    """top_to_bottom.png and bottom_to_top.png: ``images`` completed from one half (``top``,
    a bool mask (D,)) ``n`` times, the other half's mean of p(half | z), z ~ q(z | half)."""
    for given, other in (("top", "bottom"), ("bottom", "top")):
        args = (images[:, top], None) if given == "top" else (None, images[:, ~top])
        with torch.no_grad():
            loc, scale = guide.encode(*args)
            noise = torch.randn((n, *loc.shape), dtype=loc.dtype, device=loc.device)
            fills = list(model.decode(loc + scale * noise)[1 if given == "top" else 0])
        title = f"{given} -> {other}: the {given} half / {n} completions, "
        title += f"z ~ q(z | {given}) / truth"
        observed = top if given == "top" else ~top
        path = os.path.join(folder, f"{given}_to_{other}.png")
        completions(path, images, observed, fills, image_shape, title)
    return ["top_to_bottom.png", "bottom_to_top.png"]


def mixture_pictures(folder, model, params, history, xtest, pca, image_shape, title):
    """clusters.png (``xtest`` on its first two axes coloured by MAP component, with each
    component's 2-D marginal ellipses; ``title`` its first line), component_means.png (the
    means mapped back to pixels by ``pca``) and loglik_curve.png (``history``) of a Gaussian
    mixture ``model`` with values ``params``; returns their names."""
    path = lambda name: os.path.join(folder, name)  # noqa: E731
    names = ["clusters.png"] if xtest.shape[-1] >= 2 else []
    if names:
        z, covs = model.assign(xtest, params, temperature=0), model.covariances(params)
        title += "; ellipses: 1 and 2 sd of each component"
        locs = params["locs"][:, :2]
        mixture_clusters(path(names[0]), xtest[:, :2], z, locs, covs[:, :2, :2], title)
    means = pca.inverse_transform(params["locs"].double().numpy())
    order = params["weights"].argsort(descending=True)
    means = torch.as_tensor(means, dtype=torch.float32)[order]
    title = "component means in pixel space, by decreasing weight"
    image_grid(path("component_means.png"), means, image_shape, title, ncols=min(10, len(means)))
    title, ylabel = "training log-likelihood (exact)", "mean log-likelihood per point (nats)"
    curves(path("loglik_curve.png"), history, ["train_log_likelihood"], ylabel, title)
    return names + ["component_means.png", "loglik_curve.png"]
