"""Guides q(z | x), separate objects from the models they pair with (as Pyro's autoguides):
amortized encoders, flows, per-datapoint guides. A guide has its model's signature."""

from .amortized import AmortizedNormal
from .mixture import MixtureMAP, MixtureMeanField
from .ssvae import SSVAEGuide

__all__ = ["AmortizedNormal", "MixtureMAP", "MixtureMeanField", "SSVAEGuide"]
