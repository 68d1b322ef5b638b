"""Fingerprints of tiny seeded runs of every kind, to check that a refactoring of the run
layer leaves every number the runs print and write bitwise unchanged.

For each entry of :data:`ENTRIES` (a run kind and its settings: a few epochs on digits) the
script trains the run into a temporary folder and records its ``metrics.json`` (wall-clock
times dropped), the summary that ``pyrolvm train`` prints and the rows that ``pyrolvm
evaluate`` prints (their seconds rows dropped, the folder's path replaced), and a SHA-256 of
the final parameters in its checkpoint. ``--write FILE`` stores them; ``--check FILE``
recomputes them and names every entry that differs (exit status 1).

The figures are bitwise only on one machine and one torch build: write and check on the
same one. Run from the repository root::

    OMP_NUM_THREADS=1 python benchmarks/run_fingerprints.py --write /tmp/before.json
    OMP_NUM_THREADS=1 python benchmarks/run_fingerprints.py --check /tmp/before.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import tempfile

import torch

FAST_VAE = dict(epochs=2, hidden=(16,), eval_samples=10)
#: (name, kind, settings): every kind, and the families and options of the vae kind.
ENTRIES: list[tuple[str, str, dict]] = [
    ("vae", "vae", dict(FAST_VAE, latent_dim=2)),
    ("vae-iwae", "vae", dict(FAST_VAE, elbo="iwae", num_particles=2)),
    ("vae-beta-anneal", "vae", dict(FAST_VAE, elbo="beta", beta=2.0, anneal="linear")),
    ("vae-burda", "vae", dict(FAST_VAE, lr_schedule="burda", epochs=3)),
    (
        "vae-reinforce",
        "vae",
        dict(FAST_VAE, elbo="tracegraph", reparameterized=False, baseline="decaying_avg"),
    ),
    ("vae-gaussian", "vae", dict(FAST_VAE, likelihood="gaussian")),
    ("vae-cb", "vae", dict(FAST_VAE, likelihood="continuous-bernoulli")),
    ("vae-categorical", "vae", dict(FAST_VAE, likelihood="categorical", eval_batch_size=50)),
    (
        "vae-fullcov-vamp",
        "vae",
        dict(FAST_VAE, guide="fullcov", prior="vamp", pseudo_inputs=10, elbo="iwae"),
    ),
    ("vae-vamp", "vae", dict(FAST_VAE, prior="vamp", pseudo_inputs=7)),
    ("vae-iaf-flowprior", "vae", dict(FAST_VAE, guide="iaf", flows=2, prior="flow")),
    ("vae-planar", "vae", dict(FAST_VAE, guide="planar", flows=2)),
    ("vae-two-layers", "vae", dict(FAST_VAE, layers=2)),
    ("vae-mask", "vae", dict(FAST_VAE, mask="square", missing_rate=0.3)),
    (
        "vae-pixelcnn",
        "vae",
        dict(
            FAST_VAE,
            epochs=1,
            decoder="pixelcnn",
            decoder_layers=1,
            decoder_channels=4,
            eval_samples=4,
        ),
    ),
    ("vae-gap", "vae", dict(FAST_VAE, amortization_gap=3)),
    (
        "sbn-bernoulli",
        "sbn",
        dict(FAST_VAE, latent="bernoulli", elbo="tracegraph", baseline="decaying_avg"),
    ),
    (
        "sbn-categorical",
        "sbn",
        dict(FAST_VAE, latent="categorical", num_categories=3, relaxation="concrete"),
    ),
    ("sbn-vimco", "sbn", dict(FAST_VAE, latent="bernoulli", elbo="vimco", num_particles=3)),
    ("gmm", "gmm", dict(components=3, pca_dim=3, epochs=10, n_init=2, sklearn_n_init=1)),
    (
        "gmm-meanfield",
        "gmm",
        dict(
            components=3, pca_dim=2, epochs=5, guide="meanfield", sklearn_n_init=1, batch_size=500
        ),
    ),
    ("m2", "m2", dict(labels=50, epochs=1, hidden=(16,))),
    (
        "m2-validation",
        "m2",
        dict(labels=50, epochs=2, hidden=(16,), validation=300, labelled_schedule="interleaved"),
    ),
    (
        "mixture-vae",
        "mixture-vae",
        dict(components=3, latent_dim=2, hidden=(16,), warmup_epochs=1, epochs=1),
    ),
    (
        "mixture-vae-vade",
        "mixture-vae",
        dict(
            components=3,
            latent_dim=2,
            hidden=(16,),
            warmup_epochs=1,
            epochs=1,
            pretrain="autoencoder",
            prior_init="means",
        ),
    ),
    (
        "cvae",
        "cvae",
        dict(quadrants=(1, 3), epochs=1, baseline_epochs=1, hidden=(16,), eval_samples=5),
    ),
    (
        "cvae-label",
        "cvae",
        dict(condition="label", epochs=1, hidden=(16,), eval_samples=5, prior="standard"),
    ),
    (
        "cvae-iwae",
        "cvae",
        dict(
            quadrants=(2,),
            epochs=1,
            baseline_epochs=1,
            hidden=(16,),
            eval_samples=5,
            elbo="iwae",
            num_particles=2,
        ),
    ),
    ("mvae", "mvae", dict(epochs=1, hidden=(16,), eval_samples=5)),
    ("mvae-halves", "mvae", dict(modalities="halves", epochs=1, hidden=(16,), eval_samples=5)),
    (
        "mvae-moe",
        "mvae",
        dict(
            posterior="moe",
            epochs=1,
            hidden=(16,),
            eval_samples=5,
            label_weight=1.0,
            elbo="iwae",
            num_particles=2,
        ),
    ),
    ("made", "made", dict(epochs=2, hidden=(32,), num_samples=4)),
    (
        "made-masks",
        "made",
        dict(epochs=1, hidden=(32,), num_masks=2, num_samples=4, binarize="static"),
    ),
    (
        "pixelcnn",
        "pixelcnn",
        dict(epochs=1, channels=4, num_layers=2, num_samples=2, train_size=300),
    ),
    (
        "pixelcnn-8bit",
        "pixelcnn",
        dict(epochs=1, channels=4, num_layers=1, num_samples=2, pixels="8bit", train_size=200),
    ),
    (
        "vqvae",
        "vqvae",
        dict(epochs=1, prior_epochs=1, num_codes=8, channels=8, prior_channels=8, train_size=300),
    ),
]

#: Metrics a run of the kind no longer writes, by entry-name prefix (the discrete-latent runs
#: of ``pyrolvm train vae --latent ...`` became ``pyrolvm train sbn``, whose metrics do not
#: name a Gaussian guide, prior, layer count and decoder it does not have).
DROPPED = {"sbn-": {"guide", "prior", "layers", "decoder"}}
#: Metrics that are wall-clock times.
TIMES = {"seconds", "seconds_per_epoch", "sklearn_seconds"}


def without_times(obj):
    """``obj`` (nested dicts and lists) without its wall-clock times."""
    if isinstance(obj, dict):
        return {k: without_times(v) for k, v in obj.items() if k not in TIMES}
    if isinstance(obj, list):
        return [without_times(v) for v in obj]
    return obj


def tensors(obj, prefix=""):
    """``{path: tensor}`` of the tensors in nested dicts and lists."""
    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    out = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(tensors(v, f"{prefix}/{k}"))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(tensors(v, f"{prefix}/{i}"))
    return out


def final_parameters(state):
    """The trained networks' state in a checkpoint, ``{part: state_dict}``, as the run layer
    writes it (the model, guide and prior of a run; the settings' states of a cvae run,
    ``KEY/model``..., whose baseline is a part of its model as well; the mixture's values of a
    gmm run, whose PCA, a function of the data, is left to the metrics)."""
    parts = state.get("parts")
    if parts is None:  # the layout before the run template
        parts = {k: state[k] for k in ("model", "guide", "prior", "params") if k in state}
        if "states" in state:
            parts |= {f"{k}/{p}": v for k, d in state["states"].items() for p, v in d.items()}
        return parts
    drop = lambda k: k == "pca" or k.endswith(".baseline")  # noqa: E731
    return {k.replace(".", "/"): v for k, v in parts.items() if not drop(k)}


def digest(parts):
    """SHA-256 of the tensors of ``parts`` (names, shapes, dtypes and bytes), in name order."""
    h = hashlib.sha256()
    flat = tensors(parts)
    for name in sorted(flat):
        t = flat[name].detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def printed(text, folder):
    """A printed table without its seconds rows, the folder's path replaced by RUN."""
    lines = [line for line in text.splitlines() if not line.startswith("seconds")]
    return "\n".join(lines).replace(folder, "RUN")


def numbers(text):
    """The numbers in a printed table, in order."""
    return re.findall(r"-?\d+(?:\.\d+)?", text)


def fingerprint(name, kind_name, settings, root):
    from pyrolvm.runs import RUNS, evaluate_run
    from pyrolvm.runs.common import format_summary, load_checkpoint

    kind = RUNS.get(kind_name) or RUNS["vae"]  # (before the split: vae --latent ... was sbn)
    out = os.path.join(root, name)
    cfg = kind.config(out=out, progress=False, **settings)
    metrics = kind.train(cfg)
    summary = kind.summary(metrics, cfg, out)
    evaluated_kind, evaluated = evaluate_run(out, progress=False)
    rows = format_summary("evaluation", evaluated_kind.evaluation_rows(evaluated))
    state = load_checkpoint(out)
    return {
        "metrics": without_times(json.loads(json.dumps(metrics, default=str))),
        "summary": printed(summary, out),
        "evaluation": printed(rows, out),
        "parameters": digest(final_parameters(state)),
        "files": sorted(os.listdir(out)),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", metavar="FILE", help="store the fingerprints in FILE")
    group.add_argument("--check", metavar="FILE", help="compare with the fingerprints in FILE")
    parser.add_argument("--only", nargs="*", help="entries to run (default: all)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    entries = [e for e in ENTRIES if not args.only or e[0] in args.only]
    results = {}
    with tempfile.TemporaryDirectory() as root:
        for name, kind, settings in entries:
            results[name] = fingerprint(name, kind, settings, root)
            print(f"{name}: {results[name]['parameters'][:16]}", flush=True)
    if args.write:
        with open(args.write, "w") as f:
            json.dump(results, f, indent=1, sort_keys=True)
        return 0
    with open(args.check) as f:
        expected = json.load(f)
    differ = []
    for name, got in results.items():
        want = expected.get(name)
        if want is None:
            print(f"{name}: not in {args.check}")
            continue
        dropped = next((v for k, v in DROPPED.items() if name.startswith(k)), set())
        if dropped:
            want["metrics"] = {k: v for k, v in want["metrics"].items() if k not in dropped}
        for part in ("metrics", "summary", "evaluation", "parameters", "files"):
            if got[part] == want[part]:
                continue
            if part in ("summary", "evaluation") and numbers(got[part]) == numbers(want[part]):
                print(f"{name}: {part}: the same numbers, other words")
                continue
            differ.append(f"{name}: {part}")
    for line in differ:
        print("DIFFERS", line)
    print(
        f"{len(results) - len(differ and {d.split(':')[0] for d in differ})} of "
        f"{len(results)} runs bitwise equal"
    )
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
