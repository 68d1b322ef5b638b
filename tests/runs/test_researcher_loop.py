"""The researcher's loop over run folders: ``pyrolvm compare`` (its numbers against the runs'
metrics.json, its paired differences against a hand computation, its refusals), ``--config``
(a rerun from a run's own config.json is bitwise the same run; a flag overrides the file; a
malformed or foreign file is one error), ``--seeds`` (a sweep and its mean and s.d.), and the
TensorBoard event files every run writes (read back with TensorBoard's own reader; a missing
or failing tracker is one warning and the run goes on)."""

import csv
import json
import logging
import math
import os
import sys

import pytest
import torch
from helpers import cli_error

from pyrolvm.cli import main, parse
from pyrolvm.compare import curves_figure
from pyrolvm.runs import compare_runs, load_config, train_vae
from pyrolvm.runs.common import POINTWISE, read_json
from pyrolvm.tracking import Tracker

#: Four estimators at K = 5, 1 epoch of the digits VAE with 16 hidden units, K = 5 for the
#: test NLL: seconds each.
TINY = dict(epochs=1, hidden=(16,), eval_samples=5, num_particles=5, progress=False)
ESTIMATORS = ("trace", "iwae", "dreg", "stl")
TIMES = ("seconds", "seconds_per_epoch")


def without_times(obj):
    """``obj`` (nested dicts and lists) without its wall-clock times."""
    if isinstance(obj, dict):
        return {k: without_times(v) for k, v in obj.items() if k not in TIMES}
    return [without_times(v) for v in obj] if isinstance(obj, list) else obj


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Four trained runs (seed 0: the same binarized test set), by estimator."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("estimators")
    folders = {}
    for elbo in ESTIMATORS:
        folders[elbo] = str(root / elbo)
        train_vae(elbo=elbo, out=folders[elbo], **TINY)
    torch.set_num_threads(threads)
    return folders


def test_compare_prints_the_table_and_writes_the_files(runs, tmp_path, capsys):
    out = str(tmp_path / "comparison")
    folders = [runs[e] for e in ESTIMATORS]
    assert main(["compare", *folders, "--out", out]) == 0
    printed = capsys.readouterr().out
    assert "4 vae runs on digits; settings that differ: elbo" in printed
    for name in ("test NLL", "test ELBO", "ESS", "rate", "distortion", "active units"):
        assert name in printed
    for folder in folders:
        assert folder in printed
    # the training bound is named: never an IWAE-5 bound called an ELBO
    lines = {
        e: next(line for line in printed.splitlines() if line.startswith(runs[e])) for e in runs
    }
    assert "IWAE-5 bound" in lines["iwae"] and "IWAE-5 bound" in lines["dreg"]
    assert "IWAE" not in lines["trace"] and "IWAE" not in lines["stl"]
    assert "reference" in lines["trace"]
    for name in ("comparison.csv", "comparison.json", "curves.png", "test_nll.png"):
        assert os.path.getsize(os.path.join(out, name)) > 500, name


def test_the_numbers_are_the_runs_and_the_paired_differences_the_hand_computed(runs, tmp_path):
    out = str(tmp_path / "comparison")
    comparison = compare_runs([runs[e] for e in ESTIMATORS], out=out)
    saved = read_json(os.path.join(out, "comparison.json"))
    with open(os.path.join(out, "comparison.csv")) as f:
        rows = {row["folder"]: row for row in csv.DictReader(f)}
    assert saved["settings_that_differ"] == ["elbo"]
    for run in saved["runs"]:
        metrics = read_json(os.path.join(run["folder"], "metrics.json"))
        for key, value in run["metrics"].items():  # every scalar figure, exactly
            assert value == metrics[key], key
            assert float(rows[run["folder"]][key]) == metrics[key], key  # (repr round trip)
        assert run["bound_name"] == metrics["bound_name"]
        assert run["settings"] == read_json(os.path.join(run["folder"], "config.json"))
    # the paired differences, by hand: per test point nll_a - nll_b, its mean and sd / sqrt(N)
    ll = {}
    for e, folder in runs.items():
        saved_ll = torch.load(os.path.join(folder, POINTWISE), weights_only=True)
        ll[e] = saved_ll["log_likelihood"].tolist()
        # the saved per-point values are those the run's test NLL averages
        metrics = read_json(os.path.join(folder, "metrics.json"))
        assert -sum(ll[e]) / len(ll[e]) == pytest.approx(metrics["test_nll"], abs=1e-9)
        assert len(ll[e]) == saved_ll["points"] == 360
    assert len(comparison.paired) == 6  # every pair of the 4 runs (one test set: seed 0)
    for pair in comparison.paired:
        a = next(e for e in runs if runs[e] == pair["a"])
        b = next(e for e in runs if runs[e] == pair["b"])
        d = [-x + y for x, y in zip(ll[a], ll[b], strict=True)]
        n = len(d)
        mean = sum(d) / n
        sd = math.sqrt(sum((v - mean) ** 2 for v in d) / (n - 1))
        assert pair["difference"] == pytest.approx(mean, abs=1e-12)
        assert pair["stderr"] == pytest.approx(sd / math.sqrt(n), abs=1e-12)
        assert pair["points"] == 360
    # each run against the table's first (trace), as printed and in the CSV
    for e in ("iwae", "dreg", "stl"):
        ref = comparison.reference[runs[e]]
        d = [-x + y for x, y in zip(ll[e], ll["trace"], strict=True)]
        assert ref["reference"] == runs["trace"]
        assert ref["difference"] == pytest.approx(sum(d) / len(d), abs=1e-12)
        assert float(rows[runs[e]]["test_nll_minus_reference"]) == ref["difference"]
        assert f"{ref['difference']:+.3f} ± {ref['stderr']:.3f}" in comparison.table()


def test_the_curves_share_an_axis_only_within_one_bound(runs, tmp_path, monkeypatch):
    from pyrolvm import plots

    drawn = {}
    monkeypatch.setattr(
        plots, "curve_panels", lambda path, panels, title=None: drawn.update(panels=panels)
    )
    comparison = compare_runs([runs[e] for e in ESTIMATORS])
    assert curves_figure(comparison, str(tmp_path / "curves.png"))
    panels = {title: set(series) for title, _, series in drawn["panels"]}
    # the test ELBO (K = 1) of every run; the training bounds each on their own axis
    assert panels["test ELBO (K = 1)"] == set(runs.values())
    assert panels["training objective: ELBO"] == {runs["trace"], runs["stl"]}
    assert panels["training objective: IWAE-5 bound"] == {runs["iwae"], runs["dreg"]}
    for title, _, series in drawn["panels"]:
        for folder, values in series.items():
            curves = read_json(os.path.join(folder, "metrics.json"))["curves"]
            key = "test_elbo" if title.startswith("test ELBO") else "train_elbo"
            assert values == curves[key]


def test_sort_and_glob_and_the_runs_that_cannot_be_compared(runs, tmp_path, capsys):
    root = os.path.dirname(runs["trace"])
    by_nll = compare_runs(os.path.join(root, "*"), sort="test_nll")
    nll = [r.metrics["test_nll"] for r in by_nll.runs]
    assert len(nll) == 4 and nll == sorted(nll)
    assert [r.metrics["test_nll"] for r in compare_runs([root + "/*"], sort="-test_nll").runs] == (
        sorted(nll, reverse=True)
    )
    assert [r.config["elbo"] for r in compare_runs([root + "/*"], sort="elbo").runs] == sorted(
        ESTIMATORS
    )
    assert "--sort foo" in cli_error(capsys, ["compare", runs["trace"], "--sort", "foo"])

    def fake(name, **config):
        folder = tmp_path / name
        folder.mkdir()
        base = {"kind": "vae", "dataset": "digits", "data_dim": 64, "elbo": "trace"}
        (folder / "config.json").write_text(json.dumps(base | config))
        return str(folder)

    gmm = fake("gmm", kind="gmm")
    err = cli_error(capsys, ["compare", runs["trace"], gmm])
    assert "different kinds" in err and "gmm" in err and err.count("\n") == 1
    mnist = fake("mnist", dataset="mnist", data_dim=784)
    err = cli_error(capsys, ["compare", runs["trace"], mnist])
    assert "different data" in err and "mnist" in err and err.count("\n") == 1
    for argv in (["compare", str(tmp_path / "nowhere")], ["compare", str(tmp_path / "no*")]):
        assert "no run folder" in cli_error(capsys, argv)
    # an unfinished run (no metrics.json: killed, or still training) is marked
    running = fake("running", elbo="iwae")
    table = compare_runs([runs["trace"], running]).table()
    assert f"{running} *" in table and "unfinished" in table


def test_a_sweep_over_seeds_and_its_mean_and_sd(tmp_path, capsys):
    out = str(tmp_path / "sweep")
    argv = ["train", "vae", "--epochs", "1", "--hidden", "16", "--eval-samples", "5"]
    assert main([*argv, "--no-progress", "--out", out, "--seeds", "0,1"]) == 0
    printed = capsys.readouterr().out
    assert sorted(os.listdir(out)) == ["seed-0", "seed-1"]
    metrics = [read_json(os.path.join(out, f"seed-{s}", "metrics.json")) for s in (0, 1)]
    assert [read_json(os.path.join(out, f"seed-{s}", "config.json"))["seed"] for s in (0, 1)] == [
        0,
        1,
    ]
    comparison = compare_runs([out])
    (group,) = comparison.groups
    assert group["folder"] == out and group["runs"] == 2
    a, b = (m["test_nll"] for m in metrics)
    assert group["mean"]["test_nll"] == pytest.approx((a + b) / 2, abs=1e-12)
    assert group["sd"]["test_nll"] == pytest.approx(abs(a - b) / math.sqrt(2), abs=1e-12)
    assert comparison.settings == ["seed"] and not comparison.paired  # two test sets
    assert "across the runs of each sweep" in printed
    assert f"{(a + b) / 2:.2f} ± {abs(a - b) / math.sqrt(2):.2f}" in printed
    assert "--seeds" in cli_error(capsys, [*argv, "--out", str(tmp_path / "b"), "--seeds", "1,1"])
    assert "holds a run" in cli_error(
        capsys, [*argv, "--out", os.path.join(out, "seed-0"), "--seeds", "2"]
    )


def test_a_run_rerun_from_its_config_json_is_the_same_run(runs, tmp_path, caplog, monkeypatch):
    # without tensorboard (its import fails): one warning, no event file, and the same run:
    # metrics.json bitwise equal but for the wall-clock seconds
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    out = str(tmp_path / "again")
    source = os.path.join(runs["iwae"], "config.json")
    with caplog.at_level(logging.WARNING, logger="pyrolvm.tracking"):
        assert main(["train", "--config", source, "--out", out, "--no-progress"]) == 0
    warnings = [r for r in caplog.records if r.name == "pyrolvm.tracking"]
    assert len(warnings) == 1 and "tensorboard package is not installed" in warnings[0].message
    assert not [n for n in os.listdir(out) if n.startswith("events.out.tfevents")]
    before = read_json(os.path.join(runs["iwae"], "metrics.json"))
    after = read_json(os.path.join(out, "metrics.json"))
    assert without_times(after) == without_times(before)
    again = torch.load(os.path.join(out, POINTWISE), weights_only=True)
    first = torch.load(os.path.join(runs["iwae"], POINTWISE), weights_only=True)
    assert torch.equal(again["log_likelihood"], first["log_likelihood"])
    config = read_json(os.path.join(out, "config.json"))
    assert config == read_json(source) | {"out": out}


def test_flags_override_the_config_file_and_yaml_is_read(runs, tmp_path):
    source = os.path.join(runs["iwae"], "config.json")
    command = parse(["train", "vae", "--config", source, "--lr", "0.01", "--seed", "4"])
    file = read_json(source)
    assert command.lr == 0.01 and command.seed == 4  # the flags
    assert command.elbo == "iwae" and command.num_particles == 5  # the file
    assert command.hidden == (16,) and command.epochs == 1 and command.config == source
    assert load_config(source).elbo == "iwae" and load_config(source).hidden == (16,)
    yaml_file = tmp_path / "settings.yaml"
    yaml_file.write_text("elbo: dreg\nnum_particles: 3\nhidden: [8, 8]\n")
    command = parse(["train", "vae", "--config", str(yaml_file), "--num-particles", "2"])
    assert (command.elbo, command.num_particles, command.hidden) == ("dreg", 2, (8, 8))
    assert command.epochs is None  # not in the file: the kind's default
    # a resumed run's config.json records resume: true; a rerun from it starts afresh
    resumed = tmp_path / "resumed.json"
    resumed.write_text(json.dumps(file | {"resume": True, "overwrite": True}))
    command = parse(["train", "--config", str(resumed)])
    assert not command.resume and not command.overwrite


def test_a_malformed_or_foreign_config_file_is_one_error(runs, tmp_path, capsys):
    def error(text, *argv, name="settings.json"):
        path = tmp_path / name
        path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
        err = cli_error(capsys, ["train", *argv, "--config", str(path)])
        assert err.startswith("pyrolvm: error:") and err.count("\n") == 1, err
        return err

    assert "not valid JSON" in error('{"elbo": ', "vae")
    assert "not valid YAML" in error("elbo: [iwae\n", "vae", name="bad.yaml")
    assert "mapping of setting to value" in error("[1, 2]", "vae")
    assert "no setting 'foo'" in error('{"foo": 1}', "vae")
    assert "--elbo" in error('{"elbo": "nope"}', "vae")
    assert "--latent-dim" in error('{"latent_dim": "eight"}', "vae")
    assert "which kind of run" in error('{"elbo": "iwae"}')
    assert "a vae run, not of a gmm run" in error(json.dumps({"kind": "vae"}), "gmm")
    assert "unknown kind" in error('{"kind": "transformer"}')
    with open(os.path.join(runs["trace"], "checkpoint.pt"), "rb") as f:
        assert "not valid JSON" in error(f.read(), "vae")  # a foreign (binary) file
    assert "cannot read" in cli_error(capsys, ["train", "vae", "--config", str(tmp_path / "no")])


def test_tensorboard_event_files_hold_the_runs_scalars_and_figures(runs):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = runs["iwae"]
    (events,) = [n for n in os.listdir(folder) if n.startswith("events.out.tfevents.")]
    reader = EventAccumulator(os.path.join(folder, events), size_guidance={"scalars": 0})
    reader.Reload()
    tags = reader.Tags()
    metrics = read_json(os.path.join(folder, "metrics.json"))
    curves = metrics["curves"]
    expected = {
        "step/train IWAE-5 bound",  # every 10 steps: named by the bound, never "ELBO"
        "epoch/train IWAE-5 bound",
        "epoch/test IWAE-5 bound",
        "epoch/test_elbo",
        "epoch/seconds",
        "final/test_nll",
        "final/test_elbo",
        "final/rate",
    }
    assert expected <= set(tags["scalars"])
    assert not [t for t in tags["scalars"] if "ELBO" in t and "IWAE" not in t and "test" not in t]
    scalar = lambda tag: [(e.step, e.value) for e in reader.Scalars(tag)]  # noqa: E731
    # the per-epoch curves of metrics.json at epochs 1..E (event values are float32)
    assert [s for s, _ in scalar("epoch/train IWAE-5 bound")] == [1]
    for tag, key in (("epoch/train IWAE-5 bound", "train_elbo"), ("epoch/test_elbo", "test_elbo")):
        values = [v for _, v in scalar(tag)]
        assert values == pytest.approx(curves[key], rel=1e-6)
    assert scalar("final/test_nll")[0][1] == pytest.approx(metrics["test_nll"], rel=1e-6)
    # per step: where the losses were read (1437 digits in batches of 100: 15 steps, read
    # at steps 1, 11 and 15: step % 10 == 0 and the last), each the mean bound of the
    # steps read since the last
    steps = [s for s, _ in scalar("step/train IWAE-5 bound")]
    assert steps == [1, 11, 15]
    assert {f"figures/{n.removesuffix('.png')}" for n in metrics["figures"]} <= set(tags["images"])


def test_a_failing_tracker_is_one_warning_and_then_silent(tmp_path, caplog):
    class Broken:
        calls = 0

        def add_scalar(self, *args, **kwargs):
            Broken.calls += 1
            raise OSError(28, "No space left on device")

        def close(self):
            pass

    tracker = Tracker(str(tmp_path), enabled=False)
    tracker.writer = Broken()
    with caplog.at_level(logging.WARNING, logger="pyrolvm.tracking"):
        tracker.epochs("train", {"train_elbo": [-1.0, -2.0], "test_elbo": [-1.5, -2.5]})
        tracker.step_hook("train", None)([1, 2], [-1.0, -2.0])
        tracker.finish({"lr": 0.1}, {"test_nll": 1.0}, str(tmp_path))
        tracker.close()
    assert Broken.calls == 1 and not tracker.active
    (record,) = [r for r in caplog.records if r.name == "pyrolvm.tracking"]
    assert "No space left on device" in record.getMessage() and "goes on" in record.getMessage()


def test_a_resumed_run_writes_each_epoch_once(runs, tmp_path):
    # the 1-epoch trace run extended to 2 epochs with --resume: a second event file, which
    # holds epoch 2 alone (epoch 1 was written by the first)
    pytest.importorskip("tensorboard")
    import shutil

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = str(tmp_path / "extended")
    shutil.copytree(runs["trace"], folder)
    train_vae(elbo="trace", out=folder, resume=True, **(TINY | {"epochs": 2}))
    events = [n for n in os.listdir(folder) if n.startswith("events.out.tfevents.")]
    assert len(events) == 2
    reader = EventAccumulator(folder, size_guidance={"scalars": 0})
    reader.Reload()
    curve = read_json(os.path.join(folder, "metrics.json"))["curves"]["train_elbo"]
    written = [(e.step, e.value) for e in reader.Scalars("epoch/train ELBO")]
    assert [s for s, _ in written] == [1, 2]
    assert [v for _, v in written] == pytest.approx(curve, rel=1e-6)
