"""CIFAR-10-C's noise: Gaussian, shot (Poisson) and impulse (salt and pepper), per pixel and channel."""
from __future__ import annotations

import torch

from robench.corruptions.base import register
from robench.corruptions.cifar10_c.common import PREFIX, CifarCCorruption, pixels, to_images
from robench.corruptions.noise import gaussian_noise, impulse_noise


@register
class GaussianNoise(CifarCCorruption):
    """x + N(0, c^2), c = 0.04, 0.06, 0.08, 0.09, 0.10."""

    name = PREFIX + "gaussian_noise"
    levels = (0.04, 0.06, 0.08, 0.09, 0.10)

    def corrupt(self, images, generator):
        return to_images(gaussian_noise(pixels(images).float(), generator, self.level), images)


@register
class ShotNoise(CifarCCorruption):
    """Poisson(x * c) / c, c = 500, 250, 100, 75, 50."""

    name = PREFIX + "shot_noise"
    levels = (500, 250, 100, 75, 50)

    def corrupt(self, images, generator):
        # not corruptions.noise.shot_noise, which draws only where x > 0: fast on MNIST, slow on most images
        return to_images(torch.poisson(pixels(images) * self.level, generator=generator) / self.level, images)


@register
class ImpulseNoise(CifarCCorruption):
    """Salt and pepper on a fraction c = 0.01, 0.02, 0.03, 0.05, 0.07 of the pixel values."""

    name = PREFIX + "impulse_noise"
    levels = (0.01, 0.02, 0.03, 0.05, 0.07)

    def corrupt(self, images, generator):
        return to_images(impulse_noise(pixels(images), generator, self.level), images)
