"""Test-time noise corruptions: gaussian, shot, impulse, patch-gaussian on grey and RGB images."""
from __future__ import annotations

import pytest
import torch

from robench.corruptions.noise import gaussian_noise, impulse_noise, patch_gaussian_noise, shot_noise
from robench.errors import RobenchError
from robench.registry import CORRUPTIONS
from robench.threats import build_threat

NAMES = ["gaussian", "shot", "impulse", "patch-gaussian"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(4, 1, 28, 28), (4, 3, 32, 32)])
def test_grey_and_rgb_in_range_and_seeded(name, shape):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    corruption = CORRUPTIONS.create(name)
    a = corruption(x, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and a.dtype == x.dtype and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, corruption(x, torch.Generator().manual_seed(0)))
    assert not torch.equal(a, x)


def test_shot_noise_keeps_black_and_is_unbiased(generator):
    x = torch.full((64, 3, 16, 16), 0.3)
    x[:, :, :4] = 0
    y = shot_noise(x, generator, rate=12.0)
    assert (y[:, :, :4] == 0).all()
    assert abs(y[:, :, 4:].mean().item() - 0.3) < 0.01


def test_impulse_hits_the_given_fraction_per_channel(generator):
    x = torch.full((32, 3, 32, 32), 0.5)
    y = impulse_noise(x, generator, amount=0.2)
    hit = y != 0.5
    assert abs(hit.float().mean().item() - 0.2) < 0.01
    assert set(y[hit].unique().tolist()) == {0.0, 1.0}
    assert not (hit.all(1) == hit.any(1)).all()  # channels are hit independently


def test_patch_gaussian_changes_one_square_only(generator):
    x = torch.full((16, 3, 32, 32), 0.5)
    y = patch_gaussian_noise(x, generator, width=8, sigma=0.5)
    changed = (y != x).any(1)
    for mask in changed:
        rows, cols = mask.any(1).nonzero(), mask.any(0).nonzero()
        assert rows.max() - rows.min() < 8 and cols.max() - cols.min() < 8


def test_gaussian_noise_per_image_sigma(generator):
    x = torch.full((2, 1, 64, 64), 0.5)
    y = gaussian_noise(x, generator, torch.tensor([0.0, 0.1]))
    assert torch.equal(y[0], x[0]) and 0.08 < (y[1] - x[1]).std() < 0.12


def test_specs_and_bad_parameters():
    assert str(build_threat("gaussian:sigma=0.3").spec) == "gaussian:sigma=0.3"
    assert str(build_threat("patch-gaussian").spec) == "patch-gaussian:sigma=1.0,width=25"
    with pytest.raises(RobenchError, match="amount must lie in"):
        build_threat("impulse:amount=2")
    with pytest.raises(RobenchError, match="rate must be positive"):
        build_threat("shot:rate=0")
