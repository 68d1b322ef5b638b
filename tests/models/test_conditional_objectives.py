"""The conditional and multimodal pairs train with every objective of the registry: a few SVI
steps of each leave finite parameters and a finite bound."""

import math

import pyro
import pytest
import torch

from pyrolvm.guides import CVAEGuide, HalvesMVAEGuide, MoEGuide, MVAEGuide
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
        # MMVAE: one stratum of the mixture (the run trains both)
        "mmvae": (MVAE(8, 3, **small), MoEGuide(MVAEGuide(8, 3, **small)), (images, labels)),
        "mmvae-halves": (
            HalvesMVAE(4, 4, **small),
            MoEGuide(HalvesMVAEGuide(4, 4, **small)),
            (images[:, :4], images[:, 4:]),
        ),
    }


@pytest.mark.parametrize("name", sorted(ELBOS))
@pytest.mark.parametrize(
    "pair", ["cvae", "cvae-standard", "mvae", "mvae-halves", "mmvae", "mmvae-halves"]
)
def test_every_objective_trains_the_pair(pair, name):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    model, guide, data = pairs()[pair]
    history = train(
        model,
        guide.stratum(1) if isinstance(guide, MoEGuide) else guide,
        data,
        make_elbo(name, PARTICLES.get(name, 1)),
        epochs=2,
        batch_size=10,
        progress=False,
    )
    assert all(math.isfinite(v) for v in history["train_elbo"])
    assert all(torch.isfinite(p).all() for p in [*model.parameters(), *guide.parameters()])


def test_conditional_and_multimodal_runs_create_no_stray_tensors(tmp_path):
    """Torch's default device set to meta (tests/test_devices.py): training, evaluation and the
    figures of the class-conditional VAE and the halves MVAE create every tensor where the
    data lie."""
    from test_devices import assert_on_cpu, stray_tensors_on_meta

    from pyrolvm.data import load
    from pyrolvm.runs import RUNS, Run
    from pyrolvm.runs.cvae import CVAEConfig, build_setting, samples_per_class_figure
    from pyrolvm.runs.cvae import evaluate as evaluate_cvae_setting
    from pyrolvm.runs.mvae import MVAEConfig, Pairing, build, figures
    from pyrolvm.runs.mvae import evaluate as evaluate_mvae

    data = load("digits", binarize="dynamic", seed=0)
    data.train, data.train_labels = data.train[:40], data.train_labels[:40]
    data.test, data.test_labels = data.test[:20], data.test_labels[:20]
    binarize = data.train_transform
    small = dict(hidden=(8,), eval_samples=3, progress=False, out=str(tmp_path))
    pyro.clear_param_store()
    cfg = CVAEConfig(condition="label", **small).resolved()
    setting = build_setting(cfg, "label", data)  # modules built on the CPU, then run on meta
    wrap = setting.wrap
    with stray_tensors_on_meta():
        rows = setting.data(data, "train")
        train(wrap(setting.model), wrap(setting.guide), rows, transform=binarize, progress=False)
        evaluate_cvae_setting(setting, data, cfg)
        samples_per_class_figure(str(tmp_path / "s.png"), setting, data, cfg)
    cfg = MVAEConfig(modalities="halves", elbo="iwae", num_particles=2, **small).resolved()
    model, guide = build(cfg, data.data_dim, 0, data.image_shape)
    with stray_tensors_on_meta():
        pairing = Pairing(cfg.modalities, data)
        train(
            pairing.joint(model),
            pairing.joint(guide),
            pairing.data("train"),
            cfg.make_objective(),
            extra_objectives=[(pairing.first(model), pairing.first(guide), cfg.make_objective())],
            transform=binarize,
            progress=False,
        )
        out = evaluate_mvae(model, guide, data, cfg)
        run = Run(RUNS["mvae"], cfg, data)
        run.folder, run.parts = str(tmp_path), {"model": model, "guide": guide}
        run.extra = {"pairing": pairing, "classes": 0}
        figures(run, {})
    assert all(math.isfinite(v) for v in out.values())
    assert_on_cpu(*model.parameters(), *guide.parameters())
