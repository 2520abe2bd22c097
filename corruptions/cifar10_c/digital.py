"""CIFAR-10-C's digital corruptions: brightness, contrast, elastic transform, pixelate and JPEG."""
from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
import torch
from scipy import ndimage
from PIL import Image

from robench.corruptions.base import register
from robench.corruptions.cifar10_c.common import (PREFIX, SIZE, CifarCCorruption, bilinear, pixels, reflect101,
                                                  symmetric, to_images, uniform)
from robench.corruptions.mnist_c.common import numpy_rng


@register
class Brightness(CifarCCorruption):
    """+c on the HSV value, c = 0.05, 0.1, 0.15, 0.2, 0.3: with hue and saturation kept, RGB scales with
    the value max(R, G, B) (a black pixel becomes grey c)."""

    name = PREFIX + "brightness"
    deterministic = True
    levels = (0.05, 0.1, 0.15, 0.2, 0.3)

    def corrupt(self, images, generator):
        x = pixels(images)
        value = x.amax(1, keepdim=True)
        brighter = (value + self.level).clamp(max=1)
        return to_images(torch.where(value > 0, x * brighter / value.clamp(min=1e-12), brighter), images)


@register
class Contrast(CifarCCorruption):
    """(x - m) * c + m with m the mean of each channel, c = 0.75, 0.5, 0.4, 0.3, 0.15."""

    name = PREFIX + "contrast"
    deterministic = True
    levels = (0.75, 0.5, 0.4, 0.3, 0.15)

    def corrupt(self, images, generator):
        x = pixels(images)
        mean = x.mean((2, 3), keepdim=True)
        return to_images((x - mean) * self.level + mean, images)


#: the control points of the original's random affine map, (x, y): the centre +- a third of the side
_POINTS = np.array([[26, 26], [26, 6], [6, 6]], dtype=np.float32)


@register
class ElasticTransform(CifarCCorruption):
    """A random affine map, then a smooth random displacement; (alpha, sigma, jitter) = 32 * (0, 0, 0.08),
    (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03).

    The affine map is OpenCV's ``warpAffine`` moving the three `_POINTS` by U(-jitter, jitter) (bilinear,
    border reflected about the edge pixels); the displacement per axis is alpha * Gaussian-smoothed (sigma,
    truncate 3, mode 'reflect') U(-1, 1) noise, sampled bilinearly (scipy's ``map_coordinates``, mode
    'reflect')."""

    name = PREFIX + "elastic_transform"
    levels = tuple((SIZE * a, SIZE * s, SIZE * j) for a, s, j in
                   ((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)))

    def corrupt(self, images, generator):
        _, _, jitter = self.level
        n = len(images)
        moved = _POINTS + uniform(generator, -jitter, jitter, (n, 3, 2)).cpu().numpy().astype(np.float32)
        return to_images(self.warp(pixels(images), moved, numpy_rng(generator).uniform(-1, 1, (2, n, SIZE, SIZE))),
                         images)

    def warp(self, x: torch.Tensor, moved: np.ndarray, noise: np.ndarray) -> torch.Tensor:
        """The transform of (N, 3, 32, 32) for given draws: the moved control points (N, 3, 2) float32 and
        the noise U(-1, 1) of the column then row displacement (2, N, 32, 32)."""
        alpha, sigma, _ = self.level
        n, dev = len(x), x.device
        # the inverse affine map, moved points -> control points: the source (x, y) of each output pixel
        inverse = np.linalg.solve(np.concatenate([moved, np.ones((n, 3, 1))], 2), np.broadcast_to(_POINTS, (n, 3, 2)))
        span = torch.arange(SIZE, dtype=torch.float64)
        ones = torch.ones(SIZE, SIZE, dtype=torch.float64)
        grid = torch.stack([*torch.meshgrid(span, span, indexing="xy"), ones], -1)  # (H, W, 3): (x, y, 1)
        src = grid @ torch.from_numpy(inverse)[:, None]  # (N, H, W, 2)
        warped = bilinear(x, src[..., 1].to(dev), src[..., 0].to(dev), reflect101).float().double()  # float32 image
        dx, dy = (torch.from_numpy(ndimage.gaussian_filter(u, (0, sigma, sigma), mode="reflect", truncate=3.0)
                                   * alpha).float().double().to(dev) for u in noise)
        rows, cols = torch.arange(SIZE, device=dev).view(1, SIZE, 1), torch.arange(SIZE, device=dev).view(1, 1, SIZE)
        return bilinear(warped, rows + dy, cols + dx, symmetric)


@lru_cache(maxsize=None)
def box_weights(size_in: int, size_out: int) -> torch.Tensor:
    """Pillow's BOX resampling from `size_in` to `size_out` pixels as a (out, in) matrix of its 22-bit
    fixed-point weights: output pixel i averages the inputs whose centres fall in its box."""
    scale = size_in / size_out
    reach = max(scale, 1.0)
    weights = np.zeros((size_out, size_in))
    for i in range(size_out):
        centre = (i + 0.5) * scale
        lo, hi = max(int(centre - reach / 2 + 0.5), 0), min(int(centre + reach / 2 + 0.5), size_in)
        box = np.array([-0.5 < (j - centre + 0.5) / reach <= 0.5 for j in range(lo, hi)], dtype=np.float64)
        weights[i, lo:hi] = box / box.sum()
    return torch.from_numpy(np.floor(weights * 2 ** 22 + 0.5))


def box_resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Pillow's ``resize((size, size), BOX)`` of 8-bit values (N, C, H, W) as float64: the horizontal pass,
    rounded to 8 bits, then the vertical one."""
    def rounded(v: torch.Tensor) -> torch.Tensor:
        return torch.floor((v + 2 ** 21) / 2 ** 22).clamp_(0, 255)

    x = rounded(x @ box_weights(x.shape[3], size).to(x.device).T)
    return rounded(box_weights(x.shape[2], size).to(x.device) @ x)


@register
class Pixelate(CifarCCorruption):
    """Pillow's BOX resize to int(32 c) pixels and back with BOX, c = 0.95, 0.9, 0.85, 0.75, 0.65."""

    name = PREFIX + "pixelate"
    deterministic = True
    levels = (0.95, 0.9, 0.85, 0.75, 0.65)

    def corrupt(self, images, generator):
        x = pixels(images) * 255
        return to_images(box_resize(box_resize(x, int(SIZE * self.level)), SIZE) / 255, images)


@register
class JpegCompression(CifarCCorruption):
    """Pillow's JPEG at quality 80, 65, 58, 50, 40, as the original (image by image: libjpeg's own work)."""

    name = PREFIX + "jpeg_compression"
    deterministic = True
    levels = (80, 65, 58, 50, 40)

    def corrupt(self, images, generator):
        out = []
        for image in (pixels(images) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy():
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, "JPEG", quality=self.level)
            with Image.open(buffer) as decoded:
                out.append(np.asarray(decoded))
        return to_images(torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).double() / 255, images)
