"""MNIST-C's blurs: glass blur (its sequential swap loop run exactly, in wavefronts) and motion blur."""
from __future__ import annotations

import math
from functools import lru_cache, partial

import numpy as np
import torch
from scipy import ndimage

from robench.corruptions.base import register
from robench.corruptions.mnist_c.common import SIZE, Graded, grey, in_chunks, numpy_rng, to_images


def _row_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """The original's skimage ``gaussian(x, sigma, multichannel=True)`` on a 2-D image, which takes the
    columns for channels and so blurs along axis 0 (down the rows) only; mode 'nearest', truncate 4."""
    return ndimage.gaussian_filter1d(x, sigma, axis=1, mode="nearest", truncate=4.0)


@lru_cache(maxsize=None)
def swap_waves(delta: int, size: int = SIZE) -> tuple[np.ndarray, ...]:
    """Flat pixel indices of the glass-blur swap loop, grouped into waves that can run at once.

    The original visits (h, w) for h, w = size-delta .. delta+1 in row-major order from the bottom right,
    swapping each pixel with one in the 2*delta square above-left of (h+delta-1, w+delta-1). Two visits
    touch common pixels only if |dh|, |dw| < 2*delta, so with t = 2*delta*(H - h) + (H - w) every wave of
    equal t touches disjoint pixels and any two visits that interact run in the original order."""
    top = size - delta
    cells = [(h, w) for h in range(top, delta, -1) for w in range(top, delta, -1)]
    waves: dict[int, list[int]] = {}
    for h, w in cells:
        waves.setdefault(2 * delta * (top - h) + (top - w), []).append(h * size + w)
    return tuple(np.array(waves[t]) for t in sorted(waves))


def swap(waves: tuple[np.ndarray, ...], images: np.ndarray, offsets: np.ndarray, copy: bool = False) -> np.ndarray:
    """The glass-blur swap loop on flat images (m, H*W) or (m, H*W, C): visit v of iteration i of image j swaps the
    pixel with the one `offsets[j, i, v]` away (0: no swap), wave by wave. With `copy` the pixel takes its
    partner's value and the partner keeps it, as the original's tuple swap does on numpy RGB pixels (views)."""
    x = images.copy()
    rows = np.arange(len(x))[None, :]
    for step in offsets.transpose(1, 2, 0):  # (visits, m) per iteration
        start = 0
        for wave in waves:
            k = len(wave)
            partner = wave[:, None] + step[start:start + k]  # (k, m)
            start += k
            mine = x[rows, wave[:, None]]
            x[rows, wave[:, None]] = x[rows, partner]
            if not copy:
                x[rows, partner] = mine
    return x


@register
class GlassBlur(Graded):
    """Blur (rows only, as the original), then local pixel swaps, then blur again. Each visited pixel
    swaps, with probability 1/2, with the pixel displaced by (dy, dx) uniform in [-delta, delta)^2
    (settings (sigma, delta, iterations)). The sequential swap loop runs exactly, in wavefronts."""

    name = "glass_blur"
    levels = ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2))

    def __init__(self, *, severity: int = 1):
        super().__init__(severity)

    def apply(self, images, generator):
        sigma, delta, iterations = self.level
        n = len(images)
        blurred = np.floor(_row_blur(grey(images), sigma) * 255).astype(np.uint8)  # np.uint8() truncates
        side = 2 * delta
        waves = swap_waves(delta)
        visits = sum(len(w) for w in waves)
        # one draw per visit: below side^2 -> swap with offset (r // side, r % side) - delta, else keep
        draws = numpy_rng(generator).integers(0, 2 * side * side, (iterations, visits, n), dtype=np.int16)
        offsets = np.where(draws < side * side, (draws // side - delta) * SIZE + (draws % side - delta), 0)
        swapped = in_chunks(partial(swap, waves), blurred.reshape(n, SIZE * SIZE), offsets.transpose(2, 0, 1),
                             threaded=False)
        again = _row_blur(swapped.reshape(n, SIZE, SIZE) / 255.0, sigma)
        return to_images(again, images)


def motion_kernel(radius: float, sigma: float) -> np.ndarray:
    """ImageMagick's one-sided motion-blur kernel: exp(-i^2 / 2 sigma^2), i = 0 .. 2*ceil(radius), normalised."""
    i = np.arange(2 * math.ceil(radius) + 1, dtype=np.float64)
    k = np.exp(-(i * i) / (2 * sigma * sigma)) / (math.sqrt(2 * math.pi) * sigma)
    return k / k.sum()


@register
class MotionBlur(Graded):
    """ImageMagick's motion blur (radius, sigma) at a random angle in [-45, 45] degrees: each pixel is
    the kernel-weighted sum of the pixels at round(i * (cos a, sin a)), edges repeated, truncated to 8 bits."""

    name = "motion_blur"
    levels = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))

    def __init__(self, *, severity: int = 1):
        super().__init__(severity)

    def apply(self, images, generator):
        return to_images(self.blur(images, numpy_rng(generator).uniform(-45, 45, len(images))), images)

    def blur(self, images: torch.Tensor, angles: np.ndarray) -> np.ndarray:
        """The blurred images (N, 28, 28) on the 8-bit grid for angles (N,) in degrees."""
        return in_chunks(partial(self._blur, motion_kernel(*self.level)), np.round(grey(images) * 255), angles)

    @staticmethod
    def _blur(kernel: np.ndarray, grey: np.ndarray, angles: np.ndarray) -> np.ndarray:
        width = len(kernel)
        rad = np.deg2rad(angles)[:, None]
        steps = np.arange(width)
        dx = np.ceil(steps * np.cos(rad) - 0.5).astype(np.int64)  # (n, width), >= 0 for |angle| <= 45
        dy = np.ceil(steps * np.sin(rad) - 0.5).astype(np.int64)
        pad = int(max(np.abs(dy).max(), dx.max()))
        padded = np.pad(grey, ((0, 0), (pad, pad), (0, pad)), mode="edge")
        # images whose angles round to the same pixel offsets are blurred together, by shifted slices
        offsets, which = np.unique(np.stack([dy + pad, dx], 2), axis=0, return_inverse=True)
        which = which.ravel()
        out = np.empty(grey.shape)
        for pattern, taps in enumerate(offsets):
            chosen = np.flatnonzero(which == pattern)
            group = padded[chosen]
            total = np.zeros((len(chosen), SIZE, SIZE))
            for weight, (r, c) in zip(kernel, taps):
                total += weight * group[:, r:r + SIZE, c:c + SIZE]
            out[chosen] = total
        # the reference's 8-bit output truncates the weighted sum (fitted to its outputs: floor matches
        # up to sums within 1e-3 below an integer, which ImageMagick's higher-precision sum rounds up)
        return np.floor(out + 1e-3) / 255
