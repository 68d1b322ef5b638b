"""The ``pyrolvm`` command: ``pyrolvm train vae|gmm|m2 ...`` and ``pyrolvm evaluate RUN_FOLDER``.

A thin layer over :mod:`pyrolvm.runs`: every command is one Python call there. Errors caused
by bad input are printed as one line (``pyrolvm: error: ...``) with exit status 2.
"""

import argparse
import dataclasses
import sys

from .data import BINARIZATIONS, DATASETS
from .errors import PyroLVMError
from .inference import ELBOS
from .guides import BASELINES, RELAXATIONS
from .models import LATENTS, LIKELIHOODS
from .nets import ACTIVATIONS


def _hidden(text):
    try:
        sizes = tuple(int(h) for h in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected layer sizes like 200,200, got {text!r}")
    return sizes


def _run_flags(p, out):
    """The flags every `pyrolvm train MODEL` command shares."""
    p.add_argument("--data-root", default=None,
                   help="folder holding MNIST/raw/ (default: $PYROLVM_DATA_ROOT)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw of the run")
    p.add_argument("--out", default=out, help="the run folder")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def _add_vae(sub):
    p = sub.add_parser(
        "vae", help="a VAE with an amortized Gaussian guide",
        description="Train a VAE (Kingma & Welling 2014) with SVI, evaluate the test "
        "log-likelihood by importance sampling, and write the run folder.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--dataset", default="digits", help=f"one of {', '.join(DATASETS)}, or an "
                   ".npz file with arrays train and test of shape (N, D) in [0, 1]")
    p.add_argument("--binarize", choices=BINARIZATIONS, default=None,
                   help="default: dynamic for bernoulli, none for gaussian")
    p.add_argument("--likelihood", choices=LIKELIHOODS, default="bernoulli")
    p.add_argument("--elbo", choices=sorted(ELBOS), default="trace", help="the objective")
    p.add_argument("--num-particles", type=int, default=1, help="particles K of the objective")
    p.add_argument("--latent", choices=("gaussian", *LATENTS), default="gaussian",
                   help="gaussian: the VAE; bernoulli / categorical: a sigmoid belief network "
                   "with binary or one-hot latents (--latent-dim units or variables)")
    p.add_argument("--num-categories", type=int, default=10,
                   help="classes per variable of --latent categorical")
    p.add_argument("--no-reparam", dest="reparameterized", action="store_false",
                   help="sample the Gaussian guide without reparameterization, so that "
                   "tracegraph uses the score function (REINFORCE)")
    p.add_argument("--baseline", choices=BASELINES, default="none",
                   help="score-function baseline of tracegraph at non-reparameterized latents")
    p.add_argument("--relaxation", choices=RELAXATIONS, default="none",
                   help="discrete latents: Concrete / Gumbel-softmax relaxation, optionally "
                   "straight-through")
    p.add_argument("--temperature", type=float, default=0.5, help="relaxation temperature")
    p.add_argument("--latent-dim", type=int, default=None, help="default: 8 digits, 50 mnist")
    p.add_argument("--hidden", type=_hidden, default=None,
                   help="hidden sizes of encoder and decoder, e.g. 200,200 (default: 128,128 "
                   "digits, 200,200 mnist)")
    p.add_argument("--activation", choices=sorted(ACTIVATIONS), default="tanh")
    p.add_argument("--epochs", type=int, default=None, help="default: 300 digits, 10 mnist")
    p.add_argument("--batch-size", type=int, default=None, help="default: 100")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate "
                   "(default: 3e-3 digits, 2e-3 mnist)")
    p.add_argument("--betas", type=float, nargs=2, default=(0.9, 0.999), help="Adam betas")
    p.add_argument("--eps", type=float, default=1e-8, help="Adam eps")
    p.add_argument("--eval-samples", type=int, default=1000,
                   help="importance samples K for the test log-likelihood")
    _run_flags(p, out="runs/vae")
    p.set_defaults(func=_train_vae)


def _config(cls, args, **extra):
    """A run config of dataclass ``cls`` from the parsed flags: each field takes the flag of the
    same name (``--data-root`` -> ``data_root``), ``progress`` is ``not --no-progress``, and
    ``extra`` overrides."""
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in vars(args).items() if k in names}
    values["progress"] = not args.no_progress
    values.update(extra)
    return cls(**values)


def _train_vae(args):
    from .runs.vae import VAEConfig, summary, train_vae

    cfg = _config(VAEConfig, args, betas=tuple(args.betas))
    metrics = train_vae(cfg)
    print(summary(metrics, cfg, args.out))


def _evaluate(args):
    from .runs.common import format_summary, load_checkpoint

    kind = load_checkpoint(args.folder).get("kind", "vae")
    if kind == "gmm":
        from .runs.gmm import evaluate_gmm

        m = evaluate_gmm(args.folder, args.data_root)
        print(format_summary(f"evaluation of {args.folder}", [
            ("test log-likelihood", f"{m['test_log_likelihood']:.3f} ± "
                                    f"{m['test_log_likelihood_stderr']:.3f} nats per point"),
            ("BIC (train)", f"{m['bic']:.1f}"),
        ]))
        return
    if kind != "vae":
        raise PyroLVMError(f"`pyrolvm evaluate` does not know runs of kind {kind!r}")
    from .runs.vae import evaluate_vae

    m = evaluate_vae(args.folder, args.eval_samples, args.data_root, not args.no_progress)
    print(format_summary(f"evaluation of {args.folder}", [
        ("test ELBO", f"{m['test_elbo']:.2f} nats"),
        (f"test NLL (K={m['eval_samples']})",
         f"{m['test_nll']:.2f} ± {m['test_nll_stderr']:.2f} nats"),
        ("test ESS (mean)", f"{m['test_ess']:.1f} of {m['eval_samples']}"),
    ]))


def _add_gmm(sub):
    from .models import COVARIANCES, INITS
    from .runs.gmm import GUIDES

    p = sub.add_parser(
        "gmm", help="a Gaussian mixture, assignment enumerated, beside scikit-learn's EM",
        description="Project the images by PCA fitted on the training split, fit a Gaussian "
        "mixture by SVI with the component assignment summed out (TraceEnum_ELBO), fit "
        "scikit-learn's EM with the same K, covariance type and projection, and write the run "
        "folder with both test log-likelihoods.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--dataset", default="digits", help=f"one of {', '.join(DATASETS)}, or an "
                   ".npz file with arrays train and test of shape (N, D)")
    p.add_argument("--pca-dim", type=int, default=None, help="default: 10 digits, 50 mnist")
    p.add_argument("--components", type=int, default=10, help="K, mixture components")
    p.add_argument("--covariance", choices=COVARIANCES, default="full")
    p.add_argument("--guide", choices=GUIDES, default="map",
                   help="point estimates (map) or mean-field variational posterior")
    p.add_argument("--init", choices=INITS, default="kmeans", help="initial centres")
    p.add_argument("--n-init", type=int, default=1, help="restarts; the best is kept")
    p.add_argument("--epochs", type=int, default=None, help="default: 300 digits, 50 mnist")
    p.add_argument("--batch-size", type=int, default=None,
                   help="minibatch size under the subsampled plate (default: full batch "
                   "digits, 1000 mnist)")
    p.add_argument("--lr", type=float, default=None,
                   help="starting Adam learning rate (default: 0.05 digits, 0.1 mnist)")
    p.add_argument("--lr-decay", type=float, default=0.01,
                   help="final / starting learning rate (geometric decay)")
    p.add_argument("--num-particles", type=int, default=1,
                   help="samples of the global sites per step (meanfield guide)")
    p.add_argument("--sklearn-n-init", type=int, default=5,
                   help="restarts of the scikit-learn EM reference")
    _run_flags(p, out="runs/gmm")
    p.set_defaults(func=_train_gmm)


def _train_gmm(args):
    from .runs.gmm import GMMConfig, summary, train_gmm

    cfg = _config(GMMConfig, args)
    metrics = train_gmm(cfg)
    print(summary(metrics, cfg, args.out))


def _add_m2(sub):
    p = sub.add_parser(
        "m2", help="the semi-supervised VAE M2 (Kingma et al. 2014)",
        description="Train M2 on dynamically binarized images with --labels balanced labels, "
        "the label enumerated in the unlabelled bound (TraceEnum_ELBO), and report the "
        "classifier's test accuracy.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--dataset", default="digits", help=f"one of {', '.join(DATASETS)}")
    p.add_argument("--labels", type=int, default=100, help="labelled images, balanced")
    p.add_argument("--latent-dim", type=int, default=None, help="default: 8 digits, 50 mnist")
    p.add_argument("--hidden", type=_hidden, default=None,
                   help="hidden sizes (default: 128 digits, 500 mnist)")
    p.add_argument("--epochs", type=int, default=None, help="default: 20 digits, 10 mnist")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=None, help="default: 3e-3 digits, 1e-3 mnist")
    p.add_argument("--no-aux-loss", action="store_true",
                   help="drop the auxiliary classification loss (eq. 9)")
    p.add_argument("--sample-labels", action="store_true",
                   help="sample the unobserved label (score function) instead of enumerating")
    _run_flags(p, out="runs/m2")
    p.set_defaults(func=_train_m2)


def _train_m2(args):
    from .runs.ssvae import M2Config, summary, train_m2

    cfg = _config(M2Config, args, aux_loss=not args.no_aux_loss,
                  enumerate=not args.sample_labels)
    metrics = train_m2(cfg)
    print(summary(metrics, cfg, args.out))


def parser():
    """The argument parser of the ``pyrolvm`` command."""
    top = argparse.ArgumentParser(
        prog="pyrolvm", description="Deep latent-variable models as Pyro model/guide pairs.")
    commands = top.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a model and write a run folder")
    models = train.add_subparsers(dest="model", required=True)
    _add_vae(models)
    _add_gmm(models)
    _add_m2(models)
    ev = commands.add_parser("evaluate", help="reload a run folder's checkpoint and "
                             "recompute its test figures")
    ev.add_argument("folder", help="a run folder written by `pyrolvm train`")
    ev.add_argument("--eval-samples", type=int, default=None,
                    help="importance samples K (default: the run's)")
    ev.add_argument("--data-root", default=None, help="MNIST root, if it moved")
    ev.add_argument("--no-progress", action="store_true")
    ev.set_defaults(func=_evaluate)
    return top


def main(argv=None):
    """Entry point of the ``pyrolvm`` console script; returns the exit status."""
    args = parser().parse_args(argv)
    try:
        args.func(args)
    except PyroLVMError as exc:
        print(f"pyrolvm: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pyrolvm: interrupted; the run folder keeps the last completed epoch's checkpoint",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
