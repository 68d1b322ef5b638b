"""One VAE run: config -> data -> model + guide -> train -> evaluate -> run folder.

``train_vae(...)`` is ``pyrolvm train vae`` in one Python call; ``evaluate_vae(folder)`` is
``pyrolvm evaluate FOLDER``.
"""

import dataclasses
import os
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

import pyro
import torch
import tyro

from .. import plots, plots_latent
from ..data import BINARIZATIONS, MASKS
from ..devices import resolve_device
from ..errors import ConfigError, Interrupted, TrainingDiverged
from ..fitting.amortization import amortization_gap
from ..guides import (
    BASELINES,
    RELAXATIONS,
    AmortizedBernoulli,
    AmortizedCategorical,
    AmortizedFlow,
    AmortizedFullCovariance,
    AmortizedNormal,
    TwoLayerGuide,
)
from ..inference import (
    ELBO_NAME,
    SCHEDULES,
    as_tuple,
    bound_name,
    importance_sample,
    is_elbo,
    make_scheduled_optim,
    mean_and_stderr,
    train,
)
from ..inference import latent_diagnostics as inference_latent_diagnostics
from ..inference.batches import num_rows, rows
from ..models import (
    DECODERS,
    LATENTS,
    LIKELIHOODS,
    PRIORS,
    VAE,
    SigmoidBeliefNet,
    TwoLayerVAE,
    bits_per_dim,
    scored_on,
)
from ..nets import ACTIVATIONS
from .common import (
    CHECKPOINT,
    extended,
    format_summary,
    load_data,
    on_device,
    record_stop,
    reload_run,
    run_folder,
    save_checkpoint,
    write_json,
)
from .config import Count, PositiveFloat, Range, Sizes
from .missing import imputation_figure, missing_metrics, missing_rows, run_masks
from .objective import ObjectiveConfig
from .registry import RunKind, register

Beta = Annotated[float, Range(0, 1, high_open=True)]
NonNegative = Annotated[float, Range(0)]
#: The ``--guide`` choices: the diagonal Gaussian, the full-covariance Gaussian, planar flows
#: and inverse autoregressive flows (:mod:`pyrolvm.guides.flows`).
GUIDES: tuple[str, ...] = ("normal", "fullcov", "planar", "iaf")
#: Objectives that evaluate the guide's log density with detached parameters (a planar flow
#: cannot: it has no inverse).
PATH_DERIVATIVE_ELBOS: tuple[str, ...] = ("stl", "dreg", "miwae-dreg")


@dataclass
class VAEConfig(ObjectiveConfig):
    """Train a VAE (Kingma & Welling 2014) with SVI, evaluate the test log-likelihood by
    importance sampling, and write the run folder. The flags of ``pyrolvm train vae``; a field
    left ``None`` takes the dataset's default (``DATASET_DEFAULTS``: MNIST follows Burda et
    al. 2016, section 5, 784-200-200-50 with tanh; digits is sized to train in about two
    minutes on 2 cores)."""

    DATASET_DEFAULTS: ClassVar[dict] = {
        "digits": dict(latent_dim=8, hidden=(128, 128), epochs=300, batch_size=100, lr=3e-3),
        "mnist": dict(latent_dim=50, hidden=(200, 200), epochs=10, batch_size=100, lr=2e-3),
    }

    out: str = "runs/vae"
    """the run folder"""
    binarize: Literal[BINARIZATIONS] | None = None
    """default: dynamic for bernoulli, none for gaussian"""
    likelihood: Literal[LIKELIHOODS] = "bernoulli"
    """p(x | z)"""
    latent: Literal[("gaussian",) + LATENTS] = "gaussian"
    """gaussian: the VAE; bernoulli / categorical: a sigmoid belief network with binary or
    one-hot latents (--latent-dim units or variables)"""
    num_categories: Annotated[int, Range(2)] = 10
    """classes per variable of --latent categorical"""
    reparameterized: Annotated[
        bool, tyro.conf.arg(name="reparam"), tyro.conf.FlagCreatePairsOff
    ] = True
    """--no-reparam samples the Gaussian guide without reparameterization, so that tracegraph
    uses the score function (REINFORCE)"""
    baseline: Literal[BASELINES] = "none"
    """score-function baseline of tracegraph at non-reparameterized latents"""
    relaxation: Literal[RELAXATIONS] = "none"
    """discrete latents: Concrete / Gumbel-softmax relaxation, optionally straight-through"""
    temperature: PositiveFloat = 0.5
    """relaxation temperature"""
    latent_dim: Count | None = None
    """latent dimensions (default: 8 digits, 50 mnist)"""
    hidden: Sizes | None = None
    """hidden sizes of encoder and decoder, e.g. 200,200 (default: 128,128 digits, 200,200
    mnist)"""
    activation: Literal[tuple(ACTIVATIONS)] = "tanh"
    """hidden-layer nonlinearity"""
    epochs: Count | None = None
    """passes over the training data (default: 300 digits, 10 mnist)"""
    batch_size: Count | None = None
    """datapoints per step (default: 100)"""
    lr: PositiveFloat | None = None
    """Adam learning rate (default: 3e-3 digits, 2e-3 mnist)"""
    betas: tuple[Beta, Beta] = (0.9, 0.999)
    """Adam betas, each in [0, 1)"""
    eps: PositiveFloat = 1e-8
    """Adam eps"""
    eval_samples: Count = 1000
    """importance samples K for the test log-likelihood"""
    eval_batch_size: Count = 100
    """test datapoints per evaluation call"""
    amortization_gap: Annotated[int, Range(0)] = 0
    """after training, the amortization gap (Cremer et al. 2018) on this many test points:
    a per-datapoint guide refined from the encoder's output by SVI (0: not computed)"""
    lr_schedule: Literal[SCHEDULES] = "constant"
    """constant, or burda: the 8 stages of Burda et al. (2016), stage i lasting 3^i/3280 of
    --epochs at --lr times 10^(-i/7) (--epochs 3280 --lr 1e-3 --batch-size 20 --eps 1e-4 is
    their protocol)"""
    mask: Literal[("none",) + MASKS] = "none"
    """missing data (Mattei & Frellsen 2019): which pixels of each image are unobserved, drawn
    once with --seed: random (each pixel missing with probability --missing-rate), square
    (one square hole of area --missing-rate), half (top, bottom, left or right half)"""
    missing_rate: Annotated[float, Range(0, 1, high_open=True)] | None = None
    """--mask random / square: the share of missing pixels (default 0.5; given without
    --mask, it means --mask random)"""
    guide: Literal[GUIDES] = "normal"
    """q(z | x): normal (diagonal Gaussian), fullcov (full-covariance Gaussian), planar
    (planar flows, Rezende & Mohamed 2015) or iaf (inverse autoregressive flows, Kingma et
    al. 2016) on top of the amortized Gaussian"""
    flows: Count | None = None
    """--guide planar / iaf: number of flow steps (default 4)"""
    prior: Literal[PRIORS] = "normal"
    """p(z): normal (N(0, I)), vamp (VampPrior, Tomczak & Welling 2018; with --guide normal or
    fullcov) or flow (a learned real-NVP flow over N(0, I))"""
    pseudo_inputs: Count | None = None
    """--prior vamp: number K of pseudo-inputs, started at K random training images (default
    500)"""
    prior_flows: Count | None = None
    """--prior flow: number of coupling steps (default 2)"""
    layers: Literal[1, 2] = 1
    """stochastic layers: 2 is the VAE of Burda et al. 2016, section 5 (latents --latent-dim and
    --latent-dim2, deterministic layers --hidden and --hidden2), with its two-layer guide"""
    latent_dim2: Count | None = None
    """--layers 2: size of the top latent z2 (default: 4 digits, 50 mnist); --latent-dim then
    defaults to 16 digits, 100 mnist"""
    hidden2: Sizes | None = None
    """--layers 2: hidden sizes between z1 and z2 (default: 64,64 digits, 100,100 mnist)"""
    levels: Count | None = None
    """--likelihood categorical: grey levels per pixel, the data scored as round(x * (levels -
    1)) (default: 256 mnist and .npz files, 17 digits)"""
    decoder: Literal[DECODERS] = "mlp"
    """p(x | z): mlp (pixels independent given z) or pixelcnn, the PixelVAE decoder
    (Gulrajani et al. 2017): a gated PixelCNN over the pixels in raster order whose every layer
    reads a map of z computed by the --hidden MLP (bernoulli likelihood; exact log p(x | z),
    sequential sampling)"""
    decoder_layers: Count = 3
    """--decoder pixelcnn: gated masked-convolution layers (kernel 5)"""
    decoder_channels: Count = 16
    """--decoder pixelcnn: channels of each stack"""

    def resolve_defaults(self, values):
        if values["mask"] == "none" and values["missing_rate"] is not None:
            values["mask"] = "random"
        if values["mask"] != "none" and values["missing_rate"] is None:
            values["missing_rate"] = 0.5
        if values["binarize"] is None:
            values["binarize"] = "dynamic" if values["likelihood"] == "bernoulli" else "none"
        mnist = values["dataset"] == "mnist"
        if values["layers"] == 2:
            if self.latent_dim is None:
                values["latent_dim"] = 100 if mnist else 16
            if values["latent_dim2"] is None:
                values["latent_dim2"] = 50 if mnist else 4
            if values["hidden2"] is None:
                values["hidden2"] = (100, 100) if mnist else (64, 64)
        if values["likelihood"] == "categorical" and values["levels"] is None:
            values["levels"] = 17 if values["dataset"] == "digits" else 256
        for key, default, needs in (
            ("flows", 4, values["guide"] in ("planar", "iaf")),
            ("pseudo_inputs", 500, values["prior"] == "vamp"),
            ("prior_flows", 2, values["prior"] == "flow"),
        ):
            if values[key] is None and needs:
                values[key] = default

    def check(self):
        if self.decoder == "pixelcnn" and (
            self.latent != "gaussian"
            or self.layers != 1
            or self.likelihood != "bernoulli"
            or self.mask != "none"
        ):
            raise ConfigError(
                "--decoder pixelcnn is for the one-layer Gaussian-latent VAE with the bernoulli "
                "likelihood on fully observed images (missing pixels would still feed the "
                "decoder's context): drop --latent, --layers 2, --likelihood or --mask"
            )
        if self.latent == "gaussian" and self.relaxation != "none":
            raise ConfigError(
                "--relaxation is for discrete latents: add --latent bernoulli or "
                "--latent categorical"
            )
        if self.baseline != "none" and (
            self.relaxation != "none" or (self.latent == "gaussian" and self.reparameterized)
        ):
            raise ConfigError(
                "--baseline applies to score-function (non-reparameterized) "
                "latents: add --no-reparam, or use discrete latents without "
                "--relaxation"
            )
        if self.latent != "gaussian" and self.likelihood != "bernoulli":
            raise ConfigError(
                "discrete latents come with a Bernoulli likelihood: drop --likelihood"
            )
        if self.mask != "none" and self.latent != "gaussian":
            raise ConfigError("--mask (missing data) is for Gaussian latents: drop --latent")
        if self.mask == "half" and self.missing_rate != 0.5:
            raise ConfigError(
                f"--mask half hides half of each image: drop --missing-rate {self.missing_rate:g}"
            )
        if self.mask != "none" and (
            self.guide != "normal" or self.prior == "vamp" or self.layers != 1
        ):
            raise ConfigError(
                "--mask (missing data) reads the mask with the diagonal Gaussian guide of one "
                "layer: drop --guide, --prior vamp and --layers"
            )
        if self.mask != "none" and self.amortization_gap:
            raise ConfigError("--amortization-gap is computed on complete data: drop --mask")
        self.check_posterior_and_prior()
        self.check_objective()

    def check_posterior_and_prior(self):
        """The rules joining --guide, --prior, --layers, --likelihood and their options."""
        for key, needs, what in (
            ("flows", self.guide in ("planar", "iaf"), "--guide planar or iaf"),
            ("pseudo_inputs", self.prior == "vamp", "--prior vamp"),
            ("prior_flows", self.prior == "flow", "--prior flow"),
            ("latent_dim2", self.layers == 2, "--layers 2"),
            ("hidden2", self.layers == 2, "--layers 2"),
            ("levels", self.likelihood == "categorical", "--likelihood categorical"),
        ):
            if getattr(self, key) is not None and not needs:
                raise ConfigError(f"--{key.replace('_', '-')} is for {what}")
        richer = self.guide != "normal" or self.prior != "normal" or self.layers != 1
        if richer and self.latent != "gaussian":
            raise ConfigError(
                "--guide, --prior and --layers are for Gaussian latents: drop --latent"
            )
        if richer and not self.reparameterized:
            raise ConfigError(
                "--no-reparam is for the diagonal Gaussian guide of one layer: drop it"
            )
        if self.likelihood in ("continuous-bernoulli", "categorical") and self.binarize not in (
            None,
            "none",
        ):
            raise ConfigError(
                f"--likelihood {self.likelihood} scores grey levels: drop --binarize (it is for "
                "the Bernoulli likelihood)"
            )
        if self.layers == 2 and self.guide != "normal":
            raise ConfigError("--layers 2 comes with its own two-layer guide: drop --guide")
        if self.prior == "vamp" and self.guide not in ("normal", "fullcov"):
            raise ConfigError(
                "--prior vamp mixes the guide's Gaussian posteriors at the pseudo-inputs: use "
                "--guide normal or fullcov"
            )
        if self.prior == "vamp" and self.layers == 2:
            raise ConfigError("--prior vamp is for one stochastic layer: drop --layers 2")
        if self.guide == "planar" and self.elbo in PATH_DERIVATIVE_ELBOS:
            raise ConfigError(
                f"--elbo {self.elbo} evaluates the guide's density at its draws with "
                "the parameters detached, which needs the flow's inverse; a planar flow has "
                "none: use --guide iaf, or --elbo trace / iwae"
            )
        if self.amortization_gap and (self.guide != "normal" or self.layers != 1):
            raise ConfigError(
                "--amortization-gap refines a diagonal Gaussian per datapoint: it needs "
                "--guide normal and --layers 1"
            )
        if self.latent_dim is not None and self.prior == "flow" and self.latent_dim < 2:
            raise ConfigError("--prior flow needs --latent-dim >= 2")
        if self.latent_dim2 is not None and self.prior == "flow" and self.latent_dim2 < 2:
            raise ConfigError("--prior flow needs --latent-dim2 >= 2")


#: Per-dataset defaults of :class:`VAEConfig` (kept for ``from pyrolvm.runs import ...``).
DATASET_DEFAULTS = VAEConfig.DATASET_DEFAULTS


def build(cfg, data_dim, data_mean=None, pseudo_init=None, image_shape=None):
    """The model and guide of a resolved config, with mirrored hidden layers:
    :class:`~pyrolvm.models.VAE` (with ``cfg.prior`` and ``cfg.likelihood``) and the guide of
    ``cfg.guide`` and ``cfg.decoder`` (:class:`~pyrolvm.guides.AmortizedNormal`,
    :class:`~pyrolvm.guides.AmortizedFullCovariance`, :class:`~pyrolvm.guides.AmortizedFlow`)
    for ``latent`` ``"gaussian"``; :class:`~pyrolvm.models.TwoLayerVAE` with
    :class:`~pyrolvm.guides.TwoLayerGuide` for ``layers`` 2; or
    :class:`~pyrolvm.models.SigmoidBeliefNet` with :class:`~pyrolvm.guides.AmortizedBernoulli`
    / :class:`~pyrolvm.guides.AmortizedCategorical`. ``pseudo_init``: the VampPrior's initial
    pseudo-inputs, shape (K, D) (a reloaded run takes them from its checkpoint);
    ``image_shape``: (H, W) of the data, for ``cfg.decoder`` ``"pixelcnn"``."""
    if cfg.latent == "gaussian" and cfg.layers == 2:
        dims, hidden = (cfg.latent_dim, cfg.latent_dim2), (cfg.hidden, cfg.hidden2)
        model = TwoLayerVAE(
            data_dim,
            dims,
            hidden,
            cfg.activation,
            cfg.likelihood,
            data_mean,
            prior=cfg.prior,
            prior_flows=cfg.prior_flows or 2,
            levels=cfg.levels or 256,
        )
        return model, TwoLayerGuide(data_dim, dims, hidden, cfg.activation)
    if cfg.latent == "gaussian":
        guide = None

        def posterior(u):  # the VampPrior's components: the guide's posterior (built below)
            assert guide is not None
            return guide.posterior(u)

        model = VAE(
            data_dim,
            cfg.latent_dim,
            cfg.hidden,
            cfg.activation,
            cfg.likelihood,
            data_mean,
            prior=cfg.prior,
            num_pseudo_inputs=cfg.pseudo_inputs or 500,
            posterior=posterior,
            pseudo_init=pseudo_init,
            prior_flows=cfg.prior_flows or 2,
            levels=cfg.levels or 256,
            decoder=cfg.decoder,
            image_shape=image_shape,
            decoder_layers=cfg.decoder_layers,
            decoder_channels=cfg.decoder_channels,
        )
        shape = (data_dim, cfg.latent_dim, cfg.hidden, cfg.activation)
        if cfg.guide == "fullcov":
            guide = AmortizedFullCovariance(*shape)
        elif cfg.guide in ("planar", "iaf"):
            guide = AmortizedFlow(*shape[:2], cfg.guide, cfg.flows or 4, *shape[2:])
        else:
            guide = AmortizedNormal(
                *shape,
                reparameterized=cfg.reparameterized,
                baseline=cfg.baseline,
                mask_input=cfg.mask != "none",
            )
        return model, guide
    relaxed_prior = cfg.temperature if cfg.relaxation == "concrete" else None
    model = SigmoidBeliefNet(
        data_dim,
        cfg.latent_dim,
        cfg.latent,
        cfg.num_categories,
        cfg.hidden,
        cfg.activation,
        data_mean,
        temperature=relaxed_prior,
    )
    options = dict(
        hidden=cfg.hidden,
        activation=cfg.activation,
        relaxation=cfg.relaxation,
        temperature=cfg.temperature,
        baseline=cfg.baseline,
    )
    if cfg.latent == "bernoulli":
        return model, AmortizedBernoulli(data_dim, cfg.latent_dim, **options)
    return model, AmortizedCategorical(data_dim, cfg.latent_dim, cfg.num_categories, **options)


class _discrete:
    """Within this context a relaxed (Concrete / straight-through) model and guide are their
    discrete versions, so that importance sampling estimates the discrete model's log p(x)."""

    def __init__(self, model, guide):
        self.model, self.guide = model, guide

    def __enter__(self):
        self.saved = (
            getattr(self.model, "temperature", None),
            getattr(self.guide, "relaxation", None),
        )
        if isinstance(self.model, SigmoidBeliefNet):
            self.model.temperature, self.guide.relaxation = None, "none"

    def __exit__(self, *exc):
        if isinstance(self.model, SigmoidBeliefNet):
            self.model.temperature, self.guide.relaxation = self.saved


def evaluate(model, guide, test, cfg):
    """Importance-sampled test figures with ``cfg.eval_samples`` samples, seeded by ``cfg.seed``.

    Returns:
        dict with ``test_elbo``, ``test_nll``, ``test_nll_stderr`` (nats per datapoint),
        ``test_ess`` (mean ESS) and ``eval_samples``.
    """
    pyro.set_rng_seed(cfg.seed)
    with _discrete(model, guide):
        result = importance_sample(
            model,
            guide,
            test,
            num_samples=cfg.eval_samples,
            batch_size=cfg.eval_batch_size,
            progress=cfg.progress,
        )  # (chunks of particles from the memory budget: importance_sample's default)
    nll, nll_se = mean_and_stderr(-result.log_likelihood)
    elbo, _ = mean_and_stderr(result.elbo)
    return {
        "test_elbo": elbo,
        "test_nll": nll,
        "test_nll_stderr": nll_se,
        "test_ess": result.ess.mean().item(),
        "eval_samples": cfg.eval_samples,
        **scoring(cfg, as_tuple(test)[0].shape[-1], nll, nll_se),
    }


def scoring(cfg, data_dim, nll, nll_se):
    """What the test log-likelihood scores and in which units, for metrics.json:
    ``scored_on`` (:func:`pyrolvm.models.scored_on`: ``"binarized"``, ``"8-bit"``, ``"grey,
    [0, 1] density"``, ...; figures of different kinds are never compared), ``guide``,
    ``prior``, ``layers``, ``decoder``, and for discrete data (Bernoulli, categorical)
    ``test_bits_per_dim`` and its ``_stderr`` (``nll / (D ln 2)``)."""
    out = {
        "scored_on": scored_on(cfg.likelihood, cfg.binarize, cfg.levels or 256),
        "guide": cfg.guide if cfg.layers == 1 else "two-layer",
        "prior": cfg.prior,
        "layers": cfg.layers,
        "decoder": cfg.decoder,
    }
    if cfg.likelihood in ("bernoulli", "categorical"):
        out["test_bits_per_dim"] = bits_per_dim(nll, data_dim)
        out["test_bits_per_dim_stderr"] = bits_per_dim(nll_se, data_dim)
    return out


#: Draws of the guide per test point for the latent diagnostics' Monte Carlo estimates (where
#: the KL has no closed form: VampPrior, flow priors and guides, two layers).
LATENT_SAMPLES = 100


def latent_diagnostics(model, guide, test, cfg, final):
    """Rate, KL per dimension, active units and the mutual information of a Gaussian-latent
    run on the test set (:func:`pyrolvm.inference.latent_diagnostics`, the latent sites read
    from the traces: closed-form KLs for the diagonal Gaussian against N(0, I), Monte Carlo
    estimates with ``LATENT_SAMPLES`` draws and their standard error for the VampPrior, flows,
    the full-covariance guide and two layers), with ``distortion = -test_elbo - rate`` (nats
    per datapoint, Alemi et al. 2018: the evaluator's ELBO with ``eval_samples`` draws, so
    that rate + distortion = -test_elbo), the draws from a stream seeded by ``cfg.seed``
    (the global RNG is untouched). An empty dict for discrete latents."""
    if cfg.latent != "gaussian":
        return {}
    batch = max(1, (1000 if cfg.decoder == "pixelcnn" else 10000) // LATENT_SAMPLES)
    out = inference_latent_diagnostics(
        model,
        guide,
        test,
        num_samples=LATENT_SAMPLES,
        batch_size=batch,
        seed=cfg.seed,
    ).summary()
    del out["distortion_stderr"]  # the distortion below comes from the evaluator's ELBO
    out["distortion"] = -final["test_elbo"] - out["rate"]
    return out


#: SVI steps, learning rate and particles of the amortization gap's refinement.
GAP_STEPS, GAP_LR, GAP_PARTICLES = 500, 0.05, 10


def gap_metrics(model, guide, test, cfg, num_points):
    """The amortization gap (:func:`pyrolvm.fitting.amortization.amortization_gap`) of a
    Gaussian-latent VAE on the first ``num_points`` test points, seeded by ``cfg.seed``, with
    ``cfg.eval_samples`` samples per estimate: ``amortization_gap``, ``approximation_gap``,
    ``inference_gap`` and their ``*_stderr`` (nats), ``gap_points``, ``gap_steps``.

    Raises:
        ConfigError: discrete latents, or ``num_points`` < 1.
    """
    if cfg.latent != "gaussian":
        raise ConfigError("the amortization gap is computed for Gaussian latents only")
    if int(num_points) < 1:
        raise ConfigError(f"--amortization-gap must be >= 1 test points, got {num_points}")
    pyro.set_rng_seed(cfg.seed)
    gap = amortization_gap(
        model,
        guide,
        test[: int(num_points)],
        steps=GAP_STEPS,
        lr=GAP_LR,
        num_particles=GAP_PARTICLES,
        eval_samples=cfg.eval_samples,
    )
    return gap.summary()


def test_bound(objective, model, guide, test, cfg, epoch):
    """The training objective's own bound per test datapoint (``-objective.loss`` over the test
    set in minibatches of ``cfg.batch_size``, divided by N; nats), for the curve of
    ``elbo_curve.png`` beside the training bound: the draws come from a stream seeded by
    ``cfg.seed`` and ``epoch`` (the global RNG is untouched)."""
    device = as_tuple(test)[0].device
    n = num_rows(test)
    total = 0.0
    with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(cfg.seed * 1_000_003 + epoch)
        for i in range(0, n, cfg.batch_size):
            total += objective.loss(model, guide, *rows(test, slice(i, i + cfg.batch_size)))
    return -total / n


def trained_bound(history, objective=None):
    """The name of the bound ``history["train_elbo"]`` holds (:func:`pyrolvm.inference.bound_name`):
    the last epoch's; for a schedule whose bound changed over the epochs (an annealed beta),
    the first and last joined by an arrow; the objective's own when no epoch ran."""
    names = [n for n in history.get("bound_name", []) if n]
    if not names:
        return bound_name(objective) if objective is not None else ELBO_NAME
    return names[-1] if names[0] == names[-1] else f"{names[0]} → {names[-1]}"


def bound_panels(history):
    """The panels of ``elbo_curve.png``: one axis of train and test ELBO when the training
    objective's bound is the ELBO; else one axis of the training bound on the training and
    test data (``test_bound``) and a second of the test ELBO, so that no axis shows two
    different bounds as train against test."""
    bound = trained_bound(history)
    if all(is_elbo(n) for n in history.get("bound_name", []) if n):
        series = {"train ELBO": history["train_elbo"], "test ELBO": history.get("test_elbo")}
        return [("ELBO", "ELBO per datapoint (nats)", series)]
    return [
        (
            f"the training objective: {bound}",
            "nats per datapoint",
            {f"train {bound}": history["train_elbo"], f"test {bound}": history.get("test_bound")},
        ),
        ("ELBO (K = 1)", "ELBO per datapoint (nats)", {"test ELBO": history.get("test_elbo")}),
    ]


def _nats(value):
    return "n/a (no epoch ran)" if value is None else f"{value:.2f} nats"


def figures(folder, model, guide, data, history, kl_order=None):
    """Write samples.png, reconstructions.png, elbo_curve.png, for Gaussian latents
    latent_traversals.png (of the first test image's posterior mean, along the 10 dimensions
    of ``kl_order``: default the first 10) and interpolation.png (between the posterior means
    of the first two test images), and latent_manifold.png when the latent is 2-D, into
    ``folder``; return their file names."""
    names = ["samples.png", "reconstructions.png", "elbo_curve.png"]
    shape = data.image_shape
    autoregressive = getattr(model, "decoder_kind", "mlp") == "pixelcnn"
    plots.image_grid(
        os.path.join(folder, names[0]),
        model.sample(64),
        shape,
        "samples from the model (p(x_d = 1 | x_<d, z) along one draw, z ~ p(z))"
        if autoregressive
        else "samples from the model (mean of p(x | z), z ~ p(z))",
    )
    with torch.no_grad():
        x = data.test[:32]
        recon = model.decode(guide.encode(x)[0])
    plots.reconstructions(os.path.join(folder, names[1]), x, recon, shape)
    plots.curve_panels(os.path.join(folder, names[2]), bound_panels(history))
    if isinstance(model, VAE):
        names += ["latent_traversals.png", "interpolation.png"]
        loc = guide.encode(data.test[:2])[0].detach()
        dims = kl_order[:10] if kl_order is not None else range(min(10, model.latent_dim))
        plots_latent.latent_traversals(
            os.path.join(folder, names[-2]), model.decode, loc[0], shape, dims=dims
        )
        plots_latent.interpolation(
            os.path.join(folder, names[-1]), model.decode, loc[0], loc[-1], shape
        )
    if model.latent_dim == 2 and isinstance(model, VAE):
        names.append("latent_manifold.png")
        plots.latent_manifold(
            os.path.join(folder, names[-1]), model.decode, shape, device=data.test.device
        )
    return names


def _load_data(cfg, data):
    binary = cfg.likelihood == "bernoulli"
    data = load_data(cfg, cfg.binarize, data, binary=binary and cfg.binarize == "none")
    if binary and not ((data.train >= 0) & (data.train <= 1)).all():
        raise ConfigError(
            "a Bernoulli likelihood with binarization needs pixel intensities in [0, 1]: "
            "rescale the data (e.g. x / 255) or use --likelihood gaussian"
        )
    _check_grey_levels(cfg, data)
    return data


def _check_grey_levels(cfg, data):
    """Data the continuous Bernoulli (values in [0, 1]) and the categorical (values on the
    grid of ``levels`` grey levels) can score."""
    if cfg.likelihood not in ("continuous-bernoulli", "categorical"):
        return
    for x, which in ((data.train, "training"), (data.test, "test")):
        if not ((x >= 0) & (x <= 1)).all():
            raise ConfigError(
                f"--likelihood {cfg.likelihood} scores intensities in [0, 1], but the {which} "
                "data leaves it: rescale it (e.g. x / 255)"
            )
        if cfg.likelihood == "categorical":
            scaled = x * (cfg.levels - 1)
            if ((scaled - scaled.round()).abs() > 1e-3).any():
                raise ConfigError(
                    f"--likelihood categorical with --levels {cfg.levels} scores the grey "
                    f"levels k / {cfg.levels - 1}, but the {which} data holds other values: "
                    "give the data's number of levels (256 for 8-bit images, 17 for digits)"
                )


def _pseudo_init(cfg, data):
    """K training images drawn without replacement by a generator seeded by ``cfg.seed`` (the
    global RNG is untouched), the VampPrior's initial pseudo-inputs; ``None`` otherwise."""
    if cfg.prior != "vamp":
        return None
    k = cfg.pseudo_inputs
    if k > data.train.shape[0]:
        raise ConfigError(
            f"--pseudo-inputs {k} exceeds the {data.train.shape[0]} training images: lower it"
        )
    gen = torch.Generator().manual_seed(cfg.seed)
    return data.train[torch.randperm(data.train.shape[0], generator=gen)[:k]]


def train_vae(config=None, data=None, **overrides):
    """Train and evaluate a VAE and write the run folder; ``pyrolvm train vae`` in one call.

    Args:
        config (VAEConfig or None): settings; keyword ``overrides`` replace its fields
            (e.g. ``train_vae(dataset="digits", epochs=5, out="runs/a")``).
        data (pyrolvm.data.Dataset or None): data to use instead of loading ``config.dataset``.

    Writes into ``config.out``: ``config.json``; ``metrics.json`` (per-epoch ``curves``:
    ``train_elbo``, the training objective's own bound, named per epoch in ``bound_name``
    (:func:`pyrolvm.inference.bound_name`: the ELBO, or e.g. the IWAE-K bound), ``test_elbo``,
    ``test_bound`` (the same bound on the test set, where it is not the ELBO), ``seconds``;
    final ``train_elbo`` and its ``bound_name``, ``test_elbo``, ``test_nll``,
    ``test_nll_stderr``, ``test_ess``, ``seconds_per_epoch``; nats per datapoint; for Gaussian
    latents the test set's ``rate``, ``distortion``, ``kl_per_dim``, ``activity``,
    ``active_units``, ``mutual_information``, see ``latent_diagnostics``); ``checkpoint.pt``
    (model and guide state and the training state of :func:`pyrolvm.inference.train`:
    optimizer, RNGs, position; rewritten after every epoch and on interruption); the PNG
    figures. A folder holding another run is refused unless ``overwrite`` (cleared first) or
    ``resume`` (continued from its checkpoint, ending as the uninterrupted run would; with
    more ``epochs`` than the run had, extended to them, as if trained for them at once;
    ``config.json`` then records the new count).

    Returns:
        dict: the metrics written to ``metrics.json``.

    Raises:
        ConfigError, DataError: bad settings or data, or an occupied run folder (nothing is
            written).
        TrainingDiverged: the loss became NaN; the last good epoch's checkpoint and the
            metrics so far stay in the run folder.
        Interrupted: SIGINT/SIGTERM; the checkpoint holds the last step and metrics.json the
            curves so far (``"complete": false``).
    """
    cfg = dataclasses.replace(config or VAEConfig(), **overrides).resolved()
    device = resolve_device(cfg.device)
    data = on_device(_load_data(cfg, data), device)
    config_dict = dataclasses.asdict(cfg) | {"data_dim": data.data_dim}
    extendable, fixed = ("epochs",), ""
    if cfg.lr_schedule != "constant":
        extendable, fixed = (), f"--lr-schedule {cfg.lr_schedule} spreads over --epochs"
    with run_folder(cfg.out, "vae", config_dict, cfg.resume, cfg.overwrite, extendable, fixed) as (
        folder,
        saved,
    ):
        pyro.clear_param_store()
        pyro.set_rng_seed(cfg.seed)
        model, guide = build(
            cfg, data.data_dim, data.train.mean(0), _pseudo_init(cfg, data), data.image_shape
        )
        model.to(device)
        guide.to(device)
        masks = run_masks(cfg, data)
        train_data = data.train if masks is None else (data.train, masks[0])
        test_data = data.test if masks is None else (data.test, masks[1])
        elbo = cfg.make_objective()
        optim = make_scheduled_optim(cfg.lr, cfg.betas, cfg.eps, cfg.lr_schedule, cfg.epochs)
        if extended(saved, config_dict):  # a new run, or one given more --epochs
            write_json(os.path.join(folder, "config.json"), config_dict)

        def end_of_epoch(epoch, history):
            with torch.no_grad(), _discrete(model, guide):
                test_elbo = (
                    importance_sample(model, guide, test_data, num_samples=1, batch_size=1000)
                    .elbo.mean()
                    .item()
                )
            out = {"test_elbo_curve": test_elbo}
            if not is_elbo(bound_name(elbo)):  # the training objective's bound on test data
                out["test_bound_curve"] = test_bound(elbo, model, guide, test_data, cfg, epoch)
            return out

        def save(state):
            save_checkpoint(
                os.path.join(folder, CHECKPOINT),
                {
                    "kind": "vae",
                    "config": config_dict,
                    "epoch": len(state["history"]["train_elbo"]),
                    "train": state,
                    "model": model.state_dict(),
                    "guide": guide.state_dict(),
                },
            )

        try:
            history = train(
                model,
                guide,
                train_data,
                elbo,
                optim,
                epochs=cfg.epochs,
                batch_size=cfg.batch_size,
                transform=data.train_transform,
                callback=end_of_epoch,
                progress=cfg.progress,
                checkpoint=save,
                resume_from=saved and saved["train"],
            )
        except (TrainingDiverged, Interrupted) as exc:
            raise record_stop(folder, exc) from None
        history["test_elbo"] = history.pop("test_elbo_curve", [])
        if "test_bound_curve" in history:
            history["test_bound"] = history.pop("test_bound_curve")
        final = evaluate(model, guide, test_data, cfg)
        final.update(latent_diagnostics(model, guide, test_data, cfg, final))
        imputed = None
        if masks is not None:
            missing, imputed = missing_metrics(model, guide, data, masks, cfg)
            final.update(missing)
        if cfg.amortization_gap:
            final.update(gap_metrics(model, guide, data.test, cfg, cfg.amortization_gap))
        seconds = history["seconds"]
        metrics = {
            "status": "ok",
            "complete": True,
            "train_elbo": history["train_elbo"][-1] if history["train_elbo"] else None,
            "bound_name": trained_bound(history, elbo),
            **final,
            "seconds_per_epoch": sum(seconds) / len(seconds) if seconds else None,
            "epochs": len(history["train_elbo"]),
            "curves": history,
        }
        kl = metrics.get("kl_per_dim")
        one_site = kl and len(kl) == cfg.latent_dim and cfg.layers == 1
        order = sorted(range(len(kl)), key=lambda u: -kl[u]) if one_site else None
        metrics["figures"] = figures(folder, model, guide, data, history, order)
        if masks is not None and imputed is not None:
            metrics["figures"].append(imputation_figure(folder, data, masks, imputed))
        write_json(os.path.join(folder, "metrics.json"), metrics)
    return metrics


def evaluate_vae(
    folder, eval_samples=None, data_root=None, progress=True, amortization_gap=None, device="auto"
):
    """Reload the checkpoint of a VAE run folder and recompute its test figures.

    With the run's own ``eval_samples`` and seed the numbers equal those in its metrics.json.

    Args:
        folder (str): a folder written by :func:`train_vae`.
        eval_samples (int or None): importance samples K (default: the run's).
        data_root (str or None): MNIST root, if it moved since the run.
        amortization_gap (int or None): also the amortization gap on this many test points
            (``gap_metrics``).
        device (str): where to evaluate (``--device``; the run's own device is not needed).

    Returns:
        dict: ``test_elbo``, ``test_nll``, ``test_nll_stderr``, ``test_ess``, ``eval_samples``,
        for Gaussian latents the latent diagnostics (``latent_diagnostics``: ``rate``,
        ``distortion``, ``kl_per_dim``, ``activity``, ``active_units``,
        ``mutual_information``, ...), and the gap's figures when asked.

    Raises:
        ConfigError: no checkpoint in ``folder``.
    """
    overrides = {} if eval_samples is None else {"eval_samples": eval_samples}
    overrides["device"] = device
    state, cfg, data_dim = reload_run(folder, "vae", VAEConfig, data_root, progress, **overrides)
    device = resolve_device(cfg.device)
    data = on_device(_load_data(cfg, None), device)
    pyro.clear_param_store()
    model, guide = build(
        cfg,
        data_dim,
        pseudo_init=state["model"].get("prior.pseudo_inputs"),
        image_shape=data.image_shape,
    )
    model.to(device)
    guide.to(device)
    model.load_state_dict(state["model"])
    guide.load_state_dict(state["guide"])
    masks = run_masks(cfg, data)
    test_data = data.test if masks is None else (data.test, masks[1])
    metrics = evaluate(model, guide, test_data, cfg)
    metrics.update(latent_diagnostics(model, guide, test_data, cfg, metrics))
    if masks is not None:
        metrics.update(missing_metrics(model, guide, data, masks, cfg)[0])
    if amortization_gap is not None:
        metrics.update(gap_metrics(model, guide, data.test, cfg, amortization_gap))
    return metrics


def summary(metrics, cfg, folder):
    """The summary table printed at the end of ``pyrolvm train vae``."""
    cfg = cfg.resolved()
    k = f" K={cfg.num_particles}" if cfg.num_particles > 1 else ""
    rows = [
        (f"train {metrics.get('bound_name') or ELBO_NAME}", _nats(metrics["train_elbo"])),
        ("test ELBO", f"{metrics['test_elbo']:.2f} nats"),
        (
            f"test NLL (K={metrics['eval_samples']})",
            f"{metrics['test_nll']:.2f} ± {metrics['test_nll_stderr']:.2f} nats",
        ),
        ("test ESS (mean)", f"{metrics['test_ess']:.1f} of {metrics['eval_samples']}"),
        *_scoring_rows(metrics),
        *_latent_rows(metrics),
        *_gap_rows(metrics),
        *missing_rows(metrics),
        (
            "seconds per epoch",
            "n/a (no epoch ran)"
            if metrics["seconds_per_epoch"] is None
            else f"{metrics['seconds_per_epoch']:.2f}",
        ),
        (
            "run folder",
            f"{folder}  (config.json, metrics.json, {CHECKPOINT}, {', '.join(metrics['figures'])})",
        ),
    ]
    title = (
        f"VAE on {cfg.dataset}: {cfg.likelihood} likelihood, binarize={cfg.binarize}, "
        f"latent_dim={cfg.latent_dim}{_latent_label(cfg)}, elbo={cfg.elbo}{k}"
        f"{_elbo_label(cfg)}{_vimco_note(cfg)}, "
        f"{metrics['epochs']} epochs, "
        f"seed={cfg.seed}"
        + (
            f", missing data: {cfg.mask} mask at rate {cfg.missing_rate:g} (NLL of x_obs)"
            if cfg.mask != "none"
            else ""
        )
    )
    return format_summary(title, rows)


def _vimco_note(cfg):
    """VIMCO on a reparameterized guide is IWAE draw for draw: said in the summary's title."""
    if cfg.elbo != "vimco" or cfg.latent != "gaussian" or not cfg.reparameterized:
        return ""
    return " (every latent reparameterized: IWAE's gradient; --no-reparam for VIMCO's own)"


def _elbo_label(cfg):
    """The objective's options given on the command line, for the summary's title."""
    given = {k: v for k, v in cfg.elbo_options().items() if v is not None}
    return "".join(f" {k}={v}" for k, v in given.items())


def _latent_rows(metrics):
    """Summary rows of the latent diagnostics (none for discrete latents)."""
    if "rate" not in metrics:
        return []
    rate = f"{metrics['rate']:.2f}"
    if metrics.get("rate_stderr"):
        rate += f" ± {metrics['rate_stderr']:.2f} (Monte Carlo, K={metrics['latent_samples']})"
    return [
        ("rate / distortion", f"{rate} / {metrics['distortion']:.2f} nats"),
        ("active units", f"{metrics['active_units']} of {len(metrics['activity'])}"),
        (
            "mutual information I(x; z)",
            f"{metrics['mutual_information']:.2f} nats ({metrics['mi_points']} test points)"
            if metrics.get("mi_points")
            else "n/a (the guide has no density away from its own draws)",
        ),
    ]


def _latent_label(cfg):
    """The non-default latent and estimator settings, for the summary's title."""
    parts = []
    if cfg.latent != "gaussian":
        parts.append(f"latent={cfg.latent}")
        if cfg.latent == "categorical":
            parts.append(f"num_categories={cfg.num_categories}")
        if cfg.relaxation != "none":
            parts.append(f"relaxation={cfg.relaxation} (temperature {cfg.temperature})")
    elif not cfg.reparameterized:
        parts.append("not reparameterized")
    if cfg.baseline != "none":
        parts.append(f"baseline={cfg.baseline}")
    if cfg.guide != "normal":
        steps = f" ({cfg.flows} steps)" if cfg.guide in ("planar", "iaf") else ""
        parts.append(f"guide={cfg.guide}{steps}")
    if cfg.prior != "normal":
        what = f" (K={cfg.pseudo_inputs})" if cfg.prior == "vamp" else f" ({cfg.prior_flows} steps)"
        parts.append(f"prior={cfg.prior}{what}")
    if cfg.layers == 2:
        parts.append(f"2 stochastic layers ({cfg.latent_dim}, {cfg.latent_dim2})")
    if cfg.decoder != "mlp":
        parts.append(
            f"decoder={cfg.decoder} ({cfg.decoder_layers} layers of {cfg.decoder_channels} "
            "channels)"
        )
    return "".join(", " + p for p in parts)


def _scoring_rows(metrics):
    """The rows saying what the log-likelihood scores, and bits per dimension if discrete."""
    rows = []
    if "test_bits_per_dim" in metrics:
        rows.append(
            (
                "test NLL in bits per dim",
                f"{metrics['test_bits_per_dim']:.4f} ± {metrics['test_bits_per_dim_stderr']:.4f}",
            )
        )
    if "scored_on" in metrics:
        rows.append(("data scored", metrics["scored_on"]))
    return rows


def evaluation_rows(metrics):
    """The rows ``pyrolvm evaluate`` prints for a VAE run."""
    k = metrics["eval_samples"]
    return [
        ("test ELBO", f"{metrics['test_elbo']:.2f} nats"),
        (f"test NLL (K={k})", f"{metrics['test_nll']:.2f} ± {metrics['test_nll_stderr']:.2f} nats"),
        ("test ESS (mean)", f"{metrics['test_ess']:.1f} of {k}"),
        *_scoring_rows(metrics),
        *_latent_rows(metrics),
        *_gap_rows(metrics),
        *missing_rows(metrics),
    ]


def _gap_rows(metrics):
    """Rows of the amortization gap, when computed."""
    if "amortization_gap" not in metrics:
        return []
    return [
        (
            f"{name} gap ({metrics['gap_points']} test points)",
            f"{metrics[key]:.2f} ± {metrics[key + '_stderr']:.2f} nats",
        )
        for name, key in (
            ("amortization", "amortization_gap"),
            ("approximation", "approximation_gap"),
            ("inference", "inference_gap"),
        )
    ]


KIND = register(
    RunKind(
        "vae",
        VAEConfig,
        train_vae,
        evaluate_vae,
        summary,
        evaluation_rows,
        description="a VAE with an amortized Gaussian guide (or a sigmoid belief network)",
        evaluate_options=("eval_samples", "amortization_gap"),
    )
)
