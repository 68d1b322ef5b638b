"""The VQ-VAE's two stages (van den Oord et al. 2017, section 3.2): the autoencoder with its
codebook, then a prior fitted to the code grids of the training images; here, what joins
them: the codes the prior is fitted to."""

from typing import Any

import torch

from ..inference import set_rng_state
from ..models import VQVAE


@torch.no_grad()
def codes_of(model: VQVAE, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """The code grids of images x (B, D), flattened, as a float tensor (B, h * w)."""
    return torch.cat([model.codes(b) for b in x.split(batch_size)]).to(x.dtype)


def training_codes(
    model: VQVAE, images: torch.Tensor, transform: Any, boundary_rng: dict
) -> torch.Tensor:
    """The code grids (N, h * w) the stage-2 prior is fitted to: the training ``images``
    binarized once by ``transform`` (``None``: as they are) from the random state
    ``boundary_rng`` (:func:`~pyrolvm.inference.rng_state` at the end of stage 1, kept by a
    run's checkpoint, so that a resumed stage 2 fits the same codes), encoded by ``model``."""
    set_rng_state(boundary_rng)
    x = transform(images) if transform is not None else images
    return codes_of(model, x)
