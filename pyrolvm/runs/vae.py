"""``pyrolvm train vae``: a VAE with Gaussian latents (Kingma & Welling 2014) under any
objective, scored by importance sampling and its latent diagnostics; the guide, prior,
likelihood, decoder, two stochastic layers and missing data are settings of it."""

from dataclasses import dataclass
from typing import Annotated, Literal

import pyro
import torch

from .. import plots_latent
from ..data import BINARIZATIONS, MASKS
from ..errors import ConfigError
from ..fitting.amortization import amortization_gap
from ..guides import AmortizedFlow, AmortizedFullCovariance, AmortizedNormal, TwoLayerGuide
from ..inference import latent_diagnostics
from ..models import DECODERS, LIKELIHOODS, PRIORS, VAE, TwoLayerVAE, scored_on
from . import vae_family as family
from .config import Count, Range, Sizes, Switch
from .missing import imputation_figure, missing_metrics, run_masks
from .registry import RunKind, register
from .template import Run

#: The ``--guide`` choices: diagonal, full-covariance Gaussians, planar and IAF flows.
GUIDES: tuple[str, ...] = ("normal", "fullcov", "planar", "iaf")


@dataclass
class VAEConfig(family.AmortizedConfig):
    """The flags of ``pyrolvm train vae`` (:doc:`/runs`); ``None``: the dataset's default or,
    for an option of another flag, that flag's."""

    GROUPS = {
        "data": ("mask", "missing_rate"),
        "objective": ("reparameterized",),
        "evaluation": ("amortization_gap",),
    }

    out: str = "runs/vae"
    binarize: Literal[BINARIZATIONS] | None = None
    """binarization (default dynamic for bernoulli, else none)"""
    likelihood: Literal[LIKELIHOODS] = "bernoulli"
    """p(x | z)"""
    reparameterized: Annotated[bool, Switch("no-reparam")] = True
    """score-function gradients (with tracegraph)"""
    guide: Literal[GUIDES] = "normal"
    """q(z | x)"""
    flows: Count | None = None
    """--guide planar, iaf: flow steps (default 4)"""
    prior: Literal[PRIORS] = "normal"
    """p(z)"""
    pseudo_inputs: Count | None = None
    """--prior vamp: pseudo-inputs K (default 500)"""
    prior_flows: Count | None = None
    """--prior flow: coupling steps (default 2)"""
    layers: Literal[1, 2] = 1
    """stochastic layers (2: Burda et al. 2016)"""
    latent_dim2: Count | None = None
    """--layers 2: size of z2 (default 4; mnist 50)"""
    hidden2: Sizes | None = None
    """--layers 2: z1-z2 MLP (default 64,64; mnist 100,100)"""
    levels: Count | None = None
    """--likelihood categorical: grey levels (default 17 digits, else 256)"""
    decoder: Literal[DECODERS] = "mlp"
    """p(x | z)'s network"""
    decoder_layers: Count = 3
    """--decoder pixelcnn: gated layers"""
    decoder_channels: Count = 16
    """--decoder pixelcnn: channels per stack"""
    mask: Literal[("none",) + MASKS] = "none"
    """missing pixels"""
    missing_rate: Annotated[float, Range(0, 1, high_open=True)] | None = None
    """--mask random, square: share missing (default 0.5)"""
    amortization_gap: Annotated[int, Range(0)] = 0
    """test points (Cremer et al. 2018; 0: none)"""

    def resolve_defaults(self, values):
        if values["mask"] == "none" and values["missing_rate"] is not None:
            values["mask"] = "random"
        if values["mask"] != "none" and values["missing_rate"] is None:
            values["missing_rate"] = 0.5
        if values["binarize"] is None:
            values["binarize"] = "dynamic" if values["likelihood"] == "bernoulli" else "none"
        mnist, two = values["dataset"] == "mnist", values["layers"] == 2
        if two and self.latent_dim is None:
            values["latent_dim"] = 100 if mnist else 16
        for key, default, needs in (
            ("flows", 4, values["guide"] in ("planar", "iaf")),
            ("pseudo_inputs", 500, values["prior"] == "vamp"),
            ("prior_flows", 2, values["prior"] == "flow"),
            ("latent_dim2", 50 if mnist else 4, two),
            ("hidden2", (100, 100) if mnist else (64, 64), two),
            (
                "levels",
                17 if values["dataset"] == "digits" else 256,
                values["likelihood"] == "categorical",
            ),
        ):
            if values[key] is None and needs:
                values[key] = default

    def check(self):
        """The rules between flags (those between parts are the parts' own: ``build``)."""
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
        if self.likelihood in ("continuous-bernoulli", "categorical") and self.binarize != "none":
            raise ConfigError(
                f"--likelihood {self.likelihood} scores grey levels: drop --binarize (it is for "
                "the Bernoulli likelihood)"
            )
        if self.mask == "half" and self.missing_rate != 0.5:
            raise ConfigError(
                f"--mask half hides half of each image: drop --missing-rate {self.missing_rate:g}"
            )
        if self.amortization_gap and (
            self.guide != "normal" or self.layers != 1 or self.mask != "none"
        ):
            raise ConfigError(
                "--amortization-gap refines a diagonal Gaussian per datapoint on complete data: "
                "it needs --guide normal and --layers 1, without --mask"
            )
        self.check_objective()


#: Per-dataset defaults of :class:`VAEConfig` (kept for ``from pyrolvm.runs import ...``).
DATASET_DEFAULTS = VAEConfig.DATASET_DEFAULTS
#: Draws of the guide per test point for the latent diagnostics' Monte Carlo estimates (where
#: the KL has no closed form: VampPrior, flow priors and guides, two layers).
LATENT_SAMPLES = 100
#: SVI steps, learning rate and particles of the amortization gap's refinement.
GAP_STEPS, GAP_LR, GAP_PARTICLES = 500, 0.05, 10


def build(cfg, data_dim, data_mean=None, pseudo_init=None, image_shape=None):
    """The model and guide of a resolved config (mirrored hidden layers): a
    :class:`~pyrolvm.models.VAE` and the guide of ``cfg.guide`` (whose posteriors a VampPrior
    mixes, started at ``pseudo_init`` (K, D)), or the two-layer pair; ConfigError for the
    pairings no part takes."""
    richer = cfg.guide != "normal" or cfg.prior != "normal" or cfg.layers != 1
    if cfg.layers == 2 and (cfg.guide != "normal" or cfg.decoder != "mlp"):
        raise ConfigError(
            "--layers 2 comes with its own guide and decoder: drop --guide, --decoder"
        )
    if cfg.prior == "vamp" and cfg.guide not in ("normal", "fullcov"):
        raise ConfigError(
            "--prior vamp mixes the guide's Gaussian posteriors: use --guide normal or fullcov"
        )
    if cfg.mask != "none" and (richer or cfg.decoder != "mlp"):
        raise ConfigError(
            "--mask (missing data) reads the mask with the diagonal Gaussian guide of one layer "
            "and scores the observed pixels alone: drop --guide, --prior vamp, --layers, --decoder"
        )
    if richer and not cfg.reparameterized:
        raise ConfigError("--no-reparam is for the diagonal Gaussian guide of one layer: drop it")
    shape, levels = (data_dim, cfg.latent_dim, cfg.hidden, cfg.activation), cfg.levels or 256
    if cfg.layers == 2:
        dims, hidden = (cfg.latent_dim, cfg.latent_dim2), (cfg.hidden, cfg.hidden2)
        flows = cfg.prior_flows or 2
        options = dict(prior=cfg.prior, prior_flows=flows, levels=levels)
        model = TwoLayerVAE(
            data_dim, dims, hidden, cfg.activation, cfg.likelihood, data_mean, **options
        )
        return model, TwoLayerGuide(data_dim, dims, hidden, cfg.activation)
    decoder = dict(decoder=cfg.decoder, image_shape=image_shape)
    decoder |= dict(decoder_layers=cfg.decoder_layers, decoder_channels=cfg.decoder_channels)
    prior = dict(prior=cfg.prior, num_pseudo_inputs=cfg.pseudo_inputs or 500)
    prior |= dict(pseudo_init=pseudo_init, prior_flows=cfg.prior_flows or 2)
    model = VAE(*shape, cfg.likelihood, data_mean, **prior, levels=levels, **decoder)
    if cfg.guide == "fullcov":
        guide = AmortizedFullCovariance(*shape)
    elif cfg.guide in ("planar", "iaf"):
        guide = AmortizedFlow(*shape[:2], cfg.guide, cfg.flows or 4, *shape[2:])
    else:
        reparam, baseline = cfg.reparameterized, cfg.baseline
        masks = cfg.mask != "none"
        guide = AmortizedNormal(
            *shape, reparameterized=reparam, baseline=baseline, mask_input=masks
        )
    if cfg.prior == "vamp":  # the VampPrior mixes this guide's posteriors
        model.prior.set_posterior(guide.posterior)
    return model, guide


def parts(run: Run) -> dict:
    """The run's model and guide (:func:`build`; the VampPrior started at ``pseudo_inputs``
    training images drawn by a generator seeded by ``seed``) and its missing-data masks."""
    cfg, data = run.cfg, run.data
    pseudo, n = None, data.train.shape[0]
    if cfg.prior == "vamp":
        if cfg.pseudo_inputs > n:
            raise ConfigError(
                f"--pseudo-inputs {cfg.pseudo_inputs} exceeds the {n} training images: lower it"
            )
        gen = torch.Generator().manual_seed(cfg.seed)
        pseudo = data.train[torch.randperm(n, generator=gen)[: cfg.pseudo_inputs]]
    model, guide = build(cfg, data.data_dim, data.train.mean(0), pseudo, data.image_shape)
    run.extra["masks"] = run_masks(cfg, data)
    return {"model": model, "guide": guide}


def load(cfg, data=None):
    """The run's data, checked for the likelihood: in [0, 1] for the Bernoulli and continuous
    Bernoulli, on the grid of ``levels`` grey levels for the categorical."""
    data = family.load_images(cfg, data, cfg.likelihood == "bernoulli")
    for x, which in ((data.train, "training"), (data.test, "test")):
        grey = cfg.likelihood in ("continuous-bernoulli", "categorical")
        if grey and not ((x >= 0) & (x <= 1)).all():
            raise ConfigError(
                f"--likelihood {cfg.likelihood} scores intensities in [0, 1], but the {which} "
                "data leaves it: rescale it (e.g. x / 255)"
            )
        scaled = x * (cfg.levels - 1) if cfg.likelihood == "categorical" else x.round()
        if ((scaled - scaled.round()).abs() > 1e-3).any():
            raise ConfigError(
                f"--likelihood categorical with --levels {cfg.levels} scores the grey levels "
                f"k / {cfg.levels - 1}, but the {which} data holds other values: give the "
                "data's number of levels (256 for 8-bit images, 17 for digits)"
            )
    return data


def score(run: Run) -> dict:
    """The test figures: importance-sampled, the latent diagnostics (``LATENT_SAMPLES`` draws;
    ``distortion = -test_elbo - rate``), the imputations of missing data, the amortization
    gap on ``amortization_gap`` test points (``pyrolvm evaluate``: when given)."""
    cfg, model, guide, data = run.cfg, run.parts["model"], run.parts["guide"], run.data
    scoring = {"scored_on": scored_on(cfg.likelihood, cfg.binarize, cfg.levels or 256)}
    scoring["guide"] = cfg.guide if cfg.layers == 1 else "two-layer"
    scoring |= {"prior": cfg.prior, "layers": cfg.layers, "decoder": cfg.decoder}
    final = family.importance_figures(run, scoring, cfg.likelihood in ("bernoulli", "categorical"))
    batch = max(1, (1000 if cfg.decoder == "pixelcnn" else 10000) // LATENT_SAMPLES)
    test, samples = family.splits(run)[1], LATENT_SAMPLES
    latent = latent_diagnostics(
        model, guide, test, num_samples=samples, batch_size=batch, seed=cfg.seed
    )
    latent = latent.summary()
    del latent["distortion_stderr"]  # the distortion below comes from the evaluator's ELBO
    final |= latent | {"distortion": -final["test_elbo"] - latent["rate"]}
    if run.extra["masks"] is not None:
        missing, run.extra["imputed"] = missing_metrics(model, guide, data, run.extra["masks"], cfg)
        final.update(missing)
    points = run.options.get("amortization_gap") if run.evaluating else cfg.amortization_gap
    if points is not None and (run.evaluating or points):
        if int(points) < 1:
            raise ConfigError(f"--amortization-gap must be >= 1 test points, got {points}")
        pyro.set_rng_seed(cfg.seed)
        options = dict(steps=GAP_STEPS, lr=GAP_LR, num_particles=GAP_PARTICLES)
        gap = amortization_gap(
            model, guide, data.test[: int(points)], eval_samples=cfg.eval_samples, **options
        )
        final.update(gap.summary())
    return final


def figures(run: Run, metrics: dict) -> list[str]:
    """:func:`~pyrolvm.runs.vae_family.pictures`, the latent pictures of a one-layer VAE
    (:func:`pyrolvm.plots_latent.latent_pictures`), imputation.png for missing data."""
    names, model, data = family.pictures(run), run.parts["model"], run.data
    if isinstance(model, VAE):
        kl = metrics.get("kl_per_dim")
        names += plots_latent.latent_pictures(
            run.folder, model, run.parts["guide"], data.test, data.image_shape, kl, run.device
        )
    if run.extra["masks"] is not None:
        names.append(imputation_figure(run.folder, data, run.extra["masks"], run.extra["imputed"]))
    return names


def latent_rows(metrics):
    """Summary rows of the latent diagnostics and the amortization gap."""
    if "rate" not in metrics:
        return []
    rate = f"{metrics['rate']:.2f}"
    if metrics.get("rate_stderr"):
        rate += f" ± {metrics['rate_stderr']:.2f} (Monte Carlo, K={metrics['latent_samples']})"
    mi = "n/a (the guide has no density away from its own draws)"
    if metrics.get("mi_points"):
        mi = f"{metrics['mutual_information']:.2f} nats ({metrics['mi_points']} test points)"
    rows = [
        ("rate / distortion", f"{rate} / {metrics['distortion']:.2f} nats"),
        ("active units", f"{metrics['active_units']} of {len(metrics['activity'])}"),
        ("mutual information I(x; z)", mi),
    ]
    for name in (
        ("amortization", "approximation", "inference") if "amortization_gap" in metrics else ()
    ):
        value = f"{metrics[name + '_gap']:.2f} ± {metrics[name + '_gap_stderr']:.2f} nats"
        rows.append((f"{name} gap ({metrics['gap_points']} test points)", value))
    return rows


def title(metrics, cfg):
    """The summary's title: the data, the likelihood and what differs from a plain VAE."""
    parts = [] if cfg.reparameterized else ["not reparameterized"]
    parts += [f"baseline={cfg.baseline}"] if cfg.baseline != "none" else []
    if cfg.guide != "normal":
        parts.append(f"guide={cfg.guide}" + (f" ({cfg.flows} steps)" if cfg.flows else ""))
    if cfg.prior != "normal":
        k = f"K={cfg.pseudo_inputs}" if cfg.prior == "vamp" else f"{cfg.prior_flows} steps"
        parts.append(f"prior={cfg.prior} ({k})")
    if cfg.layers == 2:
        parts.append(f"2 stochastic layers ({cfg.latent_dim}, {cfg.latent_dim2})")
    if cfg.decoder != "mlp":
        layers = f"{cfg.decoder_layers} layers of {cfg.decoder_channels} channels"
        parts.append(f"decoder={cfg.decoder} ({layers})")
    out = f"VAE on {cfg.dataset}: {cfg.likelihood} likelihood, binarize={cfg.binarize}, "
    out += (
        f"latent_dim={cfg.latent_dim}{''.join(', ' + p for p in parts)}, {family.elbo_label(cfg)}"
    )
    if cfg.elbo == "vimco" and cfg.reparameterized:
        out += " (every latent reparameterized: IWAE's gradient; --no-reparam for VIMCO's own)"
    out += f", {metrics['epochs']} epochs, seed={cfg.seed}"
    if cfg.mask != "none":
        out += f", missing data: {cfg.mask} mask at rate {cfg.missing_rate:g} (NLL of x_obs)"
    return out


def evaluation_rows(metrics):
    """The rows ``pyrolvm evaluate`` prints for a vae run."""
    return family.evaluation_rows(metrics, latent_rows(metrics))


KIND = register(
    RunKind(
        "vae",
        VAEConfig,
        "a VAE with an amortized Gaussian guide",
        build=parts,
        stages=family.STAGES,
        score=score,
        report=family.report,
        figures=figures,
        title=title,
        evaluation_rows=evaluation_rows,
        summary_rows=lambda m, cfg: family.summary_rows(m, evaluation_rows(m)),
        data=load,
        check=family.check,
        evaluate_options={
            "eval_samples": "importance samples K of the test log-likelihood (default: the run's)",
            "amortization_gap": "the amortization gap on this many test points (Cremer et al. "
            "2018; refines a per-datapoint guide on each; default: not computed)",
        },
        extendable=True,
        tiny=dict(epochs=2, hidden=(16,), eval_samples=5),
    )
)
