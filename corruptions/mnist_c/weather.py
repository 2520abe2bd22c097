"""MNIST-C's weather: fog (the plasma fractal, computed only where it matters) and mud spatter."""
from __future__ import annotations

import math
from functools import partial

import numpy as np
from scipy import ndimage

from robench.corruptions.base import register
from robench.corruptions.mnist_c.common import SIZE, Graded, grey, in_chunks, numpy_rng, to_images


PLASMA_SIZE = 256
_LAZY_LEVELS = 2  # the finest levels of the plasma map, computed only where they can matter


_MIX = tuple(np.uint64(v) for v in (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB))


def _hash_uniform(keys: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Uniform(-1, 1) noise that is a fixed function of (image key, map position): splitmix64 of
    key + position. Lets any part of a plasma map be computed on its own, consistently."""
    pos = (rows % PLASMA_SIZE * PLASMA_SIZE + cols % PLASMA_SIZE).astype(np.uint64)
    z = keys + pos * _MIX[0]
    z = (z ^ (z >> np.uint64(30))) * _MIX[1]
    z = (z ^ (z >> np.uint64(27))) * _MIX[2]
    z ^= z >> np.uint64(31)
    return (z >> np.uint64(11)) * 2.0 ** -52 - 1


def _refine(lattice: np.ndarray, keys: np.ndarray, top: np.ndarray, left: np.ndarray, step: int,
            amp: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One diamond-square level on patches. `lattice` (m, a, a) holds map values at rows top + step*i,
    cols left + step*j (top, left: (m,)); returns the (m, 2a-4, 2a-4) patch at spacing step/2 starting
    one step in, and its top, left. Square centres average their 4 corners, diamond points their 2
    corners and 2 centres (the original's wrap-around becomes the patch's border), each + amp * U(-1, 1)."""
    h = step // 2
    k = keys[:, None, None]
    i = np.arange(lattice.shape[1] - 1)
    ri = top[:, None, None] + step * i[None, :, None]
    ci = left[:, None, None] + step * i[None, None, :]
    p = lattice
    centre = (p[:, :-1, :-1] + p[:, 1:, :-1] + p[:, :-1, 1:] + p[:, 1:, 1:]) / 4 + amp * _hash_uniform(k, ri + h, ci + h)
    # points (r, c + h) and (r + h, c) for lattice r, c in 1 .. a-2
    row_pt = (centre[:, 1:, 1:] + centre[:, :-1, 1:] + p[:, 1:-1, 1:-1] + p[:, 1:-1, 2:]) / 4 \
        + amp * _hash_uniform(k, ri[:, 1:], ci[:, :, 1:] + h)
    col_pt = (centre[:, 1:, 1:] + centre[:, 1:, :-1] + p[:, 1:-1, 1:-1] + p[:, 2:, 1:-1]) / 4 \
        + amp * _hash_uniform(k, ri[:, 1:] + h, ci[:, :, 1:])
    m, b = len(p), p.shape[1] - 2
    out = np.stack([np.stack([p[:, 1:-1, 1:-1], row_pt], -1), np.stack([col_pt, centre[:, 1:, 1:]], -1)], 2)
    return out.reshape(m, 2 * b, 2 * b), top + step, left + step


def _window_even(op: np.ufunc, lattice: np.ndarray) -> np.ndarray:
    """`op` (np.maximum or np.minimum) over the 5x5 window (wrapped) around each even lattice point:
    (m, a, a) -> (m, a/2, a/2)."""
    a = lattice.shape[1]
    wrapped = np.pad(lattice, ((0, 0), (2, 2), (2, 2)), mode="wrap")
    rows = op.reduce([wrapped[:, k:k + a:2] for k in range(5)])
    return op.reduce([rows[:, :, k:k + a:2] for k in range(5)])


def plasma_corner(keys: np.ndarray, decay: float) -> np.ndarray:
    """The top-left 28x28 corner of the original's 256x256 plasma fractal (diamond-square on a torus,
    noise amplitude 100^2 shrinking by decay^2 per level, rescaled to [0, 1] by the whole map's min and
    max), one per uint64 key (N,) -> (N, 28, 28) float64, exactly in distribution.

    The coarse levels are computed everywhere; the `_LAZY_LEVELS` finest ones only in the corner and in
    the blocks whose bound says they could hold the map's min or max, which is all min and max need."""
    n = len(keys)
    amps = [(100.0 / decay ** level) ** 2 for level in range(int(math.log2(PLASMA_SIZE)))]
    lattice = np.zeros((n, 1, 1))
    step, origin = PLASMA_SIZE, np.zeros(n, dtype=np.int64)
    for amp in amps[:-_LAZY_LEVELS]:  # whole map, wrapped by one lattice point each side
        padded = np.pad(lattice, ((0, 0), (1, 1), (1, 1)), mode="wrap")
        lattice, _, _ = _refine(padded, keys, origin - step, origin - step, step, amp)
        step //= 2
    coarse, lazy = lattice, amps[-_LAZY_LEVELS:]
    side = coarse.shape[1]

    def detail(idx: np.ndarray, top: np.ndarray, left: np.ndarray, size: int) -> np.ndarray:
        """Fine map values of the size x size coarse windows at lattice (top, left) of images idx."""
        span = np.arange(size)
        win = coarse[idx[:, None, None], (top[:, None, None] + span[:, None]) % side,
                     (left[:, None, None] + span) % side]
        r, c, s = top * step, left * step, step
        for amp in lazy:
            win, r, c = _refine(win, keys[idx], r, c, s, amp)
            s //= 2
        return win

    cells = -(-SIZE // step) + 4  # coarse window from lattice point -2, refined: starts at map row/col -2
    corner = detail(np.arange(n), np.full(n, -2), np.full(n, -2), cells)[:, 2:2 + SIZE, 2:2 + SIZE]

    # the block of fine points refined from the 5x5 coarse window around lattice point (i, j) spans
    # [i - 1/2, i + 3/2) x [j - 1/2, j + 3/2), so the blocks at even (i, j) tile the map; a block's values
    # stay within its window's range widened by 1.5 * amp per level. The blocks at the coarse max and min
    # first raise the bounds that the other blocks must beat.
    margin = 1.5 * sum(lazy)
    flat = coarse.reshape(n, -1)
    every = np.arange(n)
    peaks = np.concatenate([flat.argmax(1), flat.argmin(1)])
    fine = detail(np.tile(every, 2), peaks // side - 2, peaks % side - 2, 5).reshape(2, n, -1)
    hi, lo = fine[0].max(1), fine[1].min(1)
    near = (_window_even(np.maximum, coarse) + margin > hi[:, None, None]) \
        | (_window_even(np.minimum, coarse) - margin < lo[:, None, None])
    idx, bi, bj = np.nonzero(near)
    bi, bj = 2 * bi, 2 * bj
    fine = detail(idx, bi - 2, bj - 2, 5).reshape(len(idx), -1)
    np.maximum.at(hi, idx, fine.max(1))
    np.minimum.at(lo, idx, fine.min(1))
    return (corner - lo[:, None, None]) / (hi - lo)[:, None, None]


@register
class Fog(Graded):
    """x + c * plasma fractal (decay d), rescaled by max(x) / (max(x) + c); (c, d) per severity."""

    name = "fog"
    levels = ((1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4))

    def __init__(self, *, severity: int = 5):
        super().__init__(severity)

    def apply(self, images, generator):
        strength, decay = self.level
        keys = numpy_rng(generator).integers(0, 2 ** 64, len(images), dtype=np.uint64)
        plasma = in_chunks(partial(plasma_corner, decay=decay), keys)
        x = grey(images)
        top = x.max((1, 2), keepdims=True)
        out = (x + strength * plasma) * top / (top + strength)
        return to_images(out, images)


@register
class Spatter(Graded):
    """Mud spatter: blurred Gaussian liquid thresholded, its mask blurred and cut at 0.8, painted in grey
    63/255 over the digit. Settings (mean, std, blur, threshold, mask blur, -) as the original."""

    name = "spatter"
    levels = ((0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0), (0.65, 0.3, 2, 0.68, 0.5, 0),
              (0.65, 0.3, 1, 0.65, 1.5, 1), (0.67, 0.4, 1, 0.65, 1.5, 1))

    def __init__(self, *, severity: int = 4):
        super().__init__(severity)

    def apply(self, images, generator):
        loc, scale, blur, cut, mask_blur, _ = self.level
        liquid = numpy_rng(generator).normal(loc, scale, (len(images), SIZE, SIZE))
        liquid = ndimage.gaussian_filter(liquid, (0, blur, blur), mode="nearest", truncate=4.0)
        mask = ndimage.gaussian_filter((liquid > cut).astype(np.float32), (0, mask_blur, mask_blur),
                                       mode="nearest", truncate=4.0)
        mask[mask < 0.8] = 0
        x = grey(images).astype(np.float32)
        return to_images(x * (1 - mask) + np.float32(63 / 255) * mask, images)
