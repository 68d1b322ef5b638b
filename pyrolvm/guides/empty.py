"""The guide of a model without latent variables."""

from typing import Any


def empty_guide(*args: Any, **kwargs: Any) -> None:
    """A guide with no sample site, for models whose only sample sites are observed
    (:class:`pyrolvm.models.MADE`, :class:`pyrolvm.models.PixelCNN`). With it the ELBO is
    ``log p(x)`` exactly, and :func:`pyrolvm.inference.importance_sample` with K = 1 returns
    the exact log-likelihood (every importance weight is ``p(x)``). Takes any arguments."""
