"""Data-parallel training and sharded evaluation under torchrun: 2 gloo processes on the
loopback against one process (tests/inference/dist_worker.py runs in both)."""

import json
import os
import subprocess
import sys

import pyro
import pytest
import torch

from pyrolvm.inference import distributed, importance_sample
from pyrolvm.runs.common import load_checkpoint

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import dist_worker as worker  # noqa: E402

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYROLVM_DIST_TIMEOUT": "60"}
ENV["PYTHONPATH"] = os.pathsep.join(
    [os.path.dirname(os.path.dirname(HERE)), ENV.get("PYTHONPATH", "")]
)


def torchrun(*args, timeout=240):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", "2", os.path.join(HERE, "dist_worker.py"), *args]
    return subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """One launch of 2 processes for every training and evaluation check (seconds)."""
    out = tmp_path_factory.mktemp("two_ranks")
    done = torchrun("runs", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    result = torch.load(os.path.join(out, "result.pt"), weights_only=True)
    assert result["world_size"] == 2
    result["threads"] = []
    for rank in (0, 1):
        with open(os.path.join(out, f"threads-{rank}.json")) as f:
            result["threads"].append(json.load(f))
    return result


@pytest.mark.parametrize("case", sorted(worker.EXACT_CASES))
def test_two_processes_follow_one_process_exactly(two_ranks, case):
    # A deterministic objective (a Delta guide: no draws) in float64, 33 datapoints in
    # minibatches of 10 (shards of 5 + 5 rows, and 2 + 1 in the last): with the global batch
    # sharded and the gradients summed (weighted by the rows under the subsampled plate, whose
    # loss is scaled by N / B), the 2-process run ends with the parameters and the train ELBO
    # curve of the single process, to float64 rounding; a mean instead of a sum (or a sum
    # under the subsampled plate) would be off by a factor 2 in every step.
    params, history, _ = worker.train_exact(case)
    got = two_ranks[case]
    assert set(got["params"]) == set(params) and "noise" in params
    for name, value in params.items():
        torch.testing.assert_close(got["params"][name], value, rtol=1e-12, atol=1e-12)
    assert got["history"]["train_elbo"] == pytest.approx(history["train_elbo"], abs=1e-12)
    for rank_params in got["all_ranks"]:  # every process holds the same parameters
        assert all(torch.equal(rank_params[k], got["params"][k]) for k in params)


@pytest.mark.parametrize("case", sorted(worker.EXACT_CASES))
def test_a_two_process_checkpoint_resumes_in_one_process(two_ranks, case):
    # The 2-process state after epoch 1 (rank 0's, with every process's RNG) resumed by one
    # process ends where the uninterrupted single process does.
    state = two_ranks[case]["state"]
    assert state["streams"]["world_size"] == 2 and len(state["streams"]["ranks"]) == 1
    params, history = worker.resume_exact(case, state)
    reference, ref_history, _ = worker.train_exact(case)
    for name, value in reference.items():
        torch.testing.assert_close(params[name], value, rtol=1e-12, atol=1e-12)
    assert history["train_elbo"] == pytest.approx(ref_history["train_elbo"], abs=1e-12)


def test_a_nan_in_one_shard_stops_every_process_at_the_same_step(two_ranks):
    # datapoint 0 overflows in whichever shard holds it; the summed loss is inf on every
    # process, which all raise TrainingDiverged at the step a single process does
    assert two_ranks["diverge"][0] is not None
    assert two_ranks["diverge"] == [worker.diverge()] * 2


def test_a_two_process_run_resumed_by_two_processes_is_bitwise_equal(two_ranks):
    # the VAE with Gaussian draws: rank 1's noise stream is in the checkpoint too
    assert two_ranks["vae-resume"] is True
    assert worker.resumed_vae_is_bitwise_equal()  # and in one process, as before


@pytest.mark.parametrize("elbo, k", [("trace", 1), ("iwae", 2)])
def test_two_processes_follow_the_train_elbo_curve_of_one(two_ranks, elbo, k):
    # A VAE with Gaussian draws: the data order and the updates are the single process's, the
    # guide's noise is not (rank 1 draws its own), so the curves agree up to that noise. Its
    # size: the per-datapoint sd of a one-sample ELBO between two draws at the initial
    # parameters, s (about 1.3 nats here); each epoch's mean over 300 datapoints differs by
    # about sqrt(2) s / sqrt(300) between two runs with other draws. Tolerance: 4 of those.
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    model, guide = worker.build_vae()
    x, _ = worker.digits(worker.VAE_ROWS)
    a = importance_sample(model, guide, x, num_samples=1).elbo
    b = importance_sample(model, guide, x, num_samples=1).elbo
    s = ((a - b).std() / 2**0.5).item()
    tolerance = 4 * 2**0.5 * s / worker.VAE_ROWS**0.5
    curve = worker.train_vae_curve(elbo, k)
    got = two_ranks[f"vae-{elbo}"]
    assert len(got) == worker.VAE_EPOCHS
    assert got == pytest.approx(curve, abs=tolerance)
    assert got[-1] > got[0] + 2  # both learn (about 4 nats in 3 epochs)


def test_sharded_evaluation_equals_one_process_per_datapoint(two_ranks):
    # 37 test digits in batches of 10, 10, 10, 7 (rank 0 takes the 1st and 3rd): every batch
    # draws from its own seed, so each datapoint's log-likelihood, ELBO and ESS are exactly
    # those of the single process.
    single = worker.evaluate_sharded()
    for key, value in single.items():
        assert value.shape == (37,)
        assert torch.equal(two_ranks["eval"][key], value), key


def test_no_gloo_thread_outlives_the_process_group(two_ranks):
    # Each process's gloo threads (2 workers and the transport's loop) in the run, and after
    # distributed.shutdown(): none, since destroy_process_group frees the group, whose
    # destructor joins them. A group kept alive after it (torch.distributed.nn's default
    # arguments bind group.WORLD when PyTorch imports it lazily, after the group exists) keeps
    # its threads into the interpreter's finalization, where one that releases a collective's
    # tensors needs the GIL and aborts the process ("terminate called without an active
    # exception", one launch in several under load).
    for threads in two_ranks["threads"]:
        if threads["during"] is None:
            pytest.skip("no /proc/self/task to list the threads of a process")
        assert "pt_gloo_runloop" in threads["during"]  # the check sees gloo's threads
        assert threads["after"] == []


def test_a_killed_process_stops_the_launch_with_one_line(tmp_path):
    # Rank 1 is killed (SIGKILL) at its 6th step, in epoch 2 (3 steps per epoch): rank 0
    # loses its peer in the next collective and stops with one line; the launch exits
    # non-zero well before the collective timeout; the checkpoint of epoch 1 loads. torchrun
    # sends SIGTERM to rank 0 as soon as it sees rank 1 die: whichever comes first, the lost
    # peer or the SIGTERM, rank 0 prints one line (and the other does not cut it short).
    out = str(tmp_path / "run")
    done = torchrun("kill", out, timeout=180)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.startswith("pyrolvm: error:")]
    assert len(lines) == 1, done.stderr[-3000:]
    assert "process 0 of 2 lost its peers" in lines[0] or "process 0 of 2 was stopped" in lines[0]
    state = load_checkpoint(out)
    assert state["epoch"] == 1 and state["train"]["streams"]["world_size"] == 2


def test_sigterm_outside_training_stops_a_process_with_one_line(tmp_path):
    # SIGTERM to rank 0 in its final evaluation (outside training, where it would ask for a
    # checkpoint and a stop): one line from rank 0 that names the launcher, none of Python's
    # default death by signal, and the checkpoint of the finished epoch loads.
    out = str(tmp_path / "run")
    done = torchrun("term", out, timeout=180)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.startswith("pyrolvm: error:")]
    mine = [line for line in lines if "process 0 of 2" in line]
    assert len(mine) == 1 and "stopped by its launcher (SIGTERM)" in mine[0], done.stderr[-3000:]
    assert load_checkpoint(out)["epoch"] == 1


def test_the_shards_of_a_minibatch():
    # torch.tensor_split's shards: contiguous, the first rows % W one row longer
    assert distributed.split(10, 2) == [(0, 5), (5, 10)]
    assert distributed.split(3, 2) == [(0, 2), (2, 3)]
    assert distributed.split(7, 3) == [(0, 3), (3, 5), (5, 7)]
    assert distributed.world_size() == 1 and distributed.rank() == 0
    assert not distributed.active() and distributed.is_main()


@pytest.mark.slow  # three launches of 2 processes (about 20 s each on a busy 2-core machine)
def test_pyrolvm_train_nproc_launches_torchrun_and_rank_0_writes(tmp_path, capfd, monkeypatch):
    # `pyrolvm train vae --nproc 2` runs torchrun's launcher in this process: one summary
    # (rank 0's), the run folder of a single process, a checkpoint that records 2 processes
    # and loads here, and an evaluation in one process that reproduces the test NLL of the
    # 2-process run exactly (every batch of test points draws from its own seed).
    from pyrolvm.cli import main
    from pyrolvm.runs import evaluate_vae
    from pyrolvm.runs.common import read_json

    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    out = str(tmp_path / "run")
    argv = ["train", "vae", "--epochs", "1", "--hidden", "8", "--eval-samples", "5"]
    argv += ["--no-progress", "--device", "cpu", "--out", out]
    assert main([*argv, "--nproc", "2"]) == 0
    listing = os.listdir(out)
    events = [name for name in listing if name.startswith("events.out.tfevents.")]
    assert len(events) == 1  # rank 0's TensorBoard writer alone
    assert sorted(name for name in listing if name not in events) == sorted(
        [".lock", "config.json", "metrics.json", "checkpoint.pt", "test_log_likelihood.pt"]
        + read_json(os.path.join(out, "metrics.json"))["figures"]
    )
    metrics = read_json(os.path.join(out, "metrics.json"))
    assert metrics["status"] == "ok" and metrics["epochs"] == 1
    assert load_checkpoint(out)["train"]["streams"]["world_size"] == 2
    assert read_json(os.path.join(out, "config.json"))["nproc"] == 2
    again = evaluate_vae(out, progress=False, device="cpu")
    assert again["test_nll"] == metrics["test_nll"]
    capfd.readouterr()
    assert main(["evaluate", out, "--no-progress", "--device", "cpu", "--nproc", "2"]) == 0
    printed = capfd.readouterr().out
    assert printed.count("evaluation of") == 1 and f"{metrics['test_nll']:.2f}" in printed
    # a launch that cannot give every process a row of each minibatch: one line, status 2
    bad = str(tmp_path / "bad")
    capfd.readouterr()
    assert main([*argv[:-1], bad, "--batch-size", "1", "--nproc", "2"]) == 2
    lines = [x for x in capfd.readouterr().err.splitlines() if x.startswith("pyrolvm: error:")]
    assert len(lines) == 1 and "at least one row each of every minibatch" in lines[0]
