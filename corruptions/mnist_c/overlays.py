"""MNIST-C's overlays drawn on the digit: the dotted line and the zigzag."""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from robench.corruptions.base import register
from robench.corruptions.mnist_c.common import SIZE, MnistCCorruption, grey, numpy_rng, to_images


def _line(c0: np.ndarray, r0: np.ndarray, c1: np.ndarray, r1: np.ndarray) -> np.ndarray:
    """The original's soft line from (c0, r0) to (c1, r1), arrays of shape S -> S + (28, 28): brightness
    log(1 - d / 2.3) + 1 at distance d below the line's row (clipped), zero outside columns
    floor(c0) .. ceil(c1) - 1 and for vertical segments."""
    c0, r0, c1, r1 = (np.asarray(v, dtype=np.float64)[..., None, None] for v in (c0, r0, c1, r1))
    cc = np.arange(SIZE, dtype=np.float64)
    rr = cc[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = (r1 - r0) / (c1 - c0)
        dist = np.clip(np.abs(rr - (slope * (cc - c0) + r0)), 0, 2.3 - 1e-10)
    line = np.clip(np.log(1 - dist / 2.3) + 1, 0, 1)
    return np.where((cc < np.floor(c0)) | (cc >= np.ceil(c1)) | (c1 == c0), 0.0, line)


_DOTS = (np.arange(SIZE) // 2) % 2 == 1  # the dotted line keeps column pairs 2-3, 6-7, ...


@register
class DottedLine(MnistCCorruption):
    """A line from (0, r0) to (27, r1), r0, r1 uniform in 0..26, with alternate 2-column pieces blanked."""

    name = "dotted_line"

    def apply(self, images, generator):
        ends = numpy_rng(generator).integers(0, 27, (len(images), 2))
        line = _line(np.zeros(len(images)), ends[:, 0], np.full(len(images), 27), ends[:, 1]) * _DOTS
        return to_images(grey(images) + line, images)


@lru_cache(maxsize=None)
def _zigzags() -> np.ndarray:
    """All 27 x 10 zigzags of the original, (r0, r1 - r0 + 5) -> (28, 28): segments of length 2 and
    width 2 along the line from (2, r0) to (25, r1), summed."""
    out = np.zeros((27, 10, SIZE, SIZE))
    a = b = 2.0
    for r0 in range(27):
        for dr in range(-5, 5):
            theta = np.arctan(dr / 23)
            length = 23 / np.cos(theta)
            ends = [(0.0, 0.0)] + [((2 * i + 1) * a, (-1) ** i * b) for i in range(int((length - a) // (2 * a)) + 1)]
            last = (2 * a) * (length // (2 * a))
            if length != last:  # the original's end point, kept as written
                ends.append((length, ends[-1][1] / (2 * (length - last))))
            c, r = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]) @ np.array(ends).T
            c, r = c + 2, r + r0
            out[r0, dr + 5] = _line(c[:-1], r[:-1], c[1:], r[1:]).sum(0)
    return out


@register
class Zigzag(MnistCCorruption):
    """A zigzag from column 2 to 25, starting at row r0 uniform in 0..26 and ending at r0 + (-5..4)."""

    name = "zigzag"

    def apply(self, images, generator):
        n = len(images)
        rng = numpy_rng(generator)
        r0, dr = rng.integers(0, 27, n), rng.integers(0, 10, n)
        return to_images(grey(images) + _zigzags()[r0, dr], images)
