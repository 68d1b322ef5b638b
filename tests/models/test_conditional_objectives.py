"""The conditional and multimodal pairs train with every objective of the registry: a few SVI
steps of each leave finite parameters and a finite bound."""

import math

import pyro
import pytest
import torch

from pyrolvm.guides import CVAEGuide, HalvesMVAEGuide, MVAEGuide
from pyrolvm.inference import ELBOS, make_elbo, train
from pyrolvm.models import CVAE, MVAE, HalvesMVAE

#: num_particles per objective: VIMCO's leave-one-out baselines need two
PARTICLES = {"vimco": 2}


def pairs():
    gen = torch.Generator().manual_seed(0)
    images = torch.bernoulli(torch.full((20, 8), 0.5), generator=gen)
    labels = torch.randint(3, (20,), generator=gen)
    x = torch.randn(20, 4, generator=gen)
    small = dict(latent_dim=2, hidden=(8,))
    return {
        "cvae": (CVAE(4, 8, **small), CVAEGuide(4, 8, **small), (x, images)),
        "cvae-standard": (
            CVAE(4, 8, prior="standard", **small),
            CVAEGuide(4, 8, **small),
            (x, images),
        ),
        "mvae": (MVAE(8, 3, **small), MVAEGuide(8, 3, **small), (images, labels)),
        "mvae-halves": (
            HalvesMVAE(4, 4, **small),
            HalvesMVAEGuide(4, 4, **small),
            (images[:, :4], images[:, 4:]),
        ),
    }


@pytest.mark.parametrize("name", sorted(ELBOS))
@pytest.mark.parametrize("pair", ["cvae", "cvae-standard", "mvae", "mvae-halves"])
def test_every_objective_trains_the_pair(pair, name):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    model, guide, data = pairs()[pair]
    history = train(
        model,
        guide,
        data,
        make_elbo(name, PARTICLES.get(name, 1)),
        epochs=2,
        batch_size=10,
        progress=False,
    )
    assert all(math.isfinite(v) for v in history["train_elbo"])
    assert all(torch.isfinite(p).all() for p in [*model.parameters(), *guide.parameters()])
