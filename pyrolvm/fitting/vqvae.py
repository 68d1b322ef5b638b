"""The VQ-VAE's two stages (van den Oord et al. 2017, section 3.2): the autoencoder with its
codebook, then a prior fitted to the code grids of the training images; here, what joins
them: the codes the prior is fitted to; and the two-stage model's test figures."""

import math
from typing import Any

import torch

from ..guides import empty_guide
from ..inference import importance_sample, mean_and_stderr, set_rng_state
from ..models import VQVAE, bits_per_dim, codebook_usage


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
    set_rng_state(boundary_rng, images.device)
    x = transform(images) if transform is not None else images
    return codes_of(model, x)


@torch.no_grad()
def vqvae_scores(
    model: VQVAE, prior: Any, test: torch.Tensor, num_codes: int, batch_size: int, progress=False
) -> dict:
    """Test figures of a two-stage VQ-VAE whose ``prior`` (a latent-free Pyro model of the code
    grids, the PixelCNN) is scored with :func:`~pyrolvm.guides.empty_guide`.

    Returns:
        dict: ``test_recon_nll`` (``-log p(x | z*)``), ``test_prior_nll`` (``-log p(z*)``),
        ``test_nll_bound`` (their sum, an upper bound on the NLL: ``pyrolvm.models.vqvae``
        says why) with ``test_nll_bound_stderr``, all nats per image; ``test_bits_per_dim``
        (of the bound); ``uniform_prior_nll_bound`` (recon + h w log K); the test codes'
        ``codebook_perplexity`` and ``codes_used``; ``code_grid`` (h, w).
    """
    codes = codes_of(model, test)
    recon = torch.cat([model.reconstruction_log_prob(b) for b in test.split(1000)]).double()
    prior.eval()
    options: dict[str, Any] = dict(num_samples=1, batch_size=batch_size, progress=progress)
    prior_ll = importance_sample(prior, empty_guide, codes, **options).log_likelihood
    prior.train()
    bound, se = mean_and_stderr(-(recon + prior_ll))
    counts, perplexity = codebook_usage(codes.long(), num_codes)
    return {
        "test_recon_nll": -recon.mean().item(),
        "test_prior_nll": -prior_ll.mean().item(),
        "test_nll_bound": bound,
        "test_nll_bound_stderr": se,
        "test_bits_per_dim": bits_per_dim(bound, test.shape[-1]),
        "uniform_prior_nll_bound": -recon.mean().item() + codes.shape[-1] * math.log(num_codes),
        "codebook_perplexity": perplexity.item(),
        "codes_used": int((counts > 0).sum().item()),
        "code_grid": list(model.grid_shape),
    }
