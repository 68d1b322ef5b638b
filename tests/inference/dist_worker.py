"""The processes of tests/inference/test_distributed.py: run by ``torchrun`` with 2 gloo
processes on the loopback (``python -m torch.distributed.run --standalone --nproc-per-node 2
dist_worker.py MODE OUT``), or imported by the test for the single-process reference.

Modes: ``runs`` (the exact and the stochastic trainings and the sharded evaluation; rank 0
saves ``OUT/result.pt``), ``kill`` (``pyrolvm train vae`` whose rank 1 kills itself with
SIGKILL in its second epoch) and ``term`` (rank 0 gets SIGTERM after training).
"""

import copy
import json
import os
import signal
import sys

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyrolvm.inference import distributed, importance_sample, make_elbo, make_optim, train
from pyrolvm.inference.state import param_state

F64 = torch.float64
N, BATCH, EPOCHS = 33, 10, 2  # shards of 5 / 5 rows, and 2 / 1 in the last minibatch


class DeltaPair:
    """A model whose objective is a deterministic function of the parameters: a linear
    decoder with a learned noise scale (a constrained ``pyro.param``) under N(0, I), and a
    guide that puts z at the encoder's output (a Delta: no draws). Trace_ELBO's loss is then
    ``-log p(x, z = enc(x))``, and IWAE's K identical particles give the same bound, so two
    processes and one must agree to float64 rounding. ``subsampled``: the plate is
    ``pyro.plate(size=N, subsample=idx)``, whose loss is scaled by N / B."""

    def __init__(self, subsampled=False):
        torch.manual_seed(0)
        self.subsampled = subsampled
        self.enc = nn.Sequential(nn.Linear(4, 6, dtype=F64), nn.Tanh(), nn.Linear(6, 2, dtype=F64))
        self.dec = nn.Linear(2, 4, dtype=F64)

    def plate(self, x, idx):
        if self.subsampled:
            return pyro.plate("data", N, subsample=idx)
        return pyro.plate("data", len(x))

    def model(self, x, idx):
        pyro.module("dec", self.dec)
        noise = pyro.param("noise", torch.ones(4, dtype=F64), constraint=dist.constraints.positive)
        with self.plate(x, idx):
            z = pyro.sample("z", dist.Normal(x.new_zeros(len(x), 2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.dec(z), noise).to_event(1), obs=x)

    def guide(self, x, idx):
        pyro.module("enc", self.enc)
        with self.plate(x, idx):
            pyro.sample("z", dist.Delta(self.enc(x), event_dim=1))


def delta_data():
    gen = torch.Generator().manual_seed(1)
    return torch.randn(N, 4, generator=gen, dtype=F64), torch.arange(N)


EXACT_CASES = {
    "trace": ("trace", 1, False),
    "iwae": ("iwae", 3, False),
    "trace-subsampled": ("trace", 1, True),
}


def train_exact(case):
    """(final params, history, the checkpoint state after epoch 1) of one exact case."""
    name, k, subsampled = EXACT_CASES[case]
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    pair = DeltaPair(subsampled)
    states = []
    history = train(
        pair.model,
        pair.guide,
        delta_data(),
        make_elbo(name, k),
        make_optim(lr=0.05),
        epochs=EPOCHS,
        batch_size=BATCH,
        progress=False,
        handle_signals=False,
        checkpoint=lambda state: states.append(copy.deepcopy(state)),
    )
    return param_state(), history, states[0] if states else None


def resume_exact(case, state):
    """The exact case resumed from ``state`` (taken by another number of processes)."""
    name, k, subsampled = EXACT_CASES[case]
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    pair = DeltaPair(subsampled)
    history = train(
        pair.model,
        pair.guide,
        delta_data(),
        make_elbo(name, k),
        make_optim(lr=0.05),
        epochs=EPOCHS,
        batch_size=BATCH,
        progress=False,
        handle_signals=False,
        resume_from=state,
    )
    return param_state(), history


def diverge():
    """(epoch, step) at which TrainingDiverged stops the exact Trace_ELBO case whose datapoint
    0 is 1e200 (finite, but its squared error overflows in whichever shard holds it)."""
    from pyrolvm.errors import TrainingDiverged

    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    pair = DeltaPair()
    x, idx = delta_data()
    x = x.clone()
    x[0] = 1e200
    try:
        train(
            pair.model,
            pair.guide,
            (x, idx),
            make_elbo("trace"),
            make_optim(lr=0.05),
            epochs=EPOCHS,
            batch_size=BATCH,
            progress=False,
            handle_signals=False,
        )
    except TrainingDiverged as exc:
        return exc.epoch, exc.step
    return None


def digits(rows):
    from pyrolvm.data import load

    data = load("digits", binarize="static", seed=0)
    return data.train[:rows], data.test


def build_vae():
    from pyrolvm.guides import AmortizedNormal
    from pyrolvm.models import VAE

    return VAE(64, 2, (16,)), AmortizedNormal(64, 2, (16,))


VAE_ROWS, VAE_BATCH, VAE_EPOCHS = 300, 50, 3


def train_vae_curve(elbo, k, resume_from=None, states=None):
    """The train ELBO curve of a small VAE (Trace_ELBO or IWAE) on 300 digits (``states``:
    a list that collects the checkpoints)."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    model, guide = build_vae()
    x, _ = digits(VAE_ROWS)
    history = train(
        model,
        guide,
        x,
        make_elbo(elbo, k),
        make_optim(lr=3e-3),
        epochs=VAE_EPOCHS,
        batch_size=VAE_BATCH,
        progress=False,
        handle_signals=False,
        resume_from=resume_from,
        checkpoint=None if states is None else lambda s: states.append(copy.deepcopy(s)),
    )
    return history["train_elbo"]


def resumed_vae_is_bitwise_equal():
    """Whether the VAE with Gaussian draws, resumed after epoch 1 by the same number of
    processes, ends with the parameters and curve of the uninterrupted run (every process's
    noise stream restored)."""
    states = []
    curve = train_vae_curve("trace", 1, states=states)
    params = param_state()
    # rank 0 alone takes checkpoints; every process reads the one it wrote
    state = distributed.broadcast_object(states[0] if states else None)
    again = train_vae_curve("trace", 1, resume_from=state)
    return again == curve and all(torch.equal(v, params[n]) for n, v in param_state().items())


def evaluate_sharded():
    """Per-datapoint figures of a random VAE on 37 test digits (4 batches of 10, 10, 10, 7;
    K = 7 in chunks of 3, 3, 1)."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    model, guide = build_vae()
    _, test = digits(1)
    pyro.set_rng_seed(5)
    r = importance_sample(model, guide, test[:37], num_samples=7, batch_size=10, chunk_size=3)
    return {"log_likelihood": r.log_likelihood, "elbo": r.elbo, "ess": r.ess}


def gloo_threads():
    """The names of this process's gloo threads (its worker threads, ``pt_gloo_runloop``, and
    its transport's ``gloo_tcp_loop``), from ``/proc/self/task`` (None where there is none)."""
    if not os.path.isdir("/proc/self/task"):
        return None
    names = []
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/comm") as f:
                names.append(f.read().strip())
        except OSError:  # a thread that ended meanwhile
            continue
    return sorted(name for name in names if "gloo" in name)


def run_all(out):
    result = {"world_size": distributed.world_size()}
    for case in EXACT_CASES:
        params, history, state = train_exact(case)
        result[case] = {
            "params": params,
            "history": history,
            "state": state,
            "all_ranks": distributed.gather_objects(params),
        }
    for elbo, k in (("trace", 1), ("iwae", 2)):
        result[f"vae-{elbo}"] = train_vae_curve(elbo, k)
    result["diverge"] = distributed.gather_objects(diverge())
    result["vae-resume"] = resumed_vae_is_bitwise_equal()
    result["eval"] = evaluate_sharded()
    if distributed.is_main():
        torch.save(result, os.path.join(out, "result.pt"))


def _signal_at(owner, name, call, sig):
    """Replace ``owner.name`` by a wrapper that sends ``sig`` to this process at its
    ``call``-th call (a real signal, delivered while the run is in that function)."""
    real, calls = getattr(owner, name), [0]

    def wrapper(*args, **kwargs):
        calls[0] += 1
        if calls[0] == call:
            os.kill(os.getpid(), sig)
        return real(*args, **kwargs)

    setattr(owner, name, wrapper)


def _train_vae(out, epochs):
    """``pyrolvm train vae`` on the digits (3 steps per epoch of 500 images)."""
    from pyrolvm import cli

    argv = ["train", "vae", "--epochs", str(epochs), "--batch-size", "500", "--hidden", "8"]
    argv += ["--eval-samples", "2", "--no-progress", "--device", "cpu", "--out", out]
    return cli.main(argv)


def kill(out):
    """``pyrolvm train vae`` whose rank 1 kills itself (SIGKILL) at its 6th step."""
    from pyrolvm.inference import compiled

    if os.environ.get("RANK") == "1":  # (the end of every step, eager or compiled)
        _signal_at(compiled, "update", 6, signal.SIGKILL)
    return _train_vae(out, 3)


def term(out):
    """``pyrolvm train vae`` whose rank 0 receives SIGTERM in its final evaluation (after
    training, as from torchrun when another process died)."""
    from pyrolvm.runs import vae_family

    if os.environ.get("RANK") == "0":
        _signal_at(vae_family, "importance_figures", 1, signal.SIGTERM)
    return _train_vae(out, 1)


if __name__ == "__main__":
    if os.environ.get("PYROLVM_TEST_DTYPE"):  # the float64 job, as tests/conftest.py
        torch.set_default_dtype(getattr(torch, os.environ["PYROLVM_TEST_DTYPE"]))
    mode, out = sys.argv[1], sys.argv[2]
    if mode in ("kill", "term"):
        sys.exit(kill(out) if mode == "kill" else term(out))
    distributed.init("cpu")
    try:
        run_all(out)
        during = gloo_threads()
    finally:
        distributed.shutdown()
    # every process's gloo threads in the run and after shutdown (see the test of them)
    threads = {"during": during, "after": gloo_threads()}
    with open(os.path.join(out, f"threads-{os.environ['RANK']}.json"), "w") as f:
        json.dump(threads, f)
