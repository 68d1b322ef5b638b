"""VQ-VAE: a discrete codebook bottleneck, and its learned prior (van den Oord, Vinyals &
Kavukcuoglu 2017, "Neural Discrete Representation Learning").

An encoder maps x to a grid of vectors ``z_e(x)`` (shape (h, w, d)); each is replaced by its
nearest code of a codebook ``e`` of K vectors (``k = argmin_j ||z_e - e_j||``, equation 2),
the decoder maps the quantized grid ``z_q`` to p(x | z_q). Quantization has no gradient, so
the decoder's gradient with respect to ``z_q`` is copied to ``z_e`` (straight-through,
section 3.2). Stage-1 loss (equation 3), per image:

    -log p(x | z_q(x)) + ||sg[z_e(x)] - e||^2 + beta ||z_e(x) - sg[e]||^2

(codebook and commitment terms, sums over the grid; ``sg`` stops gradients).

**This is not an ELBO with a learned prior.** With a deterministic one-hot posterior
q(z | x) and a *uniform* prior over the K^(h w) grids, the ELBO is
``log p(x | z_q(x)) - h w log K``: the KL is a constant, so stage 1 only trains an
autoencoder (the two squared-error terms are not part of any bound). Only in stage 2, when a
prior p(z) (here a :class:`~pyrolvm.models.PixelCNN` over the code grid) is fitted to the
training codes, does the two-stage model have a likelihood, bounded by

    log p(x) = log sum_z p(z) p(x | z) >= log p(z*(x)) + log p(x | z*(x)),

one term of the sum at the encoder's grid ``z*(x)`` (equivalently the ELBO with the
deterministic posterior). The run reports this bound in nats and bits per dimension.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ..checks import check_batch
from ..errors import ConfigError


def quantize(
    z_e: torch.Tensor, codebook: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Nearest-neighbour quantization with the straight-through gradient (van den Oord et al.
    2017, equations 1-2 and section 3.2).

    Args:
        z_e (torch.Tensor): encoder outputs, shape (..., d).
        codebook (torch.Tensor): K codes, shape (K, d).

    Returns:
        (z_st, indices, z_q): ``z_q = codebook[indices]`` (shape (..., d)), ``indices`` long of
        shape (...,) the nearest code of each vector (Euclidean; ties to the lowest index), and
        ``z_st = z_e + sg(z_q - z_e)``, equal to ``z_q`` in value with the gradient of ``z_e``
        (whatever reaches ``z_st`` reaches ``z_e`` unchanged).
    """
    flat = z_e.reshape(-1, z_e.shape[-1])
    d2 = (
        flat.pow(2).sum(-1, keepdim=True)
        - 2 * flat @ codebook.t()
        + codebook.pow(2).sum(-1).unsqueeze(0)
    )
    indices = d2.argmin(-1).reshape(z_e.shape[:-1])
    z_q = codebook[indices]
    return z_e + (z_q - z_e).detach(), indices, z_q


def codebook_usage(indices: torch.Tensor, num_codes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """How often each code is used, and the perplexity of the usage.

    Args:
        indices (torch.Tensor): code indices of any shape, values in 0..K-1.
        num_codes (int): K.

    Returns:
        (counts, perplexity): ``counts`` long of shape (K,); ``perplexity =
        exp(-sum_k p_k log p_k)`` with ``p = counts / counts.sum()`` (0 log 0 = 0), a 0-dim
        tensor between 1 (one code used) and K (all used equally).
    """
    counts = torch.bincount(indices.reshape(-1), minlength=int(num_codes))
    p = counts.double() / counts.sum()
    entropy = -torch.where(p > 0, p * p.log(), torch.zeros_like(p)).sum()
    return counts, entropy.exp()


class VQVAE(nn.Module):
    """Pyro model of a VQ-VAE's stage 1 on binary images (the guide is
    :func:`~pyrolvm.guides.empty_guide`: the encoder is deterministic and part of the model).

    ``model(x)`` with x of shape (B, H * W) in {0, 1}: under ``pyro.plate("data", B)`` a
    ``pyro.factor("vq_loss", -(codebook + beta * commitment))`` site (per image) and the
    observed site ``"x"``, ``Bernoulli(logits=decoder(z_st))`` with event shape (H * W,). Under
    :class:`pyro.infer.Trace_ELBO` the loss is the stage-1 loss of the module docstring (the
    training loop's "ELBO" is minus that loss, not a bound on log p(x)).

    Encoder: ``downsample`` stride-2 4x4 convolutions with ReLU, then a 1x1 convolution to
    ``code_dim``; decoder: a 3x3 convolution, then ``downsample`` stride-2 transposed 4x4
    convolutions back to (H, W) (MNIST: 28 -> 14 -> 7, a 7x7 grid of codes). The codebook
    starts uniform in [-1/K, 1/K] (as in the paper's code).

    Args:
        image_shape (tuple of int): (H, W), each divisible by 2 ** downsample.
        num_codes (int): K >= 2.
        code_dim (int): d >= 1.
        channels (int): hidden channels.
        downsample (int): stride-2 layers, >= 1.
        beta (float): commitment weight (paper: 0.25).
        name (str): prefix of the parameters in Pyro's param store.

    Raises:
        ConfigError: an image size not divisible by 2 ** downsample, or bad sizes.
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        num_codes: int = 64,
        code_dim: int = 16,
        channels: int = 32,
        downsample: int = 2,
        beta: float = 0.25,
        name: str = "vqvae",
    ) -> None:
        super().__init__()
        h, w = int(image_shape[0]), int(image_shape[1])
        f = 2 ** int(downsample)
        if int(downsample) < 1 or h % f or w % f:
            raise ConfigError(
                f"the image size {h}x{w} must be divisible by 2^downsample = {f} (downsample >= 1)"
            )
        if int(num_codes) < 2 or int(code_dim) < 1 or int(channels) < 1 or beta < 0:
            raise ConfigError(
                f"VQ-VAE needs num_codes >= 2, code_dim >= 1, channels >= 1, beta >= 0; got "
                f"{num_codes}, {code_dim}, {channels}, {beta}"
            )
        self.image_shape, self.data_dim = (h, w), h * w
        self.grid_shape = (h // f, w // f)
        self.num_codes, self.code_dim, self.beta, self.name = (
            int(num_codes),
            int(code_dim),
            float(beta),
            name,
        )
        enc: list[nn.Module] = []
        c = 1
        for _ in range(int(downsample)):
            enc += [nn.Conv2d(c, channels, 4, 2, 1), nn.ReLU()]
            c = channels
        enc.append(nn.Conv2d(channels, self.code_dim, 1))
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv2d(self.code_dim, channels, 3, 1, 1)]
        for i in range(int(downsample)):
            last = i == int(downsample) - 1
            dec += [nn.ReLU(), nn.ConvTranspose2d(channels, 1 if last else channels, 4, 2, 1)]
        self.decoder = nn.Sequential(*dec)
        k = self.num_codes
        self.codebook = nn.Parameter(torch.empty(k, self.code_dim).uniform_(-1 / k, 1 / k))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``z_e(x)``: shape (B, h, w, d) for x of shape (B, H * W)."""
        img = x.reshape(-1, 1, *self.image_shape).to(self.codebook.dtype)
        return self.encoder(img).permute(0, 2, 3, 1)

    def decoder_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Bernoulli logits of p(x | z) for a grid z of shape (B, h, w, d); shape (B, H * W)."""
        return self.decoder(z.permute(0, 3, 1, 2)).reshape(-1, self.data_dim)

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's code grid, flattened row-major: long, shape (B, h * w)."""
        return quantize(self.encode(x), self.codebook)[1].reshape(x.shape[0], -1)

    def reconstruction_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log p(x | z_q(x))`` per image, nats, shape (B,)."""
        z_q = self.codebook[self.codes(x)].reshape(-1, *self.grid_shape, self.code_dim)
        return dist.Bernoulli(logits=self.decoder_logits(z_q)).to_event(1).log_prob(x)

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Pixel probabilities of p(x | z) for code grids of shape (B, h * w); shape (B, H * W)."""
        z = self.codebook[codes.long()].reshape(-1, *self.grid_shape, self.code_dim)
        return torch.sigmoid(self.decoder_logits(z))

    def forward(self, x: torch.Tensor) -> None:
        pyro.module(self.name, self)
        check_batch(x, self.data_dim, binary=True, network=self.decoder)
        with pyro.plate("data", x.shape[0]):
            z_e = self.encode(x)
            z_st, _, z_q = quantize(z_e, self.codebook)
            codebook_loss = (z_e.detach() - z_q).pow(2).sum((-3, -2, -1))
            commitment = (z_e - z_q.detach()).pow(2).sum((-3, -2, -1))
            pyro.factor("vq_loss", -(codebook_loss + self.beta * commitment))
            logits = self.decoder_logits(z_st)
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x)
