"""MNIST-C's affine maps about the image centre: shear, rotate, scale, translate (skimage's bilinear warp)."""
from __future__ import annotations

from functools import lru_cache, partial

import numpy as np
import torch

from robench.corruptions.base import register
from robench.corruptions.mnist_c.common import CENTRE, SIZE, Graded, grey, in_chunks, numpy_rng, to_images


@lru_cache(maxsize=64)
def _bilinear_taps(matrix: tuple[float, ...]) -> tuple[np.ndarray, ...]:
    """Where each output pixel of the inverse map `matrix` (2x3, flat) reads the zero-bordered flat input
    (the four corners) and with which fractions (dr, dc), as skimage's bilinear warp with zeros outside."""
    m = np.array(matrix).reshape(2, 3)
    rows, cols = (v.ravel().astype(np.float64) for v in np.mgrid[:SIZE, :SIZE])
    c = m[0, 0] * cols + m[0, 1] * rows + m[0, 2]
    r = m[1, 0] * cols + m[1, 1] * rows + m[1, 2]
    r0, c0 = np.floor(r), np.floor(c)
    dr, dc = r - r0, c - c0
    # skimage reads the far corner at ceil(), i.e. floor() + 1 except on grid points where its weight is 0
    r1, c1 = r0 + (dr > 0), c0 + (dc > 0)

    def index(rr: np.ndarray, cc: np.ndarray) -> np.ndarray:
        outside = (rr < 0) | (rr >= SIZE) | (cc < 0) | (cc >= SIZE)
        return np.where(outside, 0, (rr + 1) * (SIZE + 2) + cc + 1).astype(np.int64)

    return index(r0, c0), index(r0, c1), index(r1, c0), index(r1, c1), dr, dc


def _bilinear(taps: tuple[np.ndarray, ...], bordered: np.ndarray) -> np.ndarray:
    i00, i01, i10, i11, dr, dc = taps
    top = (1 - dc) * bordered[:, i00] + dc * bordered[:, i01]
    bottom = (1 - dc) * bordered[:, i10] + dc * bordered[:, i11]
    return (1 - dr) * top + dr * bottom


def _warp(images: torch.Tensor, matrices: np.ndarray) -> np.ndarray:
    """skimage ``warp(x, inverse_map=M)`` with bilinear interpolation and zeros outside: output pixel
    (row, col) reads the input at (col', row') = M @ (col, row, 1). `matrices` (N, 2, 3) float64; the
    images that share a map are warped together."""
    n = len(images)
    bordered = np.pad(grey(images), ((0, 0), (1, 1), (1, 1))).reshape(n, -1)  # zeros stand for outside
    maps, which = np.unique(matrices.reshape(n, 6), axis=0, return_inverse=True)
    out = np.empty((n, SIZE * SIZE))
    for m, matrix in enumerate(maps):
        chosen = np.flatnonzero(which.ravel() == m)
        out[chosen] = in_chunks(partial(_bilinear, _bilinear_taps(tuple(matrix))), bordered[chosen])
    return out.reshape(n, SIZE, SIZE)


def _centred(linear: np.ndarray) -> np.ndarray:
    """(N, 2, 2) linear parts -> (N, 2, 3) affine maps that keep (13.5, 13.5) fixed."""
    return np.concatenate([linear, CENTRE * (1 - linear.sum(2, keepdims=True))], 2)


def _signs(generator: torch.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return numpy_rng(generator).integers(0, 2, shape) * 2.0 - 1


class _SignedAffine(Graded):
    """An affine map about the centre whose direction has a random sign per image."""

    def matrices(self, signs: np.ndarray) -> np.ndarray:
        """(N, 2, 3) inverse maps for per-image signs (N,) of +-1."""
        raise NotImplementedError

    def apply(self, images, generator):
        return to_images(_warp(images, self.matrices(_signs(generator, (len(images),)))), images)


@register
class Shear(_SignedAffine):
    """skimage 0.18's AffineTransform(shear=+-c) about the centre, c = 0.2 .. 1.0, random sign."""

    name = "shear"
    levels = (0.2, 0.4, 0.6, 0.8, 1.0)

    def __init__(self, *, severity: int = 2):
        super().__init__(severity)

    def matrices(self, signs):
        s = signs * self.level
        one, zero = np.ones_like(s), np.zeros_like(s)
        return _centred(np.stack([np.stack([one, -np.sin(s)], 1), np.stack([zero, np.cos(s)], 1)], 1))


@register
class Rotate(_SignedAffine):
    """Rotation by +-c radians about the centre, c = 0.2 .. 1.0, random sign."""

    name = "rotate"
    levels = (0.2, 0.4, 0.6, 0.8, 1.0)

    def __init__(self, *, severity: int = 2):
        super().__init__(severity)

    def matrices(self, signs):
        a = signs * self.level
        cos, sin = np.cos(a), np.sin(a)
        return _centred(np.stack([np.stack([cos, -sin], 1), np.stack([sin, cos], 1)], 1))


@register
class Scale(Graded):
    """The digit shrunk about the centre to 90, 80, 70, 60, 50 %."""

    name = "scale"
    deterministic = True
    levels = (0.9, 0.8, 0.7, 0.6, 0.5)

    def __init__(self, *, severity: int = 3):
        super().__init__(severity)

    def apply(self, images, generator):
        linear = np.broadcast_to(np.eye(2) * (1 / self.level), (len(images), 2, 2))
        return to_images(_warp(images, _centred(linear)), images)


@register
class Translate(Graded):
    """Shift by c = 1 .. 5 pixels in x and in y with independent random signs."""

    name = "translate"
    levels = (1, 2, 3, 4, 5)

    def __init__(self, *, severity: int = 3):
        super().__init__(severity)

    def matrices(self, signs: np.ndarray) -> np.ndarray:
        """(N, 2, 3) inverse maps for per-image (x, y) signs (N, 2) of +-1."""
        eye = np.broadcast_to(np.eye(2), (len(signs), 2, 2))
        return np.concatenate([eye, (signs * self.level)[:, :, None]], 2)

    def apply(self, images, generator):
        return to_images(_warp(images, self.matrices(_signs(generator, (len(images), 2)))), images)
