"""Guides q(z | x), separate objects from the models they pair with (as Pyro's autoguides):
amortized encoders, flows, per-datapoint guides. A guide has its model's signature."""

from .amortized import AmortizedNormal, non_reparameterized
from .baselines import BASELINES, Baseline
from .discrete import RELAXATIONS, AmortizedBernoulli, AmortizedCategorical
from .flows import FLOWS, AmortizedFlow, AmortizedFullCovariance
from .hierarchical import TwoLayerGuide
from .mixture import MixtureMAP, MixtureMeanField
from .ssvae import SSVAEGuide

__all__ = [
    "AmortizedBernoulli",
    "AmortizedCategorical",
    "AmortizedNormal",
    "BASELINES",
    "Baseline",
    "MixtureMAP",
    "MixtureMeanField",
    "RELAXATIONS",
    "SSVAEGuide",
    "non_reparameterized",
    "AmortizedFlow",
    "AmortizedFullCovariance",
    "FLOWS",
    "TwoLayerGuide",
]
