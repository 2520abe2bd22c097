"""MNIST-C's pixel-wise corruptions: brightness and stripe."""
from __future__ import annotations

import numpy as np

from robench.corruptions.base import register
from robench.corruptions.mnist_c.common import SIZE, Graded, MnistCCorruption, grey, to_images


@register
class Brightness(Graded):
    """+c on the HSV value channel, c = 0.1 .. 0.5 (for grey: add and clip, then the RGB->grey weights)."""

    name = "brightness"
    deterministic = True
    levels = (0.1, 0.2, 0.3, 0.4, 0.5)

    def __init__(self, *, severity: int = 5):
        super().__init__(severity)

    def apply(self, images, generator):
        v = np.clip(grey(images) + self.level, 0, 1)
        return to_images(v * 0.2125 + v * 0.7154 + v * 0.0721, images)


_STRIPES = (np.arange(SIZE) < 7) | (np.arange(SIZE) >= 21)


@register
class Stripe(MnistCCorruption):
    """Columns 0-6 and 21-27 inverted."""

    name = "stripe"
    deterministic = True

    def apply(self, images, generator):
        x = grey(images)
        x[..., _STRIPES] = 1 - x[..., _STRIPES]
        return to_images(x, images)
