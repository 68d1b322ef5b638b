import math

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
    history = train(model, guide, ds.train, make_elbo(elbo, 3), make_optim(3e-3), epochs=15,
                    batch_size=100, transform=ds.train_transform, progress=False)
    after = _test_elbo(model, guide, ds.test)
    # Untrained: about -28 nats (decoder at the mean image, KL ~ 0); 15 epochs reach about -25.
    # The standard error of each estimate is ~0.2 nats (360 test images), so 2 nats is clear.
    assert after > before + 2.0
    assert len(history["train_elbo"]) == 15 and history["train_elbo"][-1] > history["train_elbo"][0]


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
        train(model, guide, ds.train, NaNAfter(), epochs=3, batch_size=100,
              callback=lambda epoch, h: seen.append(epoch) or {"extra": epoch}, progress=False)
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
    train(model, lambda x, y: guide_net(x), (x, x[:, 0].clone()), epochs=2, batch_size=7,
          progress=False)
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
    assert seen == [True] + [False] * 5
    seen.clear()
    train(model, guide, x, epochs=1, batch_size=10, progress=False, check_every_step=True)
    assert seen == [True] * 3
    assert is_validation_enabled()
