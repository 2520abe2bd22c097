"""Training-time defenses: Gaussian and Patch Gaussian augmentation, PGD adversarial training."""
from __future__ import annotations

import pytest
import torch
from scipy import stats
from torch import nn

from robench.data import DataSplit, dataset_info
from robench.defenses.adversarial import PGDAdversarialTraining
from robench.defenses.noise import GaussianAugmentation, PatchGaussianAugmentation
from robench.errors import RobenchError
from robench.registry import DEFENSES
from robench.training import Recipe, train


def grey(n: int, size: int = 12) -> torch.Tensor:
    return torch.full((n, 1, size, size), 0.5)


def linear_model(size: int = 12) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(size * size, 10))


def pixels(images: torch.Tensor) -> torch.Tensor:
    """One pixel (the top-left one) per image: independent draws across images."""
    return images[:, 0, 0, 0]


def spread(images: torch.Tensor) -> torch.Tensor:
    """Mean absolute deviation from grey per image: grows with the image's sigma."""
    return (images - 0.5).abs().mean((1, 2, 3))


def test_registered_names():
    assert {"gaussian", "patch-gaussian", "pgd-at"} <= set(DEFENSES.names())
    assert isinstance(DEFENSES.create("patch-gaussian", width=None, max_width=28), PatchGaussianAugmentation)


def test_gaussian_adds_noise_of_the_given_sigma(generator):
    x, y = grey(4000), torch.zeros(4000, dtype=torch.long)
    noisy, same_y = GaussianAugmentation(sigma=0.1).transform(None, x, y, generator)
    assert same_y is y
    residual = (noisy - x).flatten()
    assert residual.mean().abs() < 0.002 and residual.std() == pytest.approx(0.1, rel=0.01)


def test_patch_gaussian_covering_the_image_is_gaussian_augmentation_in_distribution(generator):
    """A patch at least twice the image covers it from any centre: Patch Gaussian is then Gaussian
    augmentation with sigma ~ U(0, sigma_max); a smaller patch is not (the test has power)."""
    n, size, y = 20_000, 12, torch.zeros(20_000, dtype=torch.long)
    gauss = GaussianAugmentation(sigma=0.4, uniform=True).transform(None, grey(n, size), y, generator)[0]
    cover = PatchGaussianAugmentation(width=2 * size, sigma_max=0.4).transform(None, grey(n, size), y, generator)[0]
    random_cover = PatchGaussianAugmentation(width=None, max_width=2 * size, sigma_max=0.4)
    small = PatchGaussianAugmentation(width=size // 2, sigma_max=0.4).transform(None, grey(n, size), y, generator)[0]
    assert (cover != 0.5).all()  # every pixel of every image got noise
    assert stats.ks_2samp(pixels(gauss).numpy(), pixels(cover).numpy()).pvalue > 1e-3
    assert stats.ks_2samp(spread(gauss).numpy(), spread(cover).numpy()).pvalue > 1e-3
    assert stats.ks_2samp(pixels(gauss).numpy(), pixels(small).numpy()).pvalue < 1e-6
    widths = random_cover.transform(None, grey(n, size), y, generator)[0]
    assert stats.ks_2samp(pixels(gauss).numpy(), pixels(widths).numpy()).pvalue < 1e-6  # widths < 2*size too


def test_patch_gaussian_with_zero_sigma_is_the_identity(generator):
    x, y = torch.rand(64, 3, 10, 10, generator=generator), torch.zeros(64, dtype=torch.long)
    for defense in (PatchGaussianAugmentation(width=5, sigma_max=0.0),
                    PatchGaussianAugmentation(width=None, max_width=10, sigma_max=0.0)):
        assert torch.equal(defense.transform(None, x, y, generator)[0], x)


def test_patch_gaussian_noise_stays_inside_the_patch(generator):
    x, y = grey(500), torch.zeros(500, dtype=torch.long)
    noisy = PatchGaussianAugmentation(width=5, sigma_max=1.0).transform(None, x, y, generator)[0]
    changed = (noisy != x).flatten(1).sum(1)
    assert changed.max() <= 25 and changed.float().mean() > 5


def test_patch_gaussian_rejects_ambiguous_width():
    with pytest.raises(RobenchError, match="exactly one"):
        PatchGaussianAugmentation(width=5, max_width=10)


@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.5, 1.0])
def test_pgd_at_replaces_exactly_the_mixing_ratio(ratio, generator):
    x, y = torch.rand(40, 1, 12, 12, generator=generator), torch.randint(0, 10, (40,), generator=generator)
    defense = PGDAdversarialTraining(eps=0.1, steps=3, ratio=ratio)
    model = linear_model().train()
    out, out_y = defense.transform(model, x, y, generator)
    changed = (out != x).flatten(1).any(1)
    assert int(changed.sum()) == round(ratio * 40) and torch.equal(out_y, y)
    assert (out - x).abs().max() <= 0.1 + 1e-6 and out.min() >= 0 and out.max() <= 1
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_pgd_at_examples_raise_the_loss(generator):
    x, y = torch.rand(64, 1, 12, 12, generator=generator), torch.randint(0, 10, (64,), generator=generator)
    model = linear_model()
    adv = PGDAdversarialTraining(eps=0.1, steps=5).transform(model, x, y, generator)[0]
    loss = nn.functional.cross_entropy
    assert loss(model(adv), y) > loss(model(x), y) + 0.1


def test_pgd_at_eps_warm_up():
    defense = PGDAdversarialTraining(eps=0.3, warmup=2)
    seen = []
    for epoch in range(5):
        defense.on_epoch(epoch, 5, 10)
        seen.append(defense.current_eps)
    assert seen == pytest.approx([0.1, 0.2, 0.3, 0.3, 0.3])
    no_ramp = PGDAdversarialTraining(eps=0.3)
    no_ramp.on_epoch(0, 5, 10)
    assert no_ramp.current_eps == 0.3


@pytest.mark.parametrize("name,params", [("gaussian", {"sigma": 0.25}),
                                         ("patch-gaussian", {"width": 6, "sigma_max": 1.0}),
                                         ("pgd-at", {"eps": 0.1, "steps": 2, "ratio": 0.5, "warmup": 1})])
def test_the_training_loop_runs_each_defense(name, params):
    g = torch.Generator().manual_seed(0)
    data = DataSplit(dataset_info("mnist"), "train", torch.randint(0, 256, (64, 1, 28, 28), generator=g,
                     dtype=torch.uint8), torch.randint(0, 10, (64,), generator=g))
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    summary = train(model, data, Recipe(name, params, epochs=2, batch_size=32), progress=False)
    assert summary["train_loss"] > 0 and not model.training
