"""The 15 corruptions of MNIST-C (Mu & Gilmer 2019), batched and seeded, and the `mnist-c` suite threat.

Each works on 28x28 grey images (N, 1, 28, 28) in [0, 1] and reproduces the original implementation
(github.com/google-research/mnist-c): the same operations, the same library conventions (including its
quirks: glass blur blurs along rows only, the zigzag's last segment formula), and outputs on the 8-bit
grid like the published uint8 files (``round(255 * x)`` as the reference does). Randomness comes only
from the torch generator, so the pixels differ from the reference's but the distribution is the same.
`severity` (1-5) picks the original's setting; the defaults are those of the published dataset.
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache, partial
from typing import Any, ClassVar, Sequence

import numpy as np
import torch
from scipy import ndimage

from robench.corruptions.base import Corruption, CorruptionThreat, register
from robench.corruptions.noise import impulse_noise, shot_noise
from robench.errors import RobenchError, unknown_name
from robench.registry import CORRUPTIONS

SIZE = 28
CENTRE = 13.5  # the affine maps keep the image centre fixed


def _grey(images: torch.Tensor) -> np.ndarray:
    """(N, 1, 28, 28) float in [0, 1] -> (N, 28, 28) float64 numpy on the 8-bit grid (the original's
    input is a uint8 image)."""
    return images[:, 0].detach().cpu().double().mul(255).round_().div_(255).numpy()


def _to_images(values: np.ndarray | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Values in [0, 1] (N, 28, 28) -> images on the 8-bit grid, as the reference's
    ``np.round(float32(255 * clip(x, 0, 1)))``."""
    grid = np.round((np.clip(np.asarray(values), 0, 1) * 255).astype(np.float32)) / np.float32(255)
    return torch.from_numpy(grid[:, None]).to(device=like.device, dtype=like.dtype)


CHUNK = 1000  # images per piece of work: small enough for the CPU cache, large enough to amortise numpy calls


def _in_chunks(fn, *arrays: np.ndarray, threaded: bool = True) -> np.ndarray:
    """`fn` on aligned pieces of CHUNK images of `arrays` (along the first axis), concatenated. With
    `threaded`, the pieces run on torch's intra-op thread count: numpy releases the GIL in its array loops
    (not worth it for loops of small operations, which hold the GIL). `fn` must be pure (draw the
    randomness beforehand), so the output does not depend on the threads."""
    pieces = [tuple(a[i:i + CHUNK] for a in arrays) for i in range(0, len(arrays[0]), CHUNK)]
    threads = min(torch.get_num_threads() if threaded else 1, len(pieces))
    if threads <= 1:
        return np.concatenate([fn(*piece) for piece in pieces])
    with ThreadPoolExecutor(threads) as pool:
        return np.concatenate(list(pool.map(lambda piece: fn(*piece), pieces)))


def _rng(generator: torch.Generator) -> np.random.Generator:
    """A numpy generator seeded from the torch one (the heavy work runs in numpy, single-threaded)."""
    seed = int(torch.randint(0, 2 ** 63 - 1, (1,), generator=generator, device=generator.device))
    return np.random.Generator(np.random.SFC64(seed))


class MnistCCorruption(Corruption):
    """An MNIST-C corruption: 28x28 grey images only."""

    input_shape = (1, SIZE, SIZE)


class _Graded(MnistCCorruption):
    """A corruption with the original's five severity levels; `level` holds the chosen setting."""

    levels: ClassVar[tuple]

    def __init__(self, severity: int):
        if severity not in range(1, len(self.levels) + 1):
            raise RobenchError(f"{self.name} severity must be 1..{len(self.levels)}; got {severity!r}.")
        self.severity = severity
        self.level = self.levels[severity - 1]


# ---------------------------------------------------------------- noise

@register
class ShotNoise(_Graded):
    """Poisson(x * c) / c with c = 60, 25, 12, 5, 3."""

    name = "shot_noise"
    levels = (60, 25, 12, 5, 3)

    def __init__(self, *, severity: int = 5):
        super().__init__(severity)

    def apply(self, images, generator):
        return _to_images(shot_noise(torch.from_numpy(_grey(images)), generator, self.level), images)


@register
class ImpulseNoise(_Graded):
    """Salt and pepper on a fraction 0.03, 0.06, 0.09, 0.17, 0.27 of the pixels."""

    name = "impulse_noise"
    levels = (0.03, 0.06, 0.09, 0.17, 0.27)

    def __init__(self, *, severity: int = 4):
        super().__init__(severity)

    def apply(self, images, generator):
        return _to_images(impulse_noise(torch.from_numpy(_grey(images)), generator, self.level), images)


# ---------------------------------------------------------------- blur

def _row_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """The original's skimage ``gaussian(x, sigma, multichannel=True)`` on a 2-D image, which takes the
    columns for channels and so blurs along axis 0 (down the rows) only; mode 'nearest', truncate 4."""
    return ndimage.gaussian_filter1d(x, sigma, axis=1, mode="nearest", truncate=4.0)


@lru_cache(maxsize=None)
def _swap_waves(delta: int) -> tuple[np.ndarray, ...]:
    """Flat pixel indices of the glass-blur swap loop, grouped into waves that can run at once.

    The original visits (h, w) for h, w = 28-delta .. delta+1 in row-major order from the bottom right,
    swapping each pixel with one in the 2*delta square above-left of (h+delta-1, w+delta-1). Two visits
    touch common pixels only if |dh|, |dw| < 2*delta, so with t = 2*delta*(H - h) + (H - w) every wave of
    equal t touches disjoint pixels and any two visits that interact run in the original order."""
    top = SIZE - delta
    cells = [(h, w) for h in range(top, delta, -1) for w in range(top, delta, -1)]
    waves: dict[int, list[int]] = {}
    for h, w in cells:
        waves.setdefault(2 * delta * (top - h) + (top - w), []).append(h * SIZE + w)
    return tuple(np.array(waves[t]) for t in sorted(waves))


def _swap(waves: tuple[np.ndarray, ...], images: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The glass-blur swap loop on flat images (m, 784): visit v of iteration i of image j swaps the
    pixel with the one `offsets[j, i, v]` away (0: no swap), wave by wave."""
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
            x[rows, partner] = mine
    return x


@register
class GlassBlur(_Graded):
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
        blurred = np.floor(_row_blur(_grey(images), sigma) * 255).astype(np.uint8)  # np.uint8() truncates
        side = 2 * delta
        waves = _swap_waves(delta)
        visits = sum(len(w) for w in waves)
        # one draw per visit: below side^2 -> swap with offset (r // side, r % side) - delta, else keep
        draws = _rng(generator).integers(0, 2 * side * side, (iterations, visits, n), dtype=np.int16)
        offsets = np.where(draws < side * side, (draws // side - delta) * SIZE + (draws % side - delta), 0)
        swapped = _in_chunks(partial(_swap, waves), blurred.reshape(n, SIZE * SIZE), offsets.transpose(2, 0, 1),
                             threaded=False)
        again = _row_blur(swapped.reshape(n, SIZE, SIZE) / 255.0, sigma)
        return _to_images(again, images)


def _motion_kernel(radius: float, sigma: float) -> np.ndarray:
    """ImageMagick's one-sided motion-blur kernel: exp(-i^2 / 2 sigma^2), i = 0 .. 2*ceil(radius), normalised."""
    i = np.arange(2 * math.ceil(radius) + 1, dtype=np.float64)
    k = np.exp(-(i * i) / (2 * sigma * sigma)) / (math.sqrt(2 * math.pi) * sigma)
    return k / k.sum()


@register
class MotionBlur(_Graded):
    """ImageMagick's motion blur (radius, sigma) at a random angle in [-45, 45] degrees: each pixel is
    the kernel-weighted sum of the pixels at round(i * (cos a, sin a)), edges repeated, truncated to 8 bits."""

    name = "motion_blur"
    levels = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))

    def __init__(self, *, severity: int = 1):
        super().__init__(severity)

    def apply(self, images, generator):
        return _to_images(self.blur(images, _rng(generator).uniform(-45, 45, len(images))), images)

    def blur(self, images: torch.Tensor, angles: np.ndarray) -> np.ndarray:
        """The blurred images (N, 28, 28) on the 8-bit grid for angles (N,) in degrees."""
        return _in_chunks(partial(self._blur, _motion_kernel(*self.level)), np.round(_grey(images) * 255), angles)

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


# ---------------------------------------------------------------- affine

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
    bordered = np.pad(_grey(images), ((0, 0), (1, 1), (1, 1))).reshape(n, -1)  # zeros stand for outside
    maps, which = np.unique(matrices.reshape(n, 6), axis=0, return_inverse=True)
    out = np.empty((n, SIZE * SIZE))
    for m, matrix in enumerate(maps):
        chosen = np.flatnonzero(which.ravel() == m)
        out[chosen] = _in_chunks(partial(_bilinear, _bilinear_taps(tuple(matrix))), bordered[chosen])
    return out.reshape(n, SIZE, SIZE)


def _centred(linear: np.ndarray) -> np.ndarray:
    """(N, 2, 2) linear parts -> (N, 2, 3) affine maps that keep (13.5, 13.5) fixed."""
    return np.concatenate([linear, CENTRE * (1 - linear.sum(2, keepdims=True))], 2)


def _signs(generator: torch.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return _rng(generator).integers(0, 2, shape) * 2.0 - 1


class _SignedAffine(_Graded):
    """An affine map about the centre whose direction has a random sign per image."""

    def matrices(self, signs: np.ndarray) -> np.ndarray:
        """(N, 2, 3) inverse maps for per-image signs (N,) of +-1."""
        raise NotImplementedError

    def apply(self, images, generator):
        return _to_images(_warp(images, self.matrices(_signs(generator, (len(images),)))), images)


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
class Scale(_Graded):
    """The digit shrunk about the centre to 90, 80, 70, 60, 50 %."""

    name = "scale"
    deterministic = True
    levels = (0.9, 0.8, 0.7, 0.6, 0.5)

    def __init__(self, *, severity: int = 3):
        super().__init__(severity)

    def apply(self, images, generator):
        linear = np.broadcast_to(np.eye(2) * (1 / self.level), (len(images), 2, 2))
        return _to_images(_warp(images, _centred(linear)), images)


@register
class Translate(_Graded):
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
        return _to_images(_warp(images, self.matrices(_signs(generator, (len(images), 2)))), images)


# ---------------------------------------------------------------- digital

@register
class Brightness(_Graded):
    """+c on the HSV value channel, c = 0.1 .. 0.5 (for grey: add and clip, then the RGB->grey weights)."""

    name = "brightness"
    deterministic = True
    levels = (0.1, 0.2, 0.3, 0.4, 0.5)

    def __init__(self, *, severity: int = 5):
        super().__init__(severity)

    def apply(self, images, generator):
        v = np.clip(_grey(images) + self.level, 0, 1)
        return _to_images(v * 0.2125 + v * 0.7154 + v * 0.0721, images)


_STRIPES = (np.arange(SIZE) < 7) | (np.arange(SIZE) >= 21)


@register
class Stripe(MnistCCorruption):
    """Columns 0-6 and 21-27 inverted."""

    name = "stripe"
    deterministic = True

    def apply(self, images, generator):
        x = _grey(images)
        x[..., _STRIPES] = 1 - x[..., _STRIPES]
        return _to_images(x, images)


# ---------------------------------------------------------------- weather

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
class Fog(_Graded):
    """x + c * plasma fractal (decay d), rescaled by max(x) / (max(x) + c); (c, d) per severity."""

    name = "fog"
    levels = ((1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4))

    def __init__(self, *, severity: int = 5):
        super().__init__(severity)

    def apply(self, images, generator):
        strength, decay = self.level
        keys = _rng(generator).integers(0, 2 ** 64, len(images), dtype=np.uint64)
        plasma = _in_chunks(partial(plasma_corner, decay=decay), keys)
        x = _grey(images)
        top = x.max((1, 2), keepdims=True)
        out = (x + strength * plasma) * top / (top + strength)
        return _to_images(out, images)


@register
class Spatter(_Graded):
    """Mud spatter: blurred Gaussian liquid thresholded, its mask blurred and cut at 0.8, painted in grey
    63/255 over the digit. Settings (mean, std, blur, threshold, mask blur, -) as the original."""

    name = "spatter"
    levels = ((0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0), (0.65, 0.3, 2, 0.68, 0.5, 0),
              (0.65, 0.3, 1, 0.65, 1.5, 1), (0.67, 0.4, 1, 0.65, 1.5, 1))

    def __init__(self, *, severity: int = 4):
        super().__init__(severity)

    def apply(self, images, generator):
        loc, scale, blur, cut, mask_blur, _ = self.level
        liquid = _rng(generator).normal(loc, scale, (len(images), SIZE, SIZE))
        liquid = ndimage.gaussian_filter(liquid, (0, blur, blur), mode="nearest", truncate=4.0)
        mask = ndimage.gaussian_filter((liquid > cut).astype(np.float32), (0, mask_blur, mask_blur),
                                       mode="nearest", truncate=4.0)
        mask[mask < 0.8] = 0
        x = _grey(images).astype(np.float32)
        return _to_images(x * (1 - mask) + np.float32(63 / 255) * mask, images)


# ---------------------------------------------------------------- lines

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
        ends = _rng(generator).integers(0, 27, (len(images), 2))
        line = _line(np.zeros(len(images)), ends[:, 0], np.full(len(images), 27), ends[:, 1]) * _DOTS
        return _to_images(_grey(images) + line, images)


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
        rng = _rng(generator)
        r0, dr = rng.integers(0, 27, n), rng.integers(0, 10, n)
        return _to_images(_grey(images) + _zigzags()[r0, dr], images)


# ---------------------------------------------------------------- edges

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
        return _to_images(_in_chunks(canny, _grey(images)).astype(np.float64), images)


# ---------------------------------------------------------------- the suite

MNIST_C = ("shot_noise", "impulse_noise", "glass_blur", "motion_blur", "shear", "scale", "rotate", "brightness",
           "translate", "stripe", "fog", "spatter", "dotted_line", "zigzag", "canny_edges")


@CORRUPTIONS.register("mnist-c")
class MnistC:
    """The MNIST-C suite: the chosen corruptions ("all" for the 15) at the published severities."""

    #: the suite's name in table titles
    label = "MNIST-C"

    def __init__(self, *, corruptions: tuple[str, ...] = ("all",)):
        names = MNIST_C if tuple(corruptions) == ("all",) else tuple(corruptions)
        for name in names:
            if name not in MNIST_C:
                raise unknown_name("MNIST-C corruption", name, (*MNIST_C, "all"))
        self.corruptions: dict[str, Corruption] = {name: CORRUPTIONS.create(name) for name in dict.fromkeys(names)}

    @classmethod
    def as_threat(cls, **params: Any) -> CorruptionThreat:
        threat = CorruptionThreat(cls(**params).corruptions)
        threat.label = cls.label
        return threat


def suite_corruptions(suite: str | Sequence[str]) -> dict[str, Corruption]:
    """Corruptions by name: a suite ("mnist-c"), one corruption, or a list of corruption names."""
    names = [suite] if isinstance(suite, str) else list(suite)
    out: dict[str, Corruption] = {}
    for name in names:
        entry = CORRUPTIONS.get(name)
        if isinstance(entry, type) and issubclass(entry, Corruption):
            out[name] = entry()
        else:
            out.update(entry().corruptions)
    return out
