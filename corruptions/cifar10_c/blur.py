"""CIFAR-10-C's blurs: defocus (an anti-aliased disk), glass (blur, local pixel swaps, blur), motion
(ImageMagick's, at a random angle) and zoom (the mean of centred zooms)."""
from __future__ import annotations

from functools import lru_cache, partial

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from robench.corruptions.base import register
from robench.corruptions.cifar10_c.common import (PREFIX, SIZE, CifarCCorruption, clipped_zoom, motion_blur,
                                                  pixels, to_images, uniform)
from robench.corruptions.mnist_c.blur import swap, swap_waves
from robench.corruptions.mnist_c.common import in_chunks, numpy_rng


def _gaussian_taps(size: int, sigma: float) -> np.ndarray:
    """OpenCV's ``getGaussianKernel(size, sigma)``."""
    i = np.arange(size) - (size - 1) / 2
    g = np.exp(-(i * i) / (2 * sigma * sigma))
    return g / g.sum()


@lru_cache(maxsize=None)
def disk(radius: float, alias_blur: float) -> np.ndarray:
    """The original's defocus kernel: the normalised disk x^2 + y^2 <= radius^2 on the grid -8..8 (or
    -radius..radius when larger) smoothed by OpenCV's 3x3 (5x5 when larger) Gaussian of sigma
    `alias_blur`, reflected at its border; float32, cut to its non-zero support."""
    grid = np.arange(-8, 9) if radius <= 8 else np.arange(-radius, radius + 1)
    size = 3 if radius <= 8 else 5
    xx, yy = np.meshgrid(grid, grid)
    kernel = (xx ** 2 + yy ** 2 <= radius ** 2).astype(np.float32)
    kernel /= kernel.sum()
    taps = _gaussian_taps(size, alias_blur).astype(np.float32)
    half = size // 2
    for axis in (0, 1):
        padded = np.pad(kernel, [(half, half) if a == axis else (0, 0) for a in (0, 1)], mode="reflect")
        kernel = sum(t * np.take(padded, np.arange(k, k + len(grid)), axis=axis) for k, t in enumerate(taps))
    reach = int(np.abs(np.argwhere(kernel != 0) - len(grid) // 2).max())
    centre = len(grid) // 2
    return kernel[centre - reach:centre + reach + 1, centre - reach:centre + reach + 1]


def filter2d(x: torch.Tensor, kernel: np.ndarray) -> torch.Tensor:
    """OpenCV's ``filter2D`` of each channel of (N, C, H, W) with an odd square kernel, border reflected
    about the edge pixels (BORDER_REFLECT_101): a weighted sum of shifted copies (float64 convolution is
    slow in torch)."""
    size = len(kernel)
    h, w = x.shape[2:]
    padded = F.pad(x, (size // 2,) * 4, mode="reflect")
    out = torch.zeros_like(x)
    for (i, j), weight in np.ndenumerate(kernel):
        if weight:
            out += float(weight) * padded[..., i:i + h, j:j + w]
    return out


@register
class DefocusBlur(CifarCCorruption):
    """Each channel filtered with `disk` (radius, alias blur) = (0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2),
    (1.5, 0.1)."""

    name = PREFIX + "defocus_blur"
    deterministic = True
    levels = ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1))

    def corrupt(self, images, generator):
        return to_images(filter2d(pixels(images), disk(*self.level)), images)


def _gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
    """scikit-image's ``gaussian(x, sigma, multichannel=True)`` of (N, H, W, C): mode 'nearest', truncate 4."""
    return ndimage.gaussian_filter(x, (0, sigma, sigma, 0), mode="nearest", truncate=4.0)


@register
class GlassBlur(CifarCCorruption):
    """Blur, local pixel moves, blur again; (sigma, delta, iterations) = (0.05, 1, 1), (0.25, 1, 1),
    (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2).

    The blur (sigma) is truncated to 8 bits; then `iterations` passes of the original's sequential loop run
    exactly, in wavefronts as MNIST-C's: each visited pixel takes the value of the one displaced by (dy, dx)
    uniform in [-delta, delta)^2 (the original's swap of two RGB pixels, numpy views, copies)."""

    name = PREFIX + "glass_blur"
    levels = ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2))

    def corrupt(self, images, generator):
        sigma, delta, iterations = self.level
        n, c, h, w = images.shape
        x = pixels(images).permute(0, 2, 3, 1).cpu().numpy()
        blurred = np.floor(_gaussian(x, sigma) * 255).astype(np.uint8)  # np.uint8() truncates
        side = 2 * delta
        waves = swap_waves(delta, SIZE)
        visits = sum(len(wave) for wave in waves)
        draws = numpy_rng(generator).integers(0, side * side, (n, iterations, visits), dtype=np.int16)
        offsets = (draws // side - delta) * SIZE + (draws % side - delta)  # (dy, dx) -> flat offset
        swapped = in_chunks(partial(swap, waves, copy=True), blurred.reshape(n, h * w, c), offsets, threaded=False)
        return to_images(torch.from_numpy(_gaussian(swapped.reshape(n, h, w, c) / 255.0, sigma)).permute(0, 3, 1, 2),
                         images)


@register
class MotionBlur(CifarCCorruption):
    """ImageMagick's motion blur (radius, sigma) = (6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5) at an angle
    uniform in [-45, 45] degrees per image."""

    name = PREFIX + "motion_blur"
    levels = ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5))

    def corrupt(self, images, generator):
        angles = uniform(generator, -45, 45, (len(images),))
        return to_images(motion_blur(pixels(images), *self.level, angles), images)


@register
class ZoomBlur(CifarCCorruption):
    """The mean of the image and its `clipped_zoom`s by 1, 1 + step, ... below `stop`; (stop, step) =
    (1.06, 0.01), (1.11, 0.01), (1.16, 0.01), (1.21, 0.01), (1.26, 0.01)."""

    name = PREFIX + "zoom_blur"
    deterministic = True
    levels = ((1.06, 0.01), (1.11, 0.01), (1.16, 0.01), (1.21, 0.01), (1.26, 0.01))

    def corrupt(self, images, generator):
        stop, step = self.level
        x = pixels(images).float()  # as the original
        factors = np.arange(1, stop, step)
        total = x.clone()
        for factor in factors:
            total += clipped_zoom(x, float(factor))
        return to_images(total / (len(factors) + 1), images)
