"""The reproducibility table's entries: one per published number we put beside ours.

Each :class:`Entry` declares the paper, table and row, the paper's protocol, the published
figure, what of ours differs, and the ``pyrolvm train KIND`` run that reproduces it at a
fraction F of the paper's budget (``epochs = max(1, round(F * full_epochs))``; F = 1 is the
paper's). :class:`TutorialEntry` reads a figure that a tutorial computes (its committed JSON).
"""

from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["ENTRIES", "Entry", "TutorialEntry"]


@dataclass(frozen=True)
class Entry:
    """One published number and the run that reproduces it.

    Attributes:
        name: the entry's name (``python -m benchmarks.reproduce NAME``).
        source: paper (or example), table and row.
        protocol: the paper's protocol, in words.
        published: the published figure, in ``metric``'s unit.
        metric: what is compared, with its unit ("test accuracy, %" or "test NLL, nats").
        kind: the run kind (``pyrolvm train KIND``).
        full_epochs: the paper's budget, in epochs (of ``epochs_fields``).
        options: the run's config fields at the paper's protocol (beyond the epochs).
        read: ``read(metrics) -> (ours, stderr or None)`` from the run's metrics.json.
        differs: what of ours differs from the paper's protocol ("" when nothing).
        epochs_fields: ``{field: share}``: each config field set to ``max(1, round(share *
            epochs))`` (a field of the budget other than ``epochs``, e.g. pre-training).
        lower_is_better: for the table's note on the gap.
        smoke: config overrides for the smoke test (tiny networks on the digits).
        read_partial: ``read_partial(history) -> (ours, stderr or None)`` from the per-epoch
            curves of an unfinished run's checkpoint (None: no per-epoch figure).
        read_curves: ``read_curves(metrics) -> dict`` holding the run's per-epoch curves
            (default: metrics.json's ``curves``, else its top level).
    """

    name: str
    source: str
    protocol: str
    published: float
    metric: str
    kind: str
    full_epochs: int
    options: dict
    read: Callable[[dict], tuple[float, float | None]]
    differs: str = ""
    epochs_fields: dict = field(default_factory=lambda: {"epochs": 1.0})
    lower_is_better: bool = True
    smoke: dict = field(default_factory=dict)
    read_partial: Callable[[dict], tuple[float, float | None]] | None = None
    read_curves: Callable[[dict], dict] | None = None


@dataclass(frozen=True)
class TutorialEntry:
    """A published number that a tutorial reproduces: the figure is read from the JSON the
    tutorial writes (``path``, keys ``keys``), reduced by ``reduce``."""

    name: str
    source: str
    protocol: str
    published: float
    metric: str
    tutorial: str
    path: str
    keys: tuple
    reduce: Callable[[list], tuple[float, float | None]]
    differs: str = ""
    lower_is_better: bool = True


def accuracy(key="test_accuracy"):
    return lambda m: (100 * m[key], None)


def nll(key="test_nll"):
    return lambda m: (m[key], m.get(f"{key}_stderr"))


def median(values):
    values = sorted(v for v in values if v is not None)
    return float(values[len(values) // 2]), None


# --- Pyro's ss-vae example (M2), Table 1 of its tutorial --------------------------------
PYRO_SSVAE = (
    "Pyro's examples/vae/ss_vae_M2.py: 784-500-(50 | 10), softplus; TraceEnum_ELBO with the "
    "label enumerated; auxiliary loss 46 x sum -log q(y | x); Adam lr 4.2e-4; batch 200; 50 "
    "epochs; first 50000 MNIST images for training, the last 10000 for validation; each "
    "labelled image once per epoch, interleaved"
)
PYRO_SSVAE_DIFFERS = (
    "dynamically binarized pixels (Pyro: grey levels in [0, 1] as Bernoulli targets); one "
    "seed (Pyro: mean of 5 draws of the labelled set); each step takes an unlabelled "
    "minibatch, and the labelled ones ride along in their steps (Pyro: a labelled step "
    "replaces an unlabelled one)"
)
M2_RUN = dict(
    batch_size=200,
    lr=4.2e-4,
    aux_loss_multiplier=46.0,
    labelled_schedule="interleaved",
    validation=10000,
)
M2_PUBLISHED = {100: (93.19, 11.97), 600: (94.37, 4.94), 1000: (94.87, 3.60), 3000: (95.82, 3.92)}

# --- Burda et al. 2016, Table 1 ----------------------------------------------------------
BURDA = (
    "784-200-200-50 tanh, dynamically binarized MNIST, Adam (0.9, 0.999, eps 1e-4), batch "
    "20, 3280 epochs in 8 stages (3^i epochs at lr 1e-3 x 10^(-i/7)), test NLL by importance "
    "sampling with K = 5000"
)
BURDA_RUN = dict(
    binarize="dynamic",
    latent_dim=50,
    hidden=(200, 200),
    activation="tanh",
    batch_size=20,
    lr=1e-3,
    eps=1e-4,
    lr_schedule="burda",
    eval_samples=5000,
)
BURDA_PUBLISHED = {
    ("trace", 1): 86.76,
    ("trace", 5): 86.47,
    ("trace", 50): 86.35,
    ("iwae", 5): 85.54,
    ("iwae", 50): 84.78,
}

#: Two stochastic layers (Burda et al. 2016, section 5): latents 100 and 50, deterministic
#: layers 200-200 (x to z1) and 100-100 (z1 to z2), the rest of the protocol as above.
BURDA2 = BURDA.replace(
    "784-200-200-50 tanh", "784-200-200-100-100-100-50 tanh (2 stochastic layers)"
)
BURDA2_RUN = dict(
    BURDA_RUN, layers=2, latent_dim=100, latent_dim2=50, hidden=(200, 200), hidden2=(100, 100)
)
BURDA2_PUBLISHED = {("trace", 1): 85.33, ("trace", 5): 85.01, ("iwae", 5): 83.89}

TINY_VAE = dict(latent_dim=2, hidden=(16,), eval_samples=10)

ENTRIES: dict[str, Entry | TutorialEntry] = {}


def _add(entry):
    ENTRIES[entry.name] = entry


for _labels, (_pyro, _kingma) in M2_PUBLISHED.items():
    _add(
        Entry(
            name=f"m2-pyro-{_labels}",
            source=(
                f"Pyro ss-vae tutorial, Table 1, third variant, {_labels} labels (Kingma et al. "
                f"2014, Table 1, M2: error {_kingma} %)"
            ),
            protocol=PYRO_SSVAE,
            published=_pyro,
            metric="test accuracy, %",
            kind="m2",
            full_epochs=50,
            options=dict(labels=_labels, **M2_RUN),
            read=accuracy(),
            differs=PYRO_SSVAE_DIFFERS
            + (
                "; the labelled minibatch has 100 images (Pyro's batch 200 cannot split 100)"
                if _labels == 100
                else ""
            ),
            lower_is_better=False,
            smoke=dict(labels=50, hidden=(16,), latent_dim=2, validation=200, batch_size=100),
            read_partial=lambda h: (100 * h["test_accuracy"][-1], None),
        )
    )

for (_elbo, _k), _nll in BURDA_PUBLISHED.items():
    _add(
        Entry(
            name=f"{'vae' if _elbo == 'trace' else 'iwae'}-{_k}",
            source=f"Burda, Grosse & Salakhutdinov 2016, Table 1, one stochastic layer, "
            f"{'VAE' if _elbo == 'trace' else 'IWAE'} k = {_k}",
            protocol=BURDA,
            published=_nll,
            metric="test NLL, nats",
            kind="vae",
            full_epochs=3280,
            options=dict(elbo=_elbo, num_particles=_k, **BURDA_RUN),
            read=nll(),
            smoke=dict(TINY_VAE, batch_size=100),
        )
    )

for (_elbo, _k), _nll in BURDA2_PUBLISHED.items():
    _add(
        Entry(
            name=f"{'vae' if _elbo == 'trace' else 'iwae'}2-{_k}",
            source=f"Burda, Grosse & Salakhutdinov 2016, Table 1, two stochastic layers, "
            f"{'VAE' if _elbo == 'trace' else 'IWAE'} k = {_k}",
            protocol=BURDA2,
            published=_nll,
            metric="test NLL, nats",
            kind="vae",
            full_epochs=3280,
            options=dict(elbo=_elbo, num_particles=_k, **BURDA2_RUN),
            read=nll(),
            smoke=dict(
                TINY_VAE, layers=2, latent_dim2=2, hidden2=(8,), hidden=(16,), batch_size=100
            ),
        )
    )

_add(
    Entry(
        name="vampprior",
        source="Tomczak & Welling 2018, Table 2, VampPrior (500 pseudo-inputs), one layer, "
        "static MNIST",
        protocol=(
            "MLP 300-300 (gated) encoder/decoder, 40 latent dimensions, 500 pseudo-inputs, "
            "statically binarized MNIST, Adam lr 5e-4, batch 100, KL warm-up 100 epochs, up "
            "to 2000 epochs with early stopping (look-ahead 50), test NLL with K = 5000"
        ),
        published=85.57,
        metric="test NLL, nats",
        kind="vae",
        full_epochs=2000,
        options=dict(
            prior="vamp",
            pseudo_inputs=500,
            binarize="static",
            latent_dim=40,
            hidden=(300, 300),
            batch_size=100,
            lr=5e-4,
            eval_samples=5000,
        ),
        read=nll(),
        differs="plain (not gated) MLP layers, no KL warm-up, no early stopping",
        smoke=dict(TINY_VAE, pseudo_inputs=10, batch_size=100),
    )
)

_add(
    Entry(
        name="made-1",
        source="Germain et al. 2015, Table 6, MADE, 1 hidden layer, 1 mask (binarized MNIST)",
        protocol=(
            "one hidden layer of 500, a single ordering, binarized MNIST (Larochelle's "
            "static binarization), early stopping on validation"
        ),
        published=88.04,
        metric="test NLL, nats",
        kind="made",
        full_epochs=100,
        options=dict(hidden=(500,), binarize="static"),
        read=nll(),
        differs="a fixed 100-epoch budget instead of early stopping; our static binarization",
        smoke=dict(hidden=(16,)),
    )
)

_add(
    Entry(
        name="pixelcnn",
        source="van den Oord et al. 2016, Pixel Recurrent Neural Networks, Table 4, PixelCNN "
        "(binarized MNIST)",
        protocol="PixelCNN, binarized MNIST, exact test NLL",
        published=81.30,
        metric="test NLL, nats",
        kind="pixelcnn",
        full_epochs=50,
        options=dict(binarize="static"),
        read=nll(),
        differs=(
            "a small gated PixelCNN (van den Oord et al. 2016b's gated layers, 5 layers of 32 "
            "channels) and 50 epochs: the paper's architecture and budget are not stated in "
            "the table"
        ),
        smoke=dict(channels=4, num_layers=2),
    )
)

_add(
    Entry(
        name="gmm-em",
        source="scikit-learn's EM (sklearn.mixture.GaussianMixture), 10 full-covariance "
        "components on 50 PCA dimensions of MNIST, computed in the same run",
        protocol="EM to convergence, k-means initialization, best of 5 starts",
        published=float("nan"),  # the run's own sklearn figure
        metric="test log-likelihood per image, nats",
        kind="gmm",
        full_epochs=50,
        options=dict(components=10, covariance="full"),
        read=lambda m: (m["test_log_likelihood"], m.get("test_log_likelihood_stderr")),
        differs="SVI on the MAP objective (Adam) instead of EM",
        lower_is_better=False,
        smoke=dict(pca_dim=3, components=3, sklearn_n_init=1),
    )
)

_add(
    TutorialEntry(
        name="coin-no-baseline",
        source="Pyro SVI part III tutorial: steps to tolerance without a baseline",
        protocol=(
            "Beta(10, 10) prior, 6 heads and 4 tails, Beta guide (score function), Adam lr "
            "5e-4, betas (0.93, 0.999), until both guide parameters are within 0.8 of "
            "Beta(16, 14)"
        ),
        published=4908,
        metric="steps to tolerance (median of 5 seeds)",
        tutorial="tutorials/compare_estimators.py",
        path="tutorials/figures/compare_estimators.json",
        keys=("coin", "no baseline"),
        reduce=median,
        differs="Pyro's figure is one run of an older Pyro; ours the median of 5 seeds",
    )
)
_add(
    TutorialEntry(
        name="coin-baseline",
        source="Pyro SVI part III tutorial: steps to tolerance with the decaying-average "
        "baseline (beta 0.9)",
        protocol="as coin-no-baseline, with use_decaying_avg_baseline",
        published=1932,
        metric="steps to tolerance (median of 5 seeds)",
        tutorial="tutorials/compare_estimators.py",
        path="tutorials/figures/compare_estimators.json",
        keys=("coin", "decaying avg baseline"),
        reduce=median,
        differs="Pyro's figure is one run of an older Pyro; ours the median of 5 seeds",
    )
)

for _q, _pyro_nll in {1: 71.8, 2: 51.0, 3: 24.2}.items():
    _add(
        Entry(
            name=f"cvae-q{_q}",
            source=f"Pyro CVAE tutorial (examples/cvae), 'Evaluating the results', CVAE, {_q} "
            f"observed quadrant{'s' if _q > 1 else ''}",
            protocol=(
                "Pyro's examples/cvae/main.py: 500-500 networks, the baseline network then the "
                "CVAE, Adam lr 1e-3, batch 128, up to 101 epochs with early stopping (patience "
                "3), grey-level pixels, −log p(y | x) by Monte Carlo with 10 particles"
            ),
            published=_pyro_nll,
            metric="test −log p(y | x), nats",
            kind="cvae",
            full_epochs=101,
            options=dict(quadrants=(_q,), hidden=(500, 500), eval_samples=100),
            read=lambda m, q=_q: (m[f"q{q}"]["cvae_nll"], m[f"q{q}"].get("cvae_nll_stderr")),
            read_curves=lambda m, q=_q: m[f"q{q}"],
            differs=(
                "binarized pixels (Pyro: grey levels), importance sampling (K = 100) instead "
                "of Monte Carlo, 50 latent dimensions, batch 100, no early stopping (the full "
                "budget is the 101-epoch cap)"
            ),
            epochs_fields={"epochs": 1.0, "baseline_epochs": 1.0},
            smoke=dict(hidden=(16,), latent_dim=2, eval_samples=5),
        )
    )

_add(
    Entry(
        name="vade",
        source="Jiang et al. 2017 (VaDE, IJCAI), MNIST clustering accuracy (results table)",
        protocol=(
            "encoder 784-500-500-2000-10 and the mirrored decoder (ReLU), a Gaussian-mixture "
            "prior of 10 components, a pre-trained autoencoder whose codes initialize the "
            "mixture, Adam lr 2e-3 (decayed by 0.9 every 10 epochs), batch 100, 300 epochs, on "
            "all 70000 MNIST images (grey levels as Bernoulli targets)"
        ),
        published=94.46,
        metric="test cluster accuracy, %",
        kind="mixture-vae",
        full_epochs=300,
        options=dict(
            components=10,
            latent_dim=10,
            hidden=(500, 500, 2000),
            pretrain="autoencoder",
            prior_init="means",
            lr=2e-3,
            finetune_lr_ratio=1.0,
            batch_size=100,
        ),
        read=lambda m: (100 * m["test_cluster_accuracy"], None),
        differs=(
            "trained on the 60000 training images and scored on the 10000 test images "
            "(VaDE: all 70000), dynamically binarized pixels, a constant learning rate, the "
            "autoencoder pre-trained for 1/6 of the epochs (50 at the full budget; VaDE's "
            "pre-training budget is not in the paper), one seed"
        ),
        epochs_fields={"epochs": 1.0, "warmup_epochs": 1 / 6},
        lower_is_better=False,
        smoke=dict(latent_dim=2, hidden=(16,), components=3),
    )
)

# --- DReG as reproduced by the public TF2 code nbip/IWAE (Burda et al.'s protocol) ----------
for _k, _nll in {5: 84.90, 50: 84.32}.items():
    _add(
        Entry(
            name=f"dreg-{_k}",
            source=f"nbip/IWAE (public TF2 reproduction, README), one stochastic layer, DReG "
            f"k = {_k} (Tucker et al. 2019's estimator)",
            protocol=BURDA + " (nbip/IWAE follows Burda et al.'s protocol)",
            published=_nll,
            metric="test NLL, nats",
            kind="vae",
            full_epochs=3280,
            options=dict(elbo="dreg", num_particles=_k, **BURDA_RUN),
            read=nll(),
            smoke=dict(TINY_VAE, batch_size=100),
        )
    )
