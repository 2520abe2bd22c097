"""MNIST-C's Canny edges (scikit-image 0.18's algorithm, batched)."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from robench.corruptions.base import register
from robench.corruptions.mnist_c.common import SIZE, MnistCCorruption, grey, in_chunks, to_images


def _sobel(x: np.ndarray, axis: int) -> np.ndarray:
    """scipy's Sobel along `axis` of a (N, 28, 28) batch, smoothing along the other image axis only."""
    d = ndimage.correlate1d(x, [-1, 0, 1], axis=axis, mode="reflect")
    return ndimage.correlate1d(d, [1, 2, 1], axis=3 - axis, mode="reflect")


_EDGE_WEIGHT = ndimage.gaussian_filter(np.ones((SIZE, SIZE)), 1.0, mode="constant", truncate=4.0) + np.finfo(float).eps


def canny(x: np.ndarray, low: float = 0.1, high: float = 0.2) -> np.ndarray:
    """scikit-image 0.18's Canny edges (sigma 1, thresholds 0.1 and 0.2) of a (N, 28, 28) float batch in
    [0, 1] -> bool (N, 28, 28): normalised Gaussian smoothing, Sobel gradients, non-maximum suppression
    along the gradient with interpolation (in four direction bins, the last one a pixel falls in wins),
    hysteresis over 8-connected edge pieces."""
    smooth = ndimage.gaussian_filter(x, (0, 1.0, 1.0), mode="constant", truncate=4.0) / _EDGE_WEIGHT
    gi, gj = _sobel(smooth, 1), _sobel(smooth, 2)
    ai, aj = np.abs(gi), np.abs(gj)
    mag = np.hypot(gi, gj)
    inner = np.zeros_like(mag, dtype=bool)
    inner[:, 1:-1, 1:-1] = True
    inner &= mag > 0

    def at(dr: int, dc: int) -> np.ndarray:  # mag[r + dr, c + dc]
        return np.roll(mag, (-dr, -dc), axis=(1, 2))

    same = ((gi >= 0) & (gj >= 0)) | ((gi <= 0) & (gj <= 0))
    opposite = ((gi <= 0) & (gj >= 0)) | ((gi >= 0) & (gj <= 0))
    # (bin, weight, neighbours on one side (straight, diagonal), on the other side)
    steep = np.divide(aj, ai, out=np.zeros_like(ai), where=ai > 0)
    flat = np.divide(ai, aj, out=np.zeros_like(aj), where=aj > 0)
    bins = ((same & (ai >= aj), steep, (1, 0), (1, 1), (-1, 0), (-1, -1)),
            (same & (ai <= aj), flat, (0, 1), (1, 1), (0, -1), (-1, -1)),
            (opposite & (ai <= aj), flat, (0, 1), (-1, 1), (0, -1), (1, -1)),
            (opposite & (ai >= aj), steep, (-1, 0), (-1, 1), (1, 0), (1, -1)))
    peak = np.zeros_like(inner)
    for pts, w, s1, d1, s2, d2 in bins:
        pts = pts & inner
        ok = (at(*d1) * w + at(*s1) * (1 - w) <= mag) & (at(*d2) * w + at(*s2) * (1 - w) <= mag)
        peak[pts] = ok[pts]
    weak = peak & (mag >= low)
    strel = np.zeros((3, 3, 3), dtype=bool)
    strel[1] = True
    labels, count = ndimage.label(weak, strel)
    good = np.zeros(count + 1, dtype=bool)
    good[labels[peak & (mag >= high)]] = True
    good[0] = False
    return good[labels]


@register
class CannyEdges(MnistCCorruption):
    """The Canny edge map of the digit (white edges on black)."""

    name = "canny_edges"
    deterministic = True

    def apply(self, images, generator):
        return to_images(in_chunks(canny, grey(images)).astype(np.float64), images)
