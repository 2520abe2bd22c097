"""What the CIFAR-10-C corruptions share: the 32x32 RGB grid and its 8-bit rounding, the base class, and
the operations several use (the clipped zoom, ImageMagick's motion blur, bilinear sampling)."""
from __future__ import annotations

import math
from abc import abstractmethod
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from robench.corruptions.base import Graded
from robench.corruptions.mnist_c.blur import motion_kernel

SIZE = 32
#: the registered names are "cifar10-c:<corruption>" (MNIST-C holds the bare "fog", "brightness", ...)
PREFIX = "cifar10-c:"


def pixels(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) float in [0, 1] -> float64 on the 8-bit grid (the original reads uint8 images)."""
    return images.detach().double().mul(255).round_().div_(255)


def to_images(values: torch.Tensor | np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """Values in [0, 1] -> images on the 8-bit grid as the published files, whose ``np.uint8(255 *
    clip(x, 0, 1))`` truncates; dtype and device of `like`."""
    values = torch.as_tensor(values, device=like.device)
    return values.clamp(0, 1).mul_(255).floor_().div_(255).to(like.dtype)


#: images corrupted at once: the work stays in the CPU caches (several times faster on 1,000 images than one
#: batch); the draws of a chunk follow those of the one before, so it is part of the seeding
CHUNK = 128


class CifarCCorruption(Graded):
    """A CIFAR-10-C corruption: RGB 32x32 images, severity 1-5 with the CIFAR-10-C settings (`levels`);
    severity 3 by default. Subclasses implement `corrupt`, which `apply` runs on chunks of CHUNK images."""

    input_shape = (3, SIZE, SIZE)

    def __init__(self, *, severity: int = 3):
        super().__init__(severity)

    def apply(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        chunks = [self.corrupt(images[i:i + CHUNK], generator) for i in range(0, len(images), CHUNK)]
        return torch.cat(chunks) if chunks else images.clone()

    @abstractmethod
    def corrupt(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The corrupted images of one chunk (N <= CHUNK, 3, 32, 32), same shape, in [0, 1]."""


def uniform(generator: torch.Generator, low: float, high: float, shape: tuple[int, ...]) -> torch.Tensor:
    """float64 uniform in [low, high) on the generator's device."""
    return torch.rand(shape, generator=generator, device=generator.device, dtype=torch.float64) * (high - low) + low


def clipped_zoom(x: torch.Tensor, factor: float) -> torch.Tensor:
    """The original's ``clipped_zoom`` of (N, C, S, S): the centre ceil(S / factor) square, zoomed by
    scipy's order-1 ``zoom`` (to round(side * factor), corners aligned), its centre S x S kept."""
    side = x.shape[-1]
    crop = math.ceil(side / factor)
    top = (side - crop) // 2
    out = round(crop * factor)
    zoomed = F.interpolate(x[..., top:top + crop, top:top + crop], size=(out, out), mode="bilinear",
                           align_corners=True)
    trim = (out - side) // 2
    return zoomed[..., trim:trim + side, trim:trim + side]


def motion_blur(x: torch.Tensor, radius: float, sigma: float, angles: torch.Tensor) -> torch.Tensor:
    """ImageMagick's motion blur (as Wand's ``motion_blur``) of (N, C, H, W) on the 8-bit grid at per-image
    `angles` (N,) in degrees: pixel p is the kernel-weighted sum of the pixels at p + round(i * (sin a, cos a))
    (rows, columns), edges repeated; 8-bit output (truncated, as fitted to ImageMagick for MNIST-C). Sums in
    float32: their error is far below the 1e-3 margin of the truncation."""
    kernel = motion_kernel(radius, sigma)
    n, c, h, w = x.shape
    rad = torch.deg2rad(angles.double()).to(x.device)[:, None]
    steps = torch.arange(len(kernel), dtype=torch.float64, device=x.device)
    dy = torch.ceil(steps * torch.sin(rad) - 0.5).long()  # (N, taps)
    dx = torch.ceil(steps * torch.cos(rad) - 0.5).long()
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    flat = x.float().reshape(n, c, h * w)
    out = torch.zeros_like(flat)
    for i, weight in enumerate(kernel):
        where = ((rows + dy[:, i, None, None]).clamp(0, h - 1) * w + (cols + dx[:, i, None, None]).clamp(0, w - 1))
        out += float(weight) * flat.gather(2, where.reshape(n, 1, h * w).expand(n, c, h * w))
    return out.double().reshape(n, c, h, w).mul_(255).add_(1e-3).floor_().div_(255)


def reflect101(i: torch.Tensor, n: int) -> torch.Tensor:
    """Indices reflected about the edge pixels (OpenCV's BORDER_REFLECT_101: d c b | a b c d)."""
    i = i.abs()
    return torch.where(i > n - 1, 2 * (n - 1) - i, i)


def symmetric(i: torch.Tensor, n: int) -> torch.Tensor:
    """Indices reflected about the image edges (scipy's mode 'reflect': c b a | a b c d)."""
    i = torch.where(i < 0, -i - 1, i)
    return torch.where(i > n - 1, 2 * n - 1 - i, i)


def bilinear(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
             border: Callable[[torch.Tensor, int], torch.Tensor]) -> torch.Tensor:
    """(N, C, H, W) sampled at float positions `rows`, `cols` (N, H, W) by bilinear interpolation of the
    four neighbours, out-of-range neighbours mapped by `border` (`reflect101` or `symmetric`)."""
    n, c, h, w = x.shape
    r0, c0 = rows.floor(), cols.floor()
    fr, fc = (rows - r0).unsqueeze(1), (cols - c0).unsqueeze(1)
    r0, c0 = r0.long(), c0.long()
    top, bottom = border(r0, h) * w, border(r0 + 1, h) * w
    left, right = border(c0, w), border(c0 + 1, w)
    flat = x.reshape(n, c, h * w)

    def at(where: torch.Tensor) -> torch.Tensor:
        return flat.gather(2, where.reshape(n, 1, h * w).expand(n, c, h * w)).reshape(n, c, h, w)

    upper = torch.lerp(at(top + left), at(top + right), fc)
    return torch.lerp(upper, torch.lerp(at(bottom + left), at(bottom + right), fc), fr)
