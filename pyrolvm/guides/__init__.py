"""Guides q(z | x), separate objects from the models they pair with (as Pyro's autoguides):
amortized encoders, flows, per-datapoint guides. A guide has its model's signature."""

from .amortized import AmortizedNormal, non_reparameterized
from .baselines import BASELINES, Baseline
from .cvae import CVAEGuide
from .discrete import RELAXATIONS, AmortizedBernoulli, AmortizedCategorical
from .empty import empty_guide
from .flows import FLOWS, AmortizedFlow, AmortizedFullCovariance
from .hierarchical import TwoLayerGuide
from .mixture import MixtureMAP, MixtureMeanField
from .mvae import HalvesMVAEGuide, MoEGuide, MVAEGuide, StratifiedMixture, product_of_experts
from .ssvae import SSVAEGuide

__all__ = [
    "AmortizedBernoulli",
    "AmortizedCategorical",
    "AmortizedNormal",
    "BASELINES",
    "Baseline",
    "CVAEGuide",
    "MVAEGuide",
    "HalvesMVAEGuide",
    "MoEGuide",
    "StratifiedMixture",
    "MixtureMAP",
    "MixtureMeanField",
    "RELAXATIONS",
    "SSVAEGuide",
    "empty_guide",
    "non_reparameterized",
    "product_of_experts",
    "AmortizedFlow",
    "AmortizedFullCovariance",
    "FLOWS",
    "TwoLayerGuide",
]
