"""Devices: every model, guide, objective, the evaluator and the figures work wherever the data
and parameters lie.

Two kinds of test:

- **Stray tensors, on any machine.** Torch's default device is set to ``meta`` while the model,
  guide and data stay on the CPU. A tensor our code creates without taking the device of the
  data or parameters it meets (``torch.zeros(d)`` instead of ``x.new_zeros(d)``) then lands on
  ``meta``, and the first operation mixing it with the data fails. That is the bug that breaks
  a run on CUDA, caught on a CPU-only machine (and in CI).
- **CUDA** (skipped without a GPU, with the reason): runs, checkpoints and the evaluator on a
  real GPU, and the agreement of CPU and CUDA figures.
"""

import contextlib
import json

import pytest
import torch
from pyro.infer import TraceEnum_ELBO

from pyrolvm import ConfigError
from pyrolvm.devices import resolve_device
from pyrolvm.fitting import fit_m2
from pyrolvm.guides import AmortizedBernoulli, AmortizedCategorical, AmortizedNormal, SSVAEGuide
from pyrolvm.inference import ELBOS, importance_sample, make_elbo, train
from pyrolvm.inference.latent import latent_summary
from pyrolvm.models import SSVAE, VAE, MixturePriorVAE, SigmoidBeliefNet

needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="no CUDA device (torch.cuda.is_available() is False): the CUDA tests run on a GPU "
    "machine",
)

D = 12


@contextlib.contextmanager
def stray_tensors_on_meta():
    """Torch's default device is ``meta`` inside the block."""
    torch.set_default_device("meta")
    try:
        yield
    finally:
        torch.set_default_device(None)


def binary_data(n=40, d=D, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((n, d), 0.3), generator=gen)


def assert_on_cpu(*tensors):
    for t in tensors:
        assert t.device.type == "cpu", t.device


#: Objectives that need particles (VIMCO: K >= 2) or a score-function guide get what they need.
PARTICLES = {name: 3 for name in ELBOS} | {"trace": 1, "meanfield": 1, "tracegraph": 1}


@pytest.mark.parametrize("name", sorted(ELBOS))
def test_every_objective_trains_and_evaluates_where_the_data_lies(name):
    x = binary_data()
    model, guide = VAE(D, 2, (8,)), AmortizedNormal(D, 2, (8,))
    with stray_tensors_on_meta():
        history = train(
            model,
            guide,
            x,
            make_elbo(name, PARTICLES[name]),
            epochs=1,
            batch_size=20,
            progress=False,
        )
        result = importance_sample(model, guide, x, num_samples=5, batch_size=20)
    assert len(history["train_elbo"]) == 1 and torch.isfinite(result.log_likelihood).all()
    assert_on_cpu(result.log_likelihood, result.elbo, result.ess)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_vae_sampling_decoding_and_latent_figures(likelihood, tmp_path):
    from pyrolvm import plots, plots_latent

    x = binary_data()
    model, guide = (
        VAE(D, 2, (8,), likelihood=likelihood, data_mean=x.mean(0)),
        AmortizedNormal(D, 2, (8,)),
    )
    with stray_tensors_on_meta():
        samples = model.sample(4)
        loc, scale = guide.encode(x)
        summary = latent_summary(loc, scale, generator=torch.Generator(device="cpu"))
        plots_latent.latent_traversals(tmp_path / "t.png", model.decode, loc[0].detach(), (3, 4))
        plots_latent.interpolation(
            tmp_path / "i.png", model.decode, loc[0].detach(), loc[1].detach(), (3, 4)
        )
        plots.latent_manifold(tmp_path / "m.png", model.decode, (3, 4), n=3, device="cpu")
    assert_on_cpu(samples)
    assert summary["active_units"] >= 0


@pytest.mark.parametrize(
    "latent, relaxation, elbo",
    [
        ("bernoulli", "none", "tracegraph"),
        ("bernoulli", "concrete", "iwae"),
        ("categorical", "straight_through", "trace"),
        ("categorical", "none", "vimco"),
    ],
)
def test_discrete_latents(latent, relaxation, elbo):
    x = binary_data()
    temperature = 0.5 if relaxation == "concrete" else None
    model = SigmoidBeliefNet(D, 3, latent, 3, (8,), temperature=temperature)
    guide_class = AmortizedBernoulli if latent == "bernoulli" else AmortizedCategorical
    args = (D, 3) if latent == "bernoulli" else (D, 3, 3)
    guide = guide_class(*args, hidden=(8,), relaxation=relaxation)
    with stray_tensors_on_meta():
        train(model, guide, x, make_elbo(elbo, 3), epochs=1, batch_size=20, progress=False)
        exact = model.log_likelihood_exact(x) if hasattr(model, "log_likelihood_exact") else None
    if exact is not None:
        assert_on_cpu(exact)


def test_m2_with_labelled_and_unlabelled_objectives():
    x = binary_data(60)
    labels = torch.arange(60) % 3
    model, guide = SSVAE(D, 3, 2, (8,)), SSVAEGuide(D, 3, 2, (8,))
    with stray_tensors_on_meta():
        _, _, history = fit_m2(
            x,
            labels,
            6,
            x[:20],
            labels[:20],
            epochs=1,
            batch_size=20,
            model=model,
            guide=guide,
            progress=False,
        )
    assert 0 <= history["test_accuracy"][-1] <= 1


def test_mixture_prior_vae_with_enumeration():
    x = binary_data()
    model, guide = MixturePriorVAE(D, 2, 3, (8,)), AmortizedNormal(D, 2, (8,), activation="relu")
    with stray_tensors_on_meta():
        train(
            model,
            guide,
            x,
            TraceEnum_ELBO(max_plate_nesting=1),
            epochs=1,
            batch_size=20,
            progress=False,
        )


# (VQVAE is left out: Pyro's pyro.factor passes its tensor through torch.as_tensor, which moves
# it to the default device, meta here, though it keeps a CUDA tensor on CUDA)
@pytest.mark.parametrize("name", ["made", "made-ensemble", "pixelcnn", "pixelcnn-8bit"])
def test_autoregressive_and_codebook_models(name):
    from pyrolvm.guides import empty_guide
    from pyrolvm.models import MADE, PixelCNN

    x = binary_data(16, 16)
    if name.startswith("made"):
        model = MADE(16, (12,), 3 if name == "made-ensemble" else 1)
    else:
        levels = 256 if name.endswith("8bit") else 2
        model = PixelCNN((4, 4), levels, 4, 2, 3)
        x = (255 * torch.rand(16, 16)).round() if levels == 256 else x
    with stray_tensors_on_meta():
        train(model, empty_guide, x, epochs=1, batch_size=8, progress=False)
        model.eval()
        result = importance_sample(model, empty_guide, x, num_samples=1, batch_size=8)
    assert_on_cpu(result.log_likelihood)
    assert torch.isfinite(result.log_likelihood).all()


def test_missing_data_training_evaluation_and_imputation():
    from pyrolvm.data import make_mask
    from pyrolvm.inference import impute

    x = binary_data(24, 16)
    mask = make_mask("random", 24, (4, 4), 0.5, seed=0)
    model, guide = VAE(16, 2, (8,)), AmortizedNormal(16, 2, (8,), mask_input=True)
    with stray_tensors_on_meta():
        train(model, guide, (x, mask), make_elbo("iwae", 3), epochs=1, batch_size=8, progress=False)
        result = importance_sample(model, guide, (x, mask), num_samples=5, batch_size=8)
        imputed = impute(model, guide, x, mask, num_samples=5, batch_size=8)
    assert_on_cpu(
        result.log_likelihood, *[v for v in vars(imputed).values() if isinstance(v, torch.Tensor)]
    )


@pytest.mark.parametrize(
    "options",
    [
        dict(guide="fullcov"),
        dict(guide="planar", flows=2),
        dict(guide="iaf", flows=2, elbo="dreg", num_particles=3),
        dict(prior="vamp", pseudo_inputs=4),
        dict(prior="flow", prior_flows=2),
        dict(layers=2, latent_dim2=2, hidden2=(8,)),
        dict(likelihood="continuous-bernoulli", binarize="none"),
        dict(likelihood="categorical", levels=5, binarize="none"),
        dict(decoder="pixelcnn", decoder_layers=2, decoder_channels=4, elbo="iwae"),
    ],
    ids=[
        "fullcov",
        "planar",
        "iaf-dreg",
        "vamp",
        "flow-prior",
        "two-layers",
        "cb",
        "categorical",
        "pixelvae",
    ],
)
def test_richer_guides_priors_and_likelihoods(options):
    from pyrolvm.runs import VAEConfig
    from pyrolvm.runs.vae import build

    cfg = VAEConfig(dataset="digits", latent_dim=2, hidden=(8,), **options).resolved()
    x = binary_data(16, D) if cfg.likelihood == "bernoulli" else torch.rand(16, D)
    pseudo = x[:4] if cfg.prior == "vamp" else None
    model, guide = build(cfg, D, x.mean(0), pseudo, image_shape=(3, 4))
    elbo = make_elbo(cfg.elbo, cfg.num_particles)
    with stray_tensors_on_meta():
        train(model, guide, x, elbo, epochs=1, batch_size=8, progress=False)
        result = importance_sample(model, guide, x, num_samples=4, batch_size=8)
        samples = model.sample(3)
    assert_on_cpu(result.log_likelihood, samples)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="unknown device 'gpu'"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            resolve_device("cuda:0")
    else:
        with pytest.raises(ConfigError, match="CUDA device"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_cli_refuses_a_device_it_lacks(capsys):
    from helpers import cli_error

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: --device cuda is valid here")
    err = cli_error(capsys, ["train", "vae", "--device", "cuda"])
    assert "no CUDA device" in err and "--device cpu" in err


# ---------------------------------------------------------------------------------------------
# On a GPU


@needs_cuda
@pytest.mark.parametrize("name", ["trace", "iwae", "dreg", "stl", "vimco", "tracegraph"])
def test_objectives_on_cuda(name):
    x = binary_data().cuda()
    model, guide = VAE(D, 2, (8,)).cuda(), AmortizedNormal(D, 2, (8,)).cuda()
    train(
        model, guide, x, make_elbo(name, PARTICLES[name]), epochs=2, batch_size=20, progress=False
    )
    result = importance_sample(model, guide, x, num_samples=50, batch_size=20)
    assert result.log_likelihood.device.type == "cuda"
    assert torch.isfinite(result.log_likelihood).all()


@needs_cuda
def test_vae_run_on_cuda_evaluates_on_either_device(tmp_path):
    from pyrolvm.runs import evaluate_vae, train_vae

    out = str(tmp_path / "run")
    metrics = train_vae(
        dataset="digits", epochs=2, eval_samples=20, out=out, device="cuda", progress=False
    )
    on_cpu = evaluate_vae(out, device="cpu", progress=False)
    on_cuda = evaluate_vae(out, device="cuda", progress=False)
    # the same checkpoint and seed; the two devices' arithmetic differs in the last bits
    assert on_cuda["test_nll"] == pytest.approx(metrics["test_nll"], abs=1e-3)
    assert on_cpu["test_nll"] == pytest.approx(on_cuda["test_nll"], abs=0.5)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["device"] == "cuda"


@needs_cuda
def test_a_cuda_run_repeats(tmp_path):
    from pyrolvm.runs import train_vae

    kw = dict(dataset="digits", epochs=3, eval_samples=5, device="cuda", progress=False)
    a = train_vae(out=str(tmp_path / "a"), **kw)
    b = train_vae(out=str(tmp_path / "b"), **kw)
    # same seed, same device: the same curve (CUDA's matmuls are deterministic at this size)
    assert a["curves"]["train_elbo"] == b["curves"]["train_elbo"]
