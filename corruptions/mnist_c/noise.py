"""MNIST-C's noise: shot (Poisson) and impulse (salt and pepper)."""
from __future__ import annotations

import torch

from robench.corruptions.base import register
from robench.corruptions.mnist_c.common import Graded, grey, to_images
from robench.corruptions.noise import impulse_noise, shot_noise


@register
class ShotNoise(Graded):
    """Poisson(x * c) / c with c = 60, 25, 12, 5, 3."""

    name = "shot_noise"
    levels = (60, 25, 12, 5, 3)

    def __init__(self, *, severity: int = 5):
        super().__init__(severity)

    def apply(self, images, generator):
        return to_images(shot_noise(torch.from_numpy(grey(images)), generator, self.level), images)


@register
class ImpulseNoise(Graded):
    """Salt and pepper on a fraction 0.03, 0.06, 0.09, 0.17, 0.27 of the pixels."""

    name = "impulse_noise"
    levels = (0.03, 0.06, 0.09, 0.17, 0.27)

    def __init__(self, *, severity: int = 4):
        super().__init__(severity)

    def apply(self, images, generator):
        return to_images(impulse_noise(torch.from_numpy(grey(images)), generator, self.level), images)
