"""Autoregressive density models: exact likelihoods, no latent variable.

``p(x) = prod_d p(x_d | x_<d)`` for an ordering of the D dimensions. Each model is a Pyro
model ``model(x)`` with one ``pyro.plate("data", B)`` and one observed site ``"x"`` whose
parameters are computed from ``x`` itself by a network that lets output d see only the
inputs before d. It has no latent site: its guide is
:func:`pyrolvm.guides.empty_guide`, the ELBO equals ``log p(x)``, and
:func:`pyrolvm.inference.importance_sample` with K = 1 returns the exact log-likelihood
(nats; divide by ``D ln 2`` for bits per dimension).

* :class:`MADE`: masked autoencoder for distribution estimation (Germain, Gregor, Murray &
  Larochelle 2015), with order- and connectivity-agnostic training over several masks
  (section 4) and the mask ensemble at test time.
* :class:`PixelCNN`: a small gated PixelCNN with vertical and horizontal stacks (van den
  Oord, Kalchbrenner, Vinyals, Espeholt, Graves & Kavukcuoglu 2016, "Conditional Image
  Generation with PixelCNN Decoders", section 2), for binary images (Bernoulli), 8-bit
  images (256-way categorical) or grids of discrete codes (a VQ-VAE prior); optionally
  conditioned on a per-pixel feature map (section 2.3, equation 5).
* :class:`AutoregressiveBernoulli`: a conditional PixelCNN as a Pyro distribution over
  binary images, ``p(x | c) = prod_d Bernoulli(x_d | f_d(x_<d, c))``: the PixelVAE-style
  decoder of :class:`~pyrolvm.models.VAE` (``decoder="pixelcnn"``; Gulrajani et al. 2017).

Sampling is sequential (one network evaluation per dimension), as it must be.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution, constraints
from pyro.infer.util import is_validation_enabled
from pyro.nn.auto_reg_nn import sample_mask_indices
from torch import nn

from ..checks import check_batch
from ..errors import ConfigError, DataError
from ..nets import ACTIVATIONS


def made_masks(
    data_dim: int,
    hidden: Sequence[int],
    order: torch.Tensor,
    generator: torch.Generator | None = None,
) -> list[torch.Tensor]:
    """The masks of one MADE (Germain et al. 2015, section 4, equations 12-13).

    Input d has degree ``order[d] + 1`` in 1..D (its position in the ordering); hidden unit k
    of layer l gets a degree ``m^l(k)`` in ``[min m^{l-1}, D - 1]``; a weight from a unit of
    degree a to a hidden unit of degree b is kept when ``b >= a``, to output d when
    ``order[d] + 1 > a``. Without ``generator`` the hidden degrees are evenly spaced (Pyro's
    :func:`pyro.nn.auto_reg_nn.sample_mask_indices`); with it they are drawn uniformly
    (connectivity-agnostic training, section 4.1).

    Args:
        data_dim (int): D >= 2.
        hidden (sequence of int): hidden layer sizes (at least one layer).
        order (torch.Tensor): long, shape (D,), a permutation of 0..D-1: ``order[d]`` is the
            position of dimension d.
        generator (torch.Generator or None): RNG of the hidden degrees.

    Returns:
        list of float tensors, one per layer, of shapes (hidden[0], D), ..., (D, hidden[-1]).
    """
    degrees_in = order.float() + 1
    degrees = [degrees_in]
    for size in hidden:
        low = int(degrees[-1].min().item())
        if generator is None:
            d = sample_mask_indices(data_dim - 1, size).clamp(min=low)
        else:
            d = torch.randint(low, data_dim, (size,), generator=generator).float()
        degrees.append(d)
    masks = [
        (b.unsqueeze(-1) >= a.unsqueeze(0)).float()
        for a, b in zip(degrees, degrees[1:], strict=False)
    ]
    masks.append((degrees_in.unsqueeze(-1) > degrees[-1].unsqueeze(0)).float())
    return masks


class MADE(nn.Module):
    """Pyro model of MADE on binary vectors: ``x_d | x_<d ~ Bernoulli(logits=f_d(x))``, with
    f a masked MLP (Germain et al. 2015, equations 7-13).

    ``model(x)`` with x of shape (B, D) in {0, 1}: ``pyro.plate("data", B)`` and the observed
    site ``"x"`` (event shape (D,)). With ``num_masks`` = M > 1 (order- and
    connectivity-agnostic training, section 4): mask 0 uses the natural ordering and
    evenly spaced hidden degrees, masks 1..M-1 a random ordering and random degrees drawn
    from ``seed``; in training mode (``model.train()``, the default) each call draws one
    mask uniformly (torch's global RNG), an unbiased estimate of the average over masks of
    log p_m(x); in evaluation mode (``model.eval()``) the site is the uniform mixture
    ``p(x) = (1/M) sum_m p_m(x)`` (``MixtureSameFamily``), the paper's test-time ensemble,
    itself an exact normalized likelihood. With M = 1 both modes are the same model.

    Args:
        data_dim (int): D >= 2.
        hidden (sequence of int): hidden layer sizes (paper: one layer of 500 on MNIST).
        num_masks (int): M >= 1.
        activation (str): ``relu`` (paper), ``tanh``, ``softplus`` or ``elu``.
        data_mean (torch.Tensor or None): mean training image, shape (D,); the output bias
            starts at its logit (clamped to [1e-3, 1 - 1e-3]).
        seed (int): seed of the random orderings and degrees of masks 1..M-1.
        name (str): prefix of the parameters in Pyro's param store.

    Raises:
        ConfigError: D < 2, no hidden layer, a non-positive size, M < 1, unknown activation.
    """

    def __init__(
        self,
        data_dim: int,
        hidden: Sequence[int] = (500,),
        num_masks: int = 1,
        activation: str = "relu",
        data_mean: torch.Tensor | None = None,
        seed: int = 0,
        name: str = "made",
    ) -> None:
        super().__init__()
        hidden = tuple(int(h) for h in hidden)
        if int(data_dim) < 2 or not hidden or min(hidden) < 1:
            raise ConfigError(
                f"MADE needs D >= 2 and at least one positive hidden size, got D={data_dim}, "
                f"hidden={hidden}"
            )
        if int(num_masks) < 1:
            raise ConfigError(f"num_masks must be >= 1, got {num_masks}")
        if activation not in ACTIVATIONS:
            raise ConfigError(
                f"unknown activation {activation!r}: choose one of {', '.join(ACTIVATIONS)}"
            )
        self.data_dim, self.hidden, self.num_masks = int(data_dim), hidden, int(num_masks)
        self.name = name
        self.activation = ACTIVATIONS[activation]()
        sizes = (self.data_dim, *hidden, self.data_dim)
        linears = [nn.Linear(a, b) for a, b in zip(sizes, sizes[1:], strict=False)]
        self.layers = nn.ModuleList(linears)
        gen = torch.Generator().manual_seed(int(seed))
        orders, per_layer = [], [[] for _ in self.layers]
        for m in range(self.num_masks):
            order = (
                torch.arange(self.data_dim) if m == 0 else torch.randperm(data_dim, generator=gen)
            )
            orders.append(order)
            for layer_masks, mask in zip(
                per_layer,
                made_masks(self.data_dim, hidden, order, None if m == 0 else gen),
                strict=True,
            ):
                layer_masks.append(mask)
        #: (M, D) long: ``orders[m, d]`` is the position of dimension d in ordering m.
        self.register_buffer("orders", torch.stack(orders))
        for i, masks in enumerate(per_layer):
            self.register_buffer(f"mask{i}", torch.stack(masks))
        if data_mean is not None:
            mean = torch.as_tensor(data_mean, dtype=torch.float32).clamp(1e-3, 1 - 1e-3)
            with torch.no_grad():
                linears[-1].bias.copy_(mean.log() - (-mean).log1p())

    def linears(self) -> list[nn.Linear]:
        """The masked layers' ``nn.Linear`` modules (their weights are used times the masks)."""
        return [cast(nn.Linear, layer) for layer in self.layers]

    def masks(self, m: int | torch.Tensor) -> list[torch.Tensor]:
        """The per-layer masks of mask ``m`` (an int or a 0-dim long tensor, selected by a
        tensor operation: no read of its value, so that a compiled step can hold it)."""
        stacks = [getattr(self, f"mask{i}") for i in range(len(self.layers))]
        if isinstance(m, torch.Tensor):
            return [s.index_select(0, m.reshape(1)).squeeze(0) for s in stacks]
        return [s[m] for s in stacks]

    def logits(self, x: torch.Tensor, m: int | torch.Tensor = 0) -> torch.Tensor:
        """Logits of p(x_d = 1 | x_<d) under mask ``m`` for x of shape (..., D); shape (..., D).
        Output d depends only on the inputs before d in ordering m."""
        h = x
        for i, (layer, mask) in enumerate(zip(self.linears(), self.masks(m), strict=True)):
            h = F.linear(h, mask * layer.weight, layer.bias)
            if i < len(self.layers) - 1:
                h = self.activation(h)
        return h

    def forward(self, x: torch.Tensor) -> None:
        pyro.module(self.name, self)
        check_batch(x, self.data_dim, binary=True, network=self.linears()[0])
        with pyro.plate("data", x.shape[0]):
            if self.num_masks == 1:
                pyro.sample("x", dist.Bernoulli(logits=self.logits(x)).to_event(1), obs=x)
            elif self.training:
                m = torch.randint(self.num_masks, (), device=x.device)
                pyro.sample("x", dist.Bernoulli(logits=self.logits(x, m)).to_event(1), obs=x)
            else:
                logits = torch.stack([self.logits(x, m) for m in range(self.num_masks)], -2)
                components = dist.Bernoulli(logits=logits).to_event(1)
                mixing = dist.Categorical(logits=x.new_zeros(self.num_masks))
                pyro.sample("x", dist.MixtureSameFamily(mixing, components), obs=x)

    @torch.no_grad()
    def sample(self, num_samples: int, m: int = 0) -> torch.Tensor:
        """Draw ``num_samples`` binary vectors ancestrally in ordering ``m`` (D network
        evaluations); returns shape (num_samples, D), the dtype and device of the weights."""
        w = self.linears()[0].weight
        x = w.new_zeros(int(num_samples), self.data_dim)
        orders = cast(torch.Tensor, self.orders)
        for d in torch.argsort(orders[m]).tolist():
            x[:, d] = torch.bernoulli(torch.sigmoid(self.logits(x, m)[:, d]))
        return x


def check_levels(x: object, data_dim: int, levels: int) -> None:
    """Raise :class:`~pyrolvm.errors.DataError` unless ``x`` is a (B, data_dim) tensor of
    integers in 0..levels-1 (stored in any dtype)."""
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[-1] != data_dim:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise DataError(f"x must be a tensor of shape (B, {data_dim}), got {shape}")
    if not ((x >= 0) & (x <= levels - 1) & (x == x.round())).all():
        raise DataError(
            f"x must hold integers 0..{levels - 1} (e.g. 8-bit images as round(255 * x)), "
            "got other values"
        )


class CausalConv2d(nn.Module):
    """A 2-D convolution of one PixelCNN stack, padded so that it never looks ahead.

    ``stack="vertical"``: kernel (k//2 + 1, k), output (i, j) sees rows i - k//2 .. i (all
    columns within k//2); ``stack="horizontal"``: kernel (1, k//2 + 1), output (i, j) sees row
    i, columns j - k//2 .. j. With ``exclude_center`` (the first layer, mask "A") the view is
    shifted by one (rows < i, resp. columns < j). Shapes (B, C_in, H, W) -> (B, C_out, H, W).
    """

    def __init__(
        self, c_in: int, c_out: int, kernel_size: int, stack: str, exclude_center: bool = False
    ) -> None:
        super().__init__()
        k = int(kernel_size) // 2
        self.k, self.stack, self.exclude_center = k, stack, exclude_center
        shape = (k + 1, 2 * k + 1) if stack == "vertical" else (1, k + 1)
        self.conv = nn.Conv2d(c_in, c_out, shape)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        k = self.k
        if self.stack == "vertical":
            out = self.conv(F.pad(h, (k, k, k, 0)))
            if self.exclude_center:  # shift down: row i sees rows < i
                out = F.pad(out, (0, 0, 1, 0))[:, :, :-1]
            return out
        out = self.conv(F.pad(h, (k, 0, 0, 0)))
        if self.exclude_center:  # shift right: column j sees columns < j
            out = F.pad(out, (1, 0, 0, 0))[:, :, :, :-1]
        return out


class GatedLayer(nn.Module):
    """One gated PixelCNN layer (van den Oord et al. 2016, "Conditional Image Generation with
    PixelCNN Decoders", section 2.2 and figure 2): ``y = tanh(W_f * v) . sigmoid(W_g * v)`` on
    the vertical stack and on the horizontal stack (which also receives the vertical stack's
    features from the rows above through a 1x1 convolution), with a residual connection on
    the horizontal stack except in the first layer. Shapes (B, C, H, W) for both stacks.

    With ``cond_channels`` > 0 the layer is conditional (section 2.3, equation 5, the
    location-dependent form): a map ``s`` of shape (B, cond_channels, H, W) enters both gates
    through 1x1 convolutions, ``tanh(W_f * v + V_f * s) . sigmoid(W_g * v + V_g * s)``. The map
    is not the image, so it never breaks the ordering."""

    def __init__(
        self, c_in: int, channels: int, kernel_size: int, first: bool, cond_channels: int = 0
    ) -> None:
        super().__init__()
        self.first = first
        self.v_conv = CausalConv2d(c_in, 2 * channels, kernel_size, "vertical")
        self.h_conv = CausalConv2d(c_in, 2 * channels, kernel_size, "horizontal", first)
        self.v_to_h = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.h_out = nn.Conv2d(channels, channels, 1)
        if cond_channels:
            self.v_cond = nn.Conv2d(int(cond_channels), 2 * channels, 1)
            self.h_cond = nn.Conv2d(int(cond_channels), 2 * channels, 1, bias=False)

    @staticmethod
    def gate(h: torch.Tensor) -> torch.Tensor:
        f, g = h.chunk(2, dim=1)
        return torch.tanh(f) * torch.sigmoid(g)

    def forward(
        self, v: torch.Tensor, h: torch.Tensor, cond: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        v_feat = self.v_conv(v)
        # the vertical features of row i reach the horizontal stack at row i + 1 only
        down = F.pad(v_feat, (0, 0, 1, 0))[:, :, :-1]
        h_pre = self.h_conv(h) + self.v_to_h(down)
        v_pre = v_feat
        if cond is not None:
            v_pre = v_feat + self.v_cond(cond)
            h_pre = h_pre + self.h_cond(cond)
        h_new = self.h_out(self.gate(h_pre))
        return self.gate(v_pre), h_new if self.first else h + h_new


class PixelCNN(nn.Module):
    """Pyro model of a small gated PixelCNN over (H, W) grids of discrete values, raster
    order: ``x_ij | x_<ij`` is ``Bernoulli(logits)`` (``levels=2``) or
    ``Categorical(logits)`` over ``levels`` values (8-bit images: 256; VQ-VAE codes: K).

    ``model(x)`` with x of shape (B, H * W) (flattened, row-major): for ``levels=2`` values in
    {0, 1}; else integers 0..levels-1 (any floating or integer dtype). One
    ``pyro.plate("data", B)`` and the observed site ``"x"`` (event shape (H * W,)). The input is
    fed as one channel ``x / (levels - 1)`` (``input="scaled"``) or as ``levels`` one-hot
    channels (``input="onehot"``, for unordered codes).

    Architecture (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN
    Decoders", section 2): ``num_layers`` gated layers (``GatedLayer``) of ``channels``
    channels (the first with the centre pixel masked, type "A"), then ReLU, 1x1 conv, ReLU,
    1x1 conv to the logits. The receptive field of pixel (i, j) is the rows above (within the
    stacks' reach) and the pixels left of it in row i, never (i, j) itself or anything after.
    With ``cond_channels`` > 0 every gated layer also reads a conditioning map of shape
    (B, cond_channels, H, W) (``logits(x, cond)``; section 2.3, equation 5): the PixelVAE
    decoder feeds it a map computed from z (:class:`AutoregressiveBernoulli`).

    Args:
        image_shape (tuple of int): (H, W).
        levels (int): number of values per pixel, >= 2.
        channels (int): feature channels per stack.
        num_layers (int): gated layers, >= 1.
        kernel_size (int): odd, >= 3.
        input (str): ``"scaled"`` or ``"onehot"``.
        name (str): prefix of the parameters in Pyro's param store.
        cond_channels (int): channels of the conditioning map (0: unconditional).

    Raises:
        ConfigError: bad sizes, levels < 2, an even kernel, an unknown input encoding.
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        levels: int = 2,
        channels: int = 32,
        num_layers: int = 5,
        kernel_size: int = 5,
        input: str = "scaled",
        name: str = "pixelcnn",
        cond_channels: int = 0,
    ) -> None:
        super().__init__()
        if len(image_shape) != 2 or min(image_shape) < 1:
            raise ConfigError(f"image_shape must be (H, W) with H, W >= 1, got {image_shape}")
        if int(levels) < 2 or int(channels) < 1 or int(num_layers) < 1:
            raise ConfigError(
                f"PixelCNN needs levels >= 2, channels >= 1 and num_layers >= 1, got "
                f"{levels}, {channels}, {num_layers}"
            )
        if int(kernel_size) < 3 or int(kernel_size) % 2 == 0:
            raise ConfigError(f"kernel_size must be odd and >= 3, got {kernel_size}")
        if input not in ("scaled", "onehot"):
            raise ConfigError(f"unknown input {input!r}: choose scaled or onehot")
        if int(cond_channels) < 0:
            raise ConfigError(f"cond_channels must be >= 0, got {cond_channels}")
        self.image_shape = (int(image_shape[0]), int(image_shape[1]))
        self.data_dim = self.image_shape[0] * self.image_shape[1]
        self.levels, self.input, self.name = int(levels), input, name
        self.cond_channels = int(cond_channels)
        c_in = self.levels if input == "onehot" else 1
        self.gated = nn.ModuleList(
            GatedLayer(
                c_in if i == 0 else channels,
                channels,
                kernel_size,
                first=i == 0,
                cond_channels=self.cond_channels,
            )
            for i in range(int(num_layers))
        )
        out = 1 if self.levels == 2 else self.levels
        self.head = nn.Sequential(
            nn.ReLU(), nn.Conv2d(channels, channels, 1), nn.ReLU(), nn.Conv2d(channels, out, 1)
        )

    def output_weight(self) -> torch.Tensor:
        """The last convolution's weight (its dtype and device are the model's)."""
        return cast(nn.Conv2d, self.head[-1]).weight

    def logits(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of every pixel given the pixels before it (and the conditioning map ``cond``
        of shape (B, cond_channels, H, W), needed exactly when ``cond_channels`` > 0), for x
        of shape (B, H * W): shape (B, H * W) for ``levels=2``, else (B, H * W, levels)."""
        if (cond is None) != (self.cond_channels == 0):
            raise ConfigError(
                "a PixelCNN with cond_channels > 0 needs a conditioning map, and one without "
                f"takes none (cond_channels={self.cond_channels}, map given: {cond is not None})"
            )
        out = self.image_logits(x.reshape((-1, *self.image_shape)), cond)
        if self.levels == 2:
            return out.reshape(-1, self.data_dim)
        return out.permute(0, 2, 3, 1).reshape(-1, self.data_dim, self.levels)

    def image_logits(self, img: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """The network on images of shape (B, H', W') (any H' rows of width W: the top rows
        of a grid, or a band of rows, see :meth:`receptive_rows`) and their conditioning map
        (B, cond_channels, H', W'); returns logits of shape (B, 1 or levels, H', W')."""
        weight = self.output_weight()
        if self.input == "onehot":
            # one-hot by comparison (F.one_hot reads the values to check them: no compiled step)
            levels = torch.arange(self.levels, device=img.device)
            x = (img.long().unsqueeze(-1) == levels).to(weight.dtype).permute(0, 3, 1, 2)
        else:
            x = (img.to(weight.dtype) / (self.levels - 1)).unsqueeze(1)
        v = hs = x
        for layer in self.gated:
            v, hs = layer(v, hs, cond)
        return self.head(hs)

    def receptive_rows(self) -> int:
        """R such that the logits of row i depend on the grid's rows i - R .. i only: each
        layer's vertical stack reaches k//2 rows up and its horizontal stack one more row
        (the vertical features of the row above), so R = L * (k//2) + 1."""
        k = cast(GatedLayer, self.gated[0]).v_conv.k
        return len(self.gated) * k + 1

    def distribution(self, x: torch.Tensor) -> dist.TorchDistribution:
        """The factorized distribution prod_ij p(x_ij | x_<ij), evaluated at the x given (the
        conditionals' context); event shape (H * W,). Its ``log_prob(x)`` is log p(x)."""
        logits = self.logits(x)
        if self.levels == 2:
            return dist.Bernoulli(logits=logits).to_event(1)
        return dist.Categorical(logits=logits).to_event(1)

    def forward(self, x: torch.Tensor) -> None:
        pyro.module(self.name, self)
        if self.levels == 2:
            check_batch(x, self.data_dim, binary=True, network=self.head)
        elif is_validation_enabled():
            check_levels(x, self.data_dim, self.levels)
        with pyro.plate("data", x.shape[0]):
            obs = x if self.levels == 2 else x.long()
            pyro.sample("x", self.distribution(x), obs=obs)

    @torch.no_grad()
    def sample(self, num_samples: int, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Draw ``num_samples`` grids in raster order (H * W network evaluations), given the
        conditioning map ``cond`` (shape (num_samples, cond_channels, H, W)) of a conditional
        PixelCNN; returns shape (num_samples, H * W), float values in {0, ..., levels - 1},
        the dtype and device of the weights."""
        return self.sample_with_probs(num_samples, cond)[0]

    @torch.no_grad()
    def sample_with_probs(
        self,
        num_samples: int,
        cond: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`sample`, with the probabilities the draw was made from: for ``levels=2``
        ``p(x_d = 1 | x_<d)`` along the drawn path, shape (num_samples, H * W); else the
        probabilities of every level, shape (num_samples, H * W, levels). ``bias`` (shape
        (H * W,), ``levels=2`` only) is added to the logits (:class:`AutoregressiveBernoulli`)."""
        weight = self.output_weight()
        height, width = self.image_shape
        x = weight.new_zeros(int(num_samples), height, width)
        shape = (int(num_samples), self.data_dim) + (() if self.levels == 2 else (self.levels,))
        probs = weight.new_zeros(shape)
        reach = self.receptive_rows()
        for d in range(self.data_dim):
            # only the band of rows that pixel d can see: the same logits, fewer rows
            i, j = divmod(d, width)
            top = max(0, i - reach)
            band = None if cond is None else cond[:, :, top : i + 1]
            logits = self.image_logits(x[:, top : i + 1], band)[:, :, -1, j]
            logits = logits.squeeze(1) if self.levels == 2 else logits
            if self.levels == 2:
                if bias is not None:
                    logits = logits + bias[d]
                probs[:, d] = torch.sigmoid(logits)
                x[:, i, j] = torch.bernoulli(probs[:, d])
            else:
                probs[:, d] = torch.softmax(logits, -1)
                x[:, i, j] = torch.distributions.Categorical(logits=logits).sample().to(x.dtype)
        return x.reshape(int(num_samples), self.data_dim), probs


class AutoregressiveBernoulli(TorchDistribution):
    """Binary images from a conditional PixelCNN: ``p(x | c) = prod_d Bernoulli(x_d |
    sigmoid(f_d(x_<d, c) + b_d))`` in raster order, with f the logits of ``pixelcnn`` (a
    :class:`PixelCNN` with ``levels=2`` and ``cond_channels`` > 0), c a conditioning map per
    batch element and b an optional per-pixel bias. Event shape (H * W,); batch shape
    ``cond.shape[:-3]``.

    ``log_prob(x)`` is exact in one network pass (teacher forcing: the conditionals of every
    pixel read the observed x before it), for x of any shape broadcasting with
    ``batch_shape + (H * W,)``; ``sample()`` is ancestral, one pass per pixel. This is the
    decoder of a PixelVAE (Gulrajani et al. 2017, "PixelVAE: A Latent Variable Model for
    Natural Images", section 3): the VAE's objectives and importance sampling only need
    ``log_prob``, so they work unchanged. Pyro has no autoregressive image distribution;
    this class is the few lines that make the network one.

    Args:
        pixelcnn (PixelCNN): the network (its parameters are not registered here: the owning
            model registers them).
        cond (torch.Tensor): shape batch_shape + (cond_channels, H, W).
        bias (torch.Tensor or None): shape (H * W,).
    """

    arg_constraints: dict = {}

    @property
    def support(self) -> constraints.Constraint:
        return constraints.independent(constraints.boolean, 1)

    def __init__(
        self,
        pixelcnn: PixelCNN,
        cond: torch.Tensor,
        bias: torch.Tensor | None = None,
        validate_args: bool | None = None,
    ) -> None:
        if pixelcnn.levels != 2 or pixelcnn.cond_channels < 1:
            raise ConfigError("AutoregressiveBernoulli needs a PixelCNN with levels=2, cond > 0")
        h, w = pixelcnn.image_shape
        if cond.dim() < 3 or tuple(cond.shape[-3:]) != (pixelcnn.cond_channels, h, w):
            raise ConfigError(
                f"the conditioning map must have shape (..., {pixelcnn.cond_channels}, {h}, "
                f"{w}), got {tuple(cond.shape)}"
            )
        self.pixelcnn, self.cond, self.bias = pixelcnn, cond, bias
        batch_shape = cond.shape[:-3]
        super().__init__(batch_shape, torch.Size([pixelcnn.data_dim]), validate_args)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        cond = self.cond.expand(batch_shape + self.cond.shape[-3:])
        return AutoregressiveBernoulli(self.pixelcnn, cond, self.bias, validate_args=False)

    def _flat_cond(self, batch_shape: torch.Size) -> torch.Tensor:
        cond = self.cond.expand(batch_shape + self.cond.shape[-3:])
        return cond.reshape((-1,) + self.cond.shape[-3:])

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``p(x_d = 1 | x_<d, c)`` for every pixel of x (teacher forcing), shape
        ``broadcast(x.shape[:-1], batch_shape) + (H * W,)``."""
        batch_shape = torch.broadcast_shapes(x.shape[:-1], self.batch_shape)
        flat_x = x.expand(batch_shape + self.event_shape).reshape(-1, self.event_shape[0])
        out = self.pixelcnn.logits(flat_x, self._flat_cond(batch_shape))
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(batch_shape + self.event_shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        logits = self.logits(value)
        value = value.expand(logits.shape)
        return -F.binary_cross_entropy_with_logits(logits, value, reduction="none").sum(-1)

    @torch.no_grad()
    def sample_with_probs(self, sample_shape=()) -> tuple[torch.Tensor, torch.Tensor]:
        """An ancestral draw x and the probabilities ``p(x_d = 1 | x_<d, c)`` along it, both
        of shape ``sample_shape + batch_shape + (H * W,)``."""
        shape = torch.Size(sample_shape) + self.batch_shape
        cond = self._flat_cond(shape)
        x, probs = self.pixelcnn.sample_with_probs(cond.shape[0], cond, self.bias)
        return x.reshape(shape + self.event_shape), probs.reshape(shape + self.event_shape)

    def sample(self, sample_shape=()) -> torch.Tensor:
        return self.sample_with_probs(sample_shape)[0]
