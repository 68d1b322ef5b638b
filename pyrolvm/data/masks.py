"""Missing-data masks: which pixels of each image are observed.

A mask is a bool tensor of shape (N, D), ``True`` where the pixel is observed, drawn once from
a seeded generator so that a run and its evaluation see the same missing pixels. The three
patterns are those of the missing-data VAE literature:

* ``"random"``: missing completely at random (MCAR), each pixel independently missing with
  probability ``rate`` (Mattei & Frellsen 2019, "MIWAE", section 4.1; Nazábal et al. 2020,
  "HI-VAE", section 5);
* ``"square"``: one square hole per image of side ``round(sqrt(rate) * min(H, W))`` at a
  uniformly random position (the occlusion experiments of inpainting papers);
* ``"half"``: one half of each image missing (top, bottom, left or right, uniformly), so
  ``rate`` is 0.5.
"""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError

#: The ``kind`` choices of :func:`make_mask`.
MASKS: tuple[str, ...] = ("random", "square", "half")


def make_mask(
    kind: str,
    num: int,
    image_shape: tuple[int, ...],
    rate: float = 0.5,
    seed: int = 0,
) -> torch.Tensor:
    """Draw ``num`` masks of one pattern.

    Args:
        kind (str): ``"random"``, ``"square"`` or ``"half"`` (see the module docstring).
        num (int): N, the number of images.
        image_shape (tuple of int): (H, W) of one image; D = H * W.
        rate (float): the share of missing pixels, in [0, 1] (``"random"``: per pixel;
            ``"square"``: the square's area; ``"half"``: must be 0.5).
        seed (int): seed of the generator the masks are drawn from.

    Returns:
        torch.Tensor: bool, shape (N, D), ``True`` where observed.

    Raises:
        ConfigError: unknown kind, a rate outside [0, 1], ``"half"`` with a rate other than 0.5,
            or an image shape that is not (H, W).
    """
    if kind not in MASKS:
        raise ConfigError(f"unknown mask {kind!r}: choose one of {', '.join(MASKS)}")
    rate = float(rate)
    if not 0.0 <= rate <= 1.0:
        raise ConfigError(f"the missing rate must lie in [0, 1], got {rate!r}")
    if len(image_shape) != 2:
        raise ConfigError(f"masks are drawn for (H, W) images, got image shape {image_shape}")
    h, w = (int(s) for s in image_shape)
    gen = torch.Generator().manual_seed(int(seed))
    if kind == "random":
        return torch.rand(num, h * w, generator=gen) >= rate
    rows = torch.arange(h).view(1, h, 1)
    cols = torch.arange(w).view(1, 1, w)
    if kind == "square":
        side = round(math.sqrt(rate) * min(h, w))
        top = torch.randint(0, h - side + 1, (num, 1, 1), generator=gen)
        left = torch.randint(0, w - side + 1, (num, 1, 1), generator=gen)
        hole = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
        return (~hole).reshape(num, h * w)
    if rate != 0.5:
        raise ConfigError(f"--mask half hides half of each image: drop --missing-rate {rate:g}")
    side = torch.randint(0, 4, (num, 1, 1), generator=gen)
    hole = torch.where(
        side == 0,
        rows < h // 2,
        torch.where(
            side == 1, rows >= h // 2, torch.where(side == 2, cols < w // 2, cols >= w // 2)
        ),
    )
    return (~hole).reshape(num, h * w)


def quadrant_mask(image_shape: tuple[int, ...], num_inputs: int) -> torch.Tensor:
    """The input pixels of the quadrant-completion task of Sohn, Lee & Yan (2015), section
    4.1, with the quadrants of Pyro's CVAE example: 1 input quadrant is the bottom-left one,
    2 are the left half, 3 all but the bottom-right quadrant; the other pixels are the output
    y to predict.

    Returns:
        torch.Tensor: bool, shape (D,), ``True`` at the input pixels x.

    Raises:
        ConfigError: ``num_inputs`` not 1, 2 or 3, or an image shape that is not (H, W).
    """
    if num_inputs not in (1, 2, 3):
        raise ConfigError(f"the number of input quadrants must be 1, 2 or 3, got {num_inputs!r}")
    if len(image_shape) != 2:
        raise ConfigError(f"quadrants need (H, W) images, got image shape {image_shape}")
    h, w = (int(s) for s in image_shape)
    rows, cols = torch.arange(h).view(h, 1), torch.arange(w).view(1, w)
    bottom_left = (rows >= h // 2) & (cols < w // 2)
    inputs = {
        1: bottom_left,
        2: (cols < w // 2).expand(h, w),
        3: ~((rows >= h // 2) & (cols >= w // 2)),
    }[num_inputs]
    return inputs.reshape(h * w)


__all__ = ["MASKS", "make_mask", "quadrant_mask"]


def mask_columns(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The column indices where the bool (D,) ``mask`` is True and where it is False (int64,
    on its device), found once: ``x[:, inside]`` with them costs no host synchronisation,
    where ``x[:, mask]`` counts the mask's True entries (a ``nonzero``) on every call."""
    return mask.nonzero().squeeze(1), (~mask).nonzero().squeeze(1)
