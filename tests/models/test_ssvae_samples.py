"""M2 as a class-conditional VAE: samples per class share their z across classes."""

import torch

from pyrolvm.models import SSVAE


def test_samples_per_class_are_grouped_by_class_with_the_same_z_per_column():
    torch.manual_seed(0)
    model = SSVAE(6, num_classes=3, latent_dim=2, hidden=())
    linear = model.decoder[0]
    with torch.no_grad():  # the label's columns of the decoder set to zero: y has no effect
        linear.weight[:, 2:] = 0.0
    x = model.sample_per_class(4)
    assert x.shape == (12, 6) and ((x > 0) & (x < 1)).all()
    by_class = x.reshape(3, 4, 6)
    # equal up to rounding (a matrix product may block the rows differently)
    assert torch.allclose(by_class[0], by_class[1], rtol=1e-6, atol=0)
    assert torch.allclose(by_class[1], by_class[2], rtol=1e-6, atol=0)
    with torch.no_grad():  # now the label shifts the logits: classes differ, z columns too
        linear.weight[:, 2:] = torch.eye(3).repeat(2, 1)[:6] * 3.0
    torch.manual_seed(0)
    y = model.sample_per_class(4).reshape(3, 4, 6)
    assert not torch.equal(y[0], y[1]) and not torch.equal(y[0, 0], y[0, 1])
