import math
import re
import sys

import pytest
import torch
from pyro.infer import Trace_ELBO

from pyrolvm.data import load
from pyrolvm.errors import TrainingDiverged
from pyrolvm.guides import AmortizedNormal
from pyrolvm.inference import importance_sample, make_elbo, make_optim, train
from pyrolvm.models import VAE


def _test_elbo(model, guide, x):
    return importance_sample(model, guide, x, num_samples=20).elbo.mean().item()


@pytest.mark.parametrize("elbo", ["trace", "iwae"])
def test_short_training_on_digits_improves_test_elbo(elbo):
    ds = load("digits", binarize="dynamic")
    model = VAE(64, 4, (64,), data_mean=ds.train.mean(0))
    guide = AmortizedNormal(64, 4, (64,))
    before = _test_elbo(model, guide, ds.test)
    history = train(
        model,
        guide,
        ds.train,
        make_elbo(elbo, 3),
        make_optim(3e-3),
        epochs=15,
        batch_size=100,
        transform=ds.train_transform,
        progress=False,
    )
    after = _test_elbo(model, guide, ds.test)
    # Untrained: about -28 nats (decoder at the mean image, KL ~ 0); 15 epochs reach about -24.3.
    # The standard error of each estimate is ~0.2 nats (360 test images), so 2 nats is clear.
    assert after > before + 2.0
    assert len(history["train_elbo"]) == 15 and history["train_elbo"][-1] > history["train_elbo"][0]
    # Pinned. Seeds 0-3 measured: untrained -28.03, -28.08, -27.79, -27.77; after 15 epochs
    # (trace) -24.31, -24.30, -24.30, -24.26 and (iwae) -24.35, -24.39, -24.58, -24.43; last
    # train ELBO (trace) -24.34 ... -24.36, (iwae, the K = 3 bound) -24.22 ... -24.33.
    # Seed-to-seed sd <= 0.15 nats: tolerances of 0.6 for the untrained value, 0.4 after
    # (0.5 in the float64 job, whose draws differ: -24.75 there for iwae, 2.7 sd out).
    # Measured again with the data-order stream of issue 15 (seeds 0-3, one-sample test ELBO):
    # float32 (trace) -24.33, -24.35, -24.36, -24.25, (iwae) -24.47, -24.47, -24.48, -24.33:
    # the same spread; float64 (trace) -24.57, -24.54, -24.97, -24.60 (this test: -24.92),
    # systematically lower in float64 as before, hence 0.7 there.
    wide = torch.get_default_dtype() == torch.float64
    assert before == pytest.approx(-27.9, abs=0.6)
    assert after == pytest.approx(-24.35, abs=0.7 if wide else 0.4)
    assert history["train_elbo"][-1] == pytest.approx(-24.3, abs=0.4)


def test_callback_and_divergence():
    ds = load("digits", binarize="static")
    model, guide = VAE(64, 2, (8,)), AmortizedNormal(64, 2, (8,))

    class NaNAfter(Trace_ELBO):
        calls = 0

        def loss_and_grads(self, *args, **kwargs):
            NaNAfter.calls += 1
            value = super().loss_and_grads(*args, **kwargs)
            return math.nan if NaNAfter.calls > 20 else value

    seen = []
    with pytest.raises(TrainingDiverged, match="epoch 2, step 6") as info:
        train(
            model,
            guide,
            ds.train,
            NaNAfter(),
            epochs=3,
            batch_size=100,
            callback=lambda epoch, h: seen.append(epoch) or {"extra": epoch},
            progress=False,
        )
    # 15 steps per epoch: step 21 is epoch 2, step 6. Epoch 1's curves and callback survive.
    assert seen == [1] and info.value.epoch == 2 and info.value.step == 21
    assert len(info.value.history["train_elbo"]) == 1 and info.value.history["extra"] == [1]


def test_tuple_data_is_sliced_together():
    seen = []

    def model(x, y):
        seen.append(bool((x[:, 0] == y).all()))
        return VAE(2, 1, (2,))(x)

    guide_net = AmortizedNormal(2, 1, (2,))
    x = torch.bernoulli(torch.full((50, 2), 0.5))
    train(
        model,
        lambda x, y: guide_net(x),
        (x, x[:, 0].clone()),
        epochs=2,
        batch_size=7,
        progress=False,
    )
    assert seen and all(seen)


def test_pyro_validation_runs_on_the_first_step_only_by_default():
    from pyro.infer.util import is_validation_enabled

    seen = []
    net = VAE(4, 1, (2,))
    guide = AmortizedNormal(4, 1, (2,))

    def model(x):
        seen.append(is_validation_enabled())
        return net(x)

    x = torch.bernoulli(torch.full((30, 4), 0.5))
    train(model, guide, x, epochs=2, batch_size=10, progress=False)
    # the first step runs the pair once more, for its checks (pyrolvm.inference.pairs)
    assert seen == [True, True] + [False] * 5
    seen.clear()
    train(model, guide, x, epochs=1, batch_size=10, progress=False, check_every_step=True)
    assert seen == [True] * 4
    assert is_validation_enabled()


@pytest.mark.parametrize("n, batch_size", [(53, 10), (40, 10), (7, 100)])
def test_every_datapoint_is_seen_exactly_once_per_epoch(n, batch_size):
    # Rows carry their own index, so the model sees which datapoints each step holds.
    seen = []
    net = VAE(2, 1, (2,))
    guide_net = AmortizedNormal(2, 1, (2,))

    def model(x, index):
        seen.append(index.clone())
        return net(x)

    x = torch.bernoulli(torch.full((n, 2), 0.5))
    epochs = 3
    train(
        model,
        lambda x, index: guide_net(x),
        (x, torch.arange(n)),
        epochs=epochs,
        batch_size=batch_size,
        progress=False,
    )
    steps = math.ceil(n / batch_size)
    # SVI runs the model once per step (Trace_ELBO, one particle), after the first step's
    # check of the pair (pyrolvm.inference.pairs) ran it once on the first batch
    assert torch.equal(seen[0], seen[1])
    seen = seen[1:]
    assert len(seen) == epochs * steps
    for epoch in range(epochs):
        batches = seen[epoch * steps : (epoch + 1) * steps]
        assert [len(b) for b in batches] == [batch_size] * (steps - 1) + [
            n - batch_size * (steps - 1)
        ]
        assert torch.cat(batches).sort().values.tolist() == list(range(n))
    # a fresh order every epoch (when there is more than one batch)
    if steps > 1:
        assert not torch.equal(torch.cat(seen[:steps]), torch.cat(seen[steps : 2 * steps]))


def test_reported_train_elbo_is_the_epoch_mean_of_the_exact_elbo():
    # With the exact posterior as guide every ELBO estimate equals log p(x) (no Monte Carlo
    # error), and with a zero learning rate the parameters stay put: the reported per-epoch
    # ELBO is then exactly the mean of log p(x_n) over the N datapoints, whatever the batches.
    import pyro
    from helpers import exact_guide, linear_gaussian

    model, _ = linear_gaussian()
    with torch.no_grad():
        x = model.marginal().sample((53,))
    exact = model.log_marginal(x).mean().item()
    history = train(
        model,
        exact_guide(model),
        x,
        Trace_ELBO(),
        pyro.optim.SGD({"lr": 0.0}),
        epochs=2,
        batch_size=10,
        progress=False,
    )
    assert history["train_elbo"] == pytest.approx([exact, exact], abs=1e-4)
    assert len(history["seconds"]) == 2 and all(s > 0 for s in history["seconds"])


def test_make_optim_is_adam_with_the_given_settings_and_refuses_a_non_positive_rate():
    from pyrolvm.errors import ConfigError

    optim = make_optim(0.25, (0.5, 0.75), 1e-4)
    assert optim.pt_optim_constructor is torch.optim.Adam
    assert optim.pt_optim_args == {"lr": 0.25, "betas": (0.5, 0.75), "eps": 1e-4}
    assert make_optim().pt_optim_args == {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8}
    for lr in (0.0, -1e-3):
        with pytest.raises(ConfigError, match=f"the learning rate must be positive, got {lr}"):
            make_optim(lr)


def _tiny(n=6):
    net, guide_net = VAE(2, 1, (2,)), AmortizedNormal(2, 1, (2,))
    return net, guide_net, torch.bernoulli(torch.full((n, 2), 0.5))


def test_bad_arguments_and_edge_cases():
    from pyrolvm.errors import ConfigError

    model, guide, x = _tiny()
    with pytest.raises(ConfigError, match="^no training data$"):
        train(model, guide, x[:0], progress=False)
    for kw in ({"batch_size": 0}, {"epochs": -1}):
        with pytest.raises(ConfigError, match="batch_size must be >= 1 and epochs >= 0, got"):
            train(model, guide, x, progress=False, **kw)
    # the smallest valid cases: one datapoint, batches of one, zero epochs
    assert len(train(model, guide, x[:1], progress=False)["train_elbo"]) == 1
    assert len(train(model, guide, x, batch_size=1, progress=False)["train_elbo"]) == 1
    assert train(model, guide, x, epochs=0, progress=False) == {
        "train_elbo": [],
        "seconds": [],
        "bound_name": [],
    }


def test_history_is_continued_and_the_callback_numbers_epochs_after_it():
    model, guide, x = _tiny()
    history = train(model, guide, x, epochs=2, batch_size=4, progress=False)
    seen = []
    again = train(
        model,
        guide,
        x,
        epochs=2,
        batch_size=4,
        progress=False,
        history=history,
        callback=lambda epoch, h: seen.append((epoch, len(h["train_elbo"]))),
    )
    assert again is history and len(history["train_elbo"]) == 4 and len(history["seconds"]) == 4
    assert seen == [(3, 3), (4, 4)]


def test_progress_bar_counts_steps_and_shows_the_running_elbo(capsys, monkeypatch):
    model, guide, x = _tiny(30)
    train(model, guide, x, epochs=2, batch_size=10, progress=False)
    assert capsys.readouterr().err == ""
    train(model, guide, x, epochs=2, batch_size=10)  # stderr is no terminal here: quiet
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    train(model, guide, x, epochs=2, batch_size=10)  # progress=True is the default
    err = capsys.readouterr().err
    assert "6/6" in err and re.search(r"[ \d](step/s|s/step)", err)
    assert re.search(r"epoch 2 elbo -\d+\.\d\d", err)


def test_default_batches_hold_100_datapoints():
    seen = []
    net, guide_net, x = _tiny(250)

    def model(x):
        seen.append(len(x))
        return net(x)

    train(model, guide_net, x, progress=False)
    assert seen == [100, 100, 100, 50]  # the first: the check of the pair on the first batch


class RecordedELBO(Trace_ELBO):
    """Trace_ELBO that keeps the loss of every step it takes (nats, a sum over the rows)."""

    def __init__(self):
        super().__init__()
        self.losses = []

    def loss_and_grads(self, model, guide, *args, **kwargs):
        loss = super().loss_and_grads(model, guide, *args, **kwargs)
        self.losses.append(loss)
        return loss


def _indexed_pair(seen, draws=0):
    """A VAE pair on 2-pixel rows that carry their index: the model notes each step's
    indices (not those of the pair check on train's first step, which runs without
    gradients), and draws ``draws`` numbers of its own from torch's global RNG (as a model
    with more noise does)."""
    import pyro

    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    net, guide_net = VAE(2, 1, (2,)), AmortizedNormal(2, 1, (2,))

    def model(x, index):
        if torch.is_grad_enabled():  # a step (train's check of the pair runs without gradients)
            seen.append(index.clone())
        torch.rand(draws)
        return net(x)

    def guide(x, index):
        return guide_net(x)

    x = torch.bernoulli(torch.full((10, 2), 0.5))
    return model, guide, (x, torch.arange(10))


def test_the_train_elbo_of_an_epoch_is_minus_its_step_losses_summed_over_its_rows():
    # N = 10 rows in batches of 4: steps of 4, 4 and 2 rows (the rows counted per step are
    # the minibatch's, 2 in the last). Each epoch's train ELBO is minus the sum of its 3 step
    # losses (each a sum over its rows) over the 10 rows, exactly: neither the mean of the
    # per-step means (which weighs the 2 rows of the last step like 4) nor a division by
    # 3 steps x 4 rows. Two epochs visit every row exactly twice, once in each.
    seen = []
    model, guide, data = _indexed_pair(seen)
    elbo = RecordedELBO()
    history = train(model, guide, data, elbo, epochs=2, batch_size=4, progress=False)
    assert [len(index) for index in seen] == [4, 4, 2] * 2 and len(elbo.losses) == 6
    for epoch in range(2):
        total = 0.0
        for loss in elbo.losses[3 * epoch : 3 * epoch + 3]:
            total += loss
        assert history["train_elbo"][epoch] == pytest.approx(-total / 10, rel=1e-12)
    assert torch.bincount(torch.cat(seen), minlength=10).tolist() == [2] * 10
    assert sorted(torch.cat(seen[:3]).tolist()) == list(range(10))


def test_the_step_callback_gets_every_steps_bound_when_the_losses_are_read():
    # N = 25 rows in batches of 4: 7 steps per epoch (6 of 4 rows, 1 of 1), 14 over 2 epochs.
    # The losses are read at each epoch's first step (step % 10 == 0) and last step, so the
    # callback is called 4 times, with the steps read since the last call, numbered 1..14
    # over the epochs, and the bound per row of each, -loss / rows, exactly (the losses of a
    # Pyro ELBO are Python floats: nothing is converted).
    seen, calls = [], []
    model, guide, _ = _indexed_pair(seen)
    data = (torch.bernoulli(torch.full((25, 2), 0.5)), torch.arange(25))
    elbo = RecordedELBO()
    history = train(
        model,
        guide,
        data,
        elbo,
        epochs=2,
        batch_size=4,
        progress=False,
        step_callback=lambda steps, bounds: calls.append((steps, bounds)),
    )
    assert [steps for steps, _ in calls] == [[1], list(range(2, 8)), [8], list(range(9, 15))]
    rows = ([4] * 6 + [1]) * 2
    bounds = [b for _, chunk in calls for b in chunk]
    assert bounds == [-loss / r for loss, r in zip(elbo.losses, rows, strict=True)]
    for epoch in range(2):  # the epoch's train ELBO is their mean weighted by the rows
        chunk = slice(7 * epoch, 7 * epoch + 7)
        weighted = sum(b * r for b, r in zip(bounds[chunk], rows[chunk], strict=True)) / 25
        assert history["train_elbo"][epoch] == pytest.approx(weighted, rel=1e-12)


def test_the_epoch_order_comes_from_the_data_order_stream_not_the_global_rng():
    # The data order is drawn from a stream of its own: a torch.Generator seeded once, at the
    # start, with the first of 2 integers in [0, 2**62) drawn from the global RNG (which
    # pyro.set_rng_seed seeds); every epoch's order is that stream's next randperm(N). So a
    # model that draws more noise from the global RNG visits the rows in the same order (as
    # the processes of a torchrun launch, which draw different noise, must), and so are the
    # extra batches that extra_batch draws from the global RNG (M2's labelled minibatches).
    import pyro

    orders, extras = [], []
    for draws in (0, 7):
        seen, extra = [], []
        model, guide, data = _indexed_pair(seen, draws)

        def extra_batch(epoch, step, data=data, extra=extra):
            index = torch.randint(0, 10, (3,))
            extra.append(index)
            return data[0][index], index

        pyro.set_rng_seed(1)
        train(model, guide, data, epochs=3, batch_size=4, progress=False)
        orders.append(torch.cat(seen).tolist())
        pyro.set_rng_seed(1)
        train(
            model,
            guide,
            data,
            epochs=2,
            batch_size=4,
            progress=False,
            extra_objectives=[(model, guide, Trace_ELBO())],
            extra_batch=extra_batch,
        )
        extras.append(torch.cat(extra).tolist())
    pyro.set_rng_seed(1)
    order_seed = torch.randint(0, 2**62, (2,)).tolist()[0]
    stream = torch.Generator().manual_seed(order_seed)
    expected = torch.cat([torch.randperm(10, generator=stream) for _ in range(3)]).tolist()
    assert orders[0] == expected and orders[1] == expected
    assert extras[0] == extras[1] and len(extras[0]) == 2 * 3 * 3
