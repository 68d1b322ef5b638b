"""Bitwise equality of :func:`pyrolvm.inference.train` before and after a change to it: a set of
seeded ``train`` calls (Trace_ELBO, IWAE, extra objectives with and without ``extra_batch``
through M2's fit, a transform, runs interrupted by a real SIGINT and resumed from their
checkpoints, a divergence, a schedule, Pyro's subsampled plates and an autoguide, in the eager
step and the compiled one) whose final parameters, histories (``seconds`` excepted: its
length only), every checkpoint state and every exception's fields are recorded, then compared
exactly (``torch.equal`` on tensors of the same dtype, ``==`` on numbers, NaN equal to NaN).

    python benchmarks/train_equality.py record before.pt   # on the code before the change
    python benchmarks/train_equality.py compare before.pt  # after it: exit status 1 on a difference

Takes a minute or two on one CPU core. The recorded file is specific to the machine's torch
build (it is not committed); the comparison is meaningful on the same machine only.
"""

import argparse
import copy
import io
import math
import os
import pathlib
import signal
import sys
from collections.abc import Callable

import pyro
import torch

from pyrolvm.data import load
from pyrolvm.errors import Interrupted, TrainingDiverged
from pyrolvm.fitting import fit_m2
from pyrolvm.guides import AmortizedNormal
from pyrolvm.inference import make_elbo, make_optim, train
from pyrolvm.inference.compiled import compile_mode
from pyrolvm.inference.state import param_state
from pyrolvm.models import VAE

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
import user_pairs  # noqa: E402  (the users' pairs the tests use)

N, BATCH = 200, 32  # 7 steps per epoch, the last one of 8 rows


def _digits():
    data = load("digits")
    return data.train[:N], data.train_labels[:N]


def _seconds_stripped(history):
    return {k: (len(v) if k == "seconds" else list(v)) for k, v in history.items()}


def _round_trip(state):
    """A checkpoint state through ``torch.save``/``torch.load(weights_only=True)``, as a run
    writes and reads it."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


class Recorder:
    """Collects one run's checkpoints (``checkpoint=recorder``) and its outcome."""

    def __init__(self):
        self.states: list = []

    def __call__(self, state):
        self.states.append(_round_trip(copy.deepcopy(state)))

    def outcome(self, history=None, exc=None):
        stripped = [dict(s, history=_seconds_stripped(s["history"])) for s in self.states]
        out = {"params": param_state(), "checkpoints": stripped, "raw": self.states}
        if history is not None:
            out["history"] = _seconds_stripped(history)
        if exc is not None:
            out["exception"] = {
                "type": type(exc).__name__,
                "message": str(exc),
                "epoch": exc.epoch,
                "step": exc.step,
                "history": _seconds_stripped(exc.history),
            }
        return out


def _kill_at(call: int, fn: Callable = lambda x: x) -> Callable:
    """``fn`` that sends SIGINT to this process at its ``call``-th call (a real signal)."""
    calls = [0]

    def wrapped(x, *rest):
        calls[0] += 1
        if calls[0] == call:
            os.kill(os.getpid(), signal.SIGINT)
        return fn(x, *rest)

    return wrapped


def _vae_run(
    elbo="trace", k=1, mode="off", *, transform=torch.bernoulli, resume_from=None, **options
):
    """A small VAE on 200 digits, 3 epochs of 7 steps, an lr schedule, two callbacks."""
    x, _ = _digits()
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    model, guide = VAE(64, 4, (16,)), AmortizedNormal(64, 4, (16,))
    recorder = Recorder()
    loss = make_elbo(elbo, k, **options.pop("elbo_options", {}))
    extra = [(model, guide, make_elbo("iwae", 2))] if options.pop("extra", False) else []
    kwargs = dict(
        epochs=3,
        batch_size=BATCH,
        transform=transform,
        callback=[
            lambda epoch, h: {"metric": 0.5 * epoch},
            lambda epoch, h: {"last": h["train_elbo"][-1] + h["metric"][-1]},
        ],
        progress=False,
        checkpoint=recorder,
        resume_from=resume_from,
        compile=mode,
        extra_objectives=extra,
    )
    kwargs.update(options)
    try:
        history = train(
            model, guide, x, loss, make_optim(1e-2, lr_lambda=lambda e: 0.9**e), **kwargs
        )
    except (Interrupted, TrainingDiverged) as exc:
        return recorder.outcome(exc=exc)
    return recorder.outcome(history)


def _interrupted_and_resumed(mode, **interrupt):
    """A run stopped by SIGINT (``interrupt``: where), then resumed from its last checkpoint."""
    stopped = _vae_run(mode=mode, **interrupt)
    resumed = _vae_run(mode=mode, resume_from=stopped.pop("raw")[-1])
    return {"stopped": stopped, "resumed": resumed}


def _m2_run(schedule, mode):
    x, labels = _digits()
    recorder = Recorder()
    with compile_mode(mode):
        _, _, history = fit_m2(
            x,
            labels,
            num_labelled=50,
            latent_dim=4,
            hidden=(16,),
            epochs=2,
            batch_size=BATCH,
            lr=1e-2,
            labelled_schedule=schedule,
            checkpoint=recorder,
        )
    return recorder.outcome(history)


def _pair_run(pair, guide, data, mode, **options):
    recorder = Recorder()
    history = train(
        pair.model if pair is not None else options.pop("model"),
        guide,
        data,
        make_elbo("trace"),
        make_optim(1e-2),
        epochs=3,
        progress=False,
        checkpoint=recorder,
        compile=mode,
        **options,
    )
    return recorder.outcome(history)


def _indexed(mode):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    pair = user_pairs.IndexedLinearGaussian(num_data=20)
    x = pair.sample_data(20)
    return _pair_run(pair, pair.amortized_guide, (x, torch.arange(20)), mode, batch_size=5)


def _subsampled(mode):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    pair = user_pairs.SubsampledLinearGaussian(subsample_size=5)
    return _pair_run(pair, pair.exact_guide, pair.sample_data(20), mode, batch_size=20)


def _autoguide(mode):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    model, guide, x, _ = user_pairs.autoguide_pair(n=20)
    return _pair_run(None, guide, x, mode, model=model, batch_size=20, shuffle=False)


def _nan_at(call):
    calls = [0]

    def transform(x):
        calls[0] += 1
        return torch.bernoulli(x) * (math.nan if calls[0] == call else 1.0)

    return transform


CASES: dict[str, Callable[[], dict]] = {
    "trace-off": lambda: _vae_run(mode="off"),
    "trace-graph": lambda: _vae_run(mode="graph"),
    "trace-history-continued": lambda: _vae_run(
        history={"train_elbo": [-1.0], "seconds": [0.0], "metric": [0.0], "last": [0.0]}
    ),
    "trace-noshuffle-check-every-step": lambda: _vae_run(shuffle=False, check_every_step=True),
    "iwae-off": lambda: _vae_run("iwae", 3, "off"),
    "iwae-graph": lambda: _vae_run("iwae", 3, "graph"),
    "beta-anneal-graph": lambda: _vae_run(
        "beta", 1, "graph", elbo_options={"anneal": "linear", "warmup_epochs": 3}
    ),
    "extra-objectives-main-batch-graph": lambda: _vae_run(mode="graph", extra=True),
    "m2-every-step-off": lambda: _m2_run("every-step", "off"),
    "m2-every-step-graph": lambda: _m2_run("every-step", "graph"),
    "m2-interleaved-graph": lambda: _m2_run("interleaved", "graph"),
    "sigint-mid-epoch-off": lambda: _interrupted_and_resumed(
        "off", transform=_kill_at(10, torch.bernoulli)
    ),
    "sigint-mid-epoch-graph": lambda: _interrupted_and_resumed(
        "graph", transform=_kill_at(10, torch.bernoulli)
    ),
    "sigint-last-step-graph": lambda: _interrupted_and_resumed(
        "graph", transform=_kill_at(7, torch.bernoulli)
    ),
    "sigint-in-callback-off": lambda: _interrupted_and_resumed(
        "off", callback=_kill_at(2, lambda epoch, h: {"metric": 0.5 * epoch})
    ),
    "resume-epoch-1-beta-graph": lambda: _vae_run(
        "beta",
        1,
        "graph",
        elbo_options={"anneal": "linear", "warmup_epochs": 3},
        resume_from=_vae_run(
            "beta", 1, "graph", elbo_options={"anneal": "linear", "warmup_epochs": 3}
        )["raw"][0],
    ),
    "diverged-off": lambda: _vae_run(transform=_nan_at(9)),
    "diverged-graph": lambda: _vae_run(mode="graph", transform=_nan_at(16)),
    "indexed-subsample-off": lambda: _indexed("off"),
    "indexed-subsample-graph": lambda: _indexed("graph"),
    "subsample-size-graph": lambda: _subsampled("graph"),
    "autoguide-off": lambda: _autoguide("off"),
    "autoguide-graph": lambda: _autoguide("graph"),
}


def _differences(before, after, path="") -> list[str]:
    if type(before) is not type(after):
        return [f"{path}: {type(before).__name__} != {type(after).__name__}"]
    if isinstance(before, dict):
        if list(before) != list(after):
            return [f"{path}: keys {list(before)} != {list(after)}"]
        return [d for k in before for d in _differences(before[k], after[k], f"{path}/{k}")]
    if isinstance(before, (list, tuple)):
        if len(before) != len(after):
            return [f"{path}: length {len(before)} != {len(after)}"]
        return [
            d
            for i, (b, a) in enumerate(zip(before, after, strict=True))
            for d in _differences(b, a, f"{path}[{i}]")
        ]
    if isinstance(before, torch.Tensor):
        same = before.dtype == after.dtype and before.shape == after.shape
        if same and before.is_floating_point():
            same = torch.equal(before.nan_to_num(1.2345), after.nan_to_num(1.2345)) and torch.equal(
                before.isnan(), after.isnan()
            )
        elif same:
            same = torch.equal(before, after)
        return [] if same else [f"{path}: tensors differ"]
    if isinstance(before, float) and math.isnan(before) and math.isnan(after):
        return []
    return [] if before == after else [f"{path}: {before!r} != {after!r}"]


def _count(value) -> int:
    if isinstance(value, dict):
        return sum(_count(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_count(v) for v in value)
    return value.numel() if isinstance(value, torch.Tensor) else 1


def _without_raw(value):
    if isinstance(value, dict):
        return {k: _without_raw(v) for k, v in value.items() if k != "raw"}
    return value


def run_all(names) -> dict:
    torch.set_num_threads(1)
    results = {}
    for name in names:
        results[name] = _without_raw(CASES[name]())
        print(f"ran {name}", flush=True)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=["record", "compare"])
    parser.add_argument("path")
    parser.add_argument("--cases", nargs="+", default=list(CASES))
    args = parser.parse_args(argv)
    results = run_all(args.cases)
    if args.action == "record":
        torch.save(results, args.path)
        return 0
    before = torch.load(args.path, weights_only=True)
    failed = 0
    for name in args.cases:
        found = _differences(before[name], results[name])
        failed += bool(found)
        print(
            f"{name:38s} {'EQUAL' if not found else 'DIFFERENT'} "
            f"({_count(results[name])} values compared)"
        )
        for line in found[:5]:
            print("    " + line)
    print(f"{len(args.cases) - failed} of {len(args.cases)} cases bitwise equal")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
