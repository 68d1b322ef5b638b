"""Burda, Grosse & Salakhutdinov (2016), "Importance Weighted Autoencoders", Table 1, one
stochastic layer: the VAE and the IWAE at K = 1, 5, 50 on dynamically binarized MNIST, with
the paper's protocol at a fraction of its budget, resumable, printing the paper's figure
beside ours.

    python benchmarks/reproduce_iwae_table1.py --budget 0.01 [--rows vae-1 iwae-5 ...]
        [--eval-samples 5000] [--device auto] [--data-root DIR] [--out runs/iwae_table1]

Protocol (section 5 and appendix of the paper): 784-200-200-50 with tanh, Adam (beta1 0.9,
beta2 0.999, eps 1e-4), batch 20, 3280 epochs in 8 stages (stage i: 3^i epochs at
lr 1e-3 * 10^(-i/7)), dynamic binarization, test NLL by importance sampling with K = 5000.
``--budget F`` trains for round(F * 3280) epochs (at least 1) with the stages shrunk in
proportion (``pyrolvm train vae --lr-schedule burda``). Each row is one ``pyrolvm train vae``
run folder under ``--out``: a finished row is read back, an interrupted one resumed with
``--resume`` (stop the script at any time and rerun the same command), so the table can be
built across sessions. Results: ``OUT/results.json`` (published, ours, budget, epochs, device,
wall time, the command of each row).
"""

import argparse
import json
import os
import shlex
import sys

#: Table 1 (one stochastic layer), test NLL in nats: (objective, K) -> published figure.
PUBLISHED = {
    "vae-1": ("trace", 1, 86.76),
    "vae-5": ("trace", 5, 86.47),
    "vae-50": ("trace", 50, 86.35),
    "iwae-5": ("iwae", 5, 85.54),
    "iwae-50": ("iwae", 50, 84.78),
}  # IWAE with K = 1 is the VAE with K = 1 (86.76)
SOURCE = "Burda, Grosse & Salakhutdinov (2016), Table 1, one stochastic layer"


def row_config(name, args):
    from pyrolvm.inference import BURDA_EPOCHS
    from pyrolvm.runs import VAEConfig

    elbo, k, _ = PUBLISHED[name]
    return VAEConfig(
        dataset=args.dataset,
        data_root=args.data_root,
        seed=args.seed,
        out=os.path.join(args.out, name),
        progress=args.progress,
        device=args.device,
        binarize="dynamic",
        elbo=elbo,
        num_particles=k,
        latent_dim=50,
        hidden=(200, 200),
        activation="tanh",
        epochs=max(1, round(args.budget * BURDA_EPOCHS)),
        batch_size=20,
        lr=1e-3,
        eps=1e-4,
        lr_schedule="burda",
        eval_samples=args.eval_samples,
        eval_batch_size=args.eval_batch_size,
    )


def command(cfg):
    """The ``pyrolvm train vae`` command line of a row's config."""
    flags = [
        ("dataset", cfg.dataset),
        ("elbo", cfg.elbo),
        ("num-particles", cfg.num_particles),
        ("epochs", cfg.epochs),
        ("batch-size", cfg.batch_size),
        ("lr", cfg.lr),
        ("eps", cfg.eps),
        ("lr-schedule", cfg.lr_schedule),
        ("eval-samples", cfg.eval_samples),
        ("device", cfg.device),
        ("seed", cfg.seed),
        ("out", cfg.out),
    ]
    return "pyrolvm train vae " + " ".join(f"--{k} {shlex.quote(str(v))}" for k, v in flags)


def run_row(name, args):
    """Train (or resume, or read back) one row; returns its result dict."""
    from pyrolvm.devices import resolve_device
    from pyrolvm.runs import train_vae

    cfg = row_config(name, args)
    metrics_path = os.path.join(cfg.out, "metrics.json")
    metrics = None
    if os.path.exists(metrics_path):
        with open(metrics_path) as f:
            metrics = json.load(f)
        if not metrics.get("complete"):
            metrics = None
    if metrics is None:
        resume = os.path.exists(os.path.join(cfg.out, "checkpoint.pt"))
        metrics = train_vae(cfg, resume=resume)
    seconds = metrics["curves"].get("seconds", [])
    return {
        "row": name,
        "objective": cfg.elbo,
        "K": cfg.num_particles,
        "published_nll": PUBLISHED[name][2],
        "test_nll": metrics["test_nll"],
        "test_nll_stderr": metrics["test_nll_stderr"],
        "eval_samples": metrics["eval_samples"],
        "epochs": metrics["epochs"],
        "budget": cfg.epochs / 3280,
        "device": str(resolve_device(cfg.device)),
        "train_seconds": sum(seconds),
        "command": command(cfg),
        "source": SOURCE,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=float, default=0.01, help="fraction of 3280 epochs")
    parser.add_argument("--rows", nargs="+", default=list(PUBLISHED), choices=list(PUBLISHED))
    parser.add_argument("--eval-samples", type=int, default=5000)
    parser.add_argument("--eval-batch-size", type=int, default=100)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/iwae_table1")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    args = parser.parse_args(argv)
    if not 0 < args.budget <= 1:
        parser.error("--budget is a fraction of the paper's 3280 epochs, in (0, 1]")
    from pyrolvm.errors import PyroLVMError

    results = []
    try:
        for name in args.rows:
            results.append(run_row(name, args))
    except PyroLVMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if results:
            os.makedirs(args.out, exist_ok=True)
            with open(os.path.join(args.out, "results.json"), "w") as f:
                json.dump(results, f, indent=1)
    print(f"{SOURCE}: test NLL (nats), ours at {args.budget:g} of the budget")
    print(f"{'row':<8} {'published':>9} {'ours':>16} {'epochs':>6} {'eval K':>6}  device")
    for r in results:
        print(
            f"{r['row']:<8} {r['published_nll']:>9.2f} "
            f"{r['test_nll']:>9.2f} ± {r['test_nll_stderr']:.2f} {r['epochs']:>6} "
            f"{r['eval_samples']:>6}  {r['device']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
