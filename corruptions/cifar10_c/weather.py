"""CIFAR-10-C's weather: snow (a zoomed, thresholded, motion-blurred snow layer), frost (a photograph of
frost blended in) and fog (a plasma fractal).

Frost blends in crops of the five frost photographs of the original, which robench does not ship: it reads
them at run time from the ``imagecorruptions`` package (``pip install 'robench[cifar10c]'``), found without
importing it. That keeps the texture of the published CIFAR-10-C (a procedural stand-in would be another
corruption, not comparable with published frost numbers); without the package, frost is a one-line error.
"""
from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from robench.corruptions.base import register
from robench.corruptions.cifar10_c.common import (PREFIX, SIZE, CifarCCorruption, clipped_zoom, motion_blur,
                                                  pixels, to_images, uniform)
from robench.errors import RobenchError


@register
class Snow(CifarCCorruption):
    """Falling snow over a brightened image; settings (mean, std, zoom, cut, radius, sigma, keep) as the
    original's CIFAR-10 table.

    A snow layer N(mean, std) per pixel is `clipped_zoom`ed, zeroed below `cut`, put on the 8-bit grid and
    motion-blurred (radius, sigma) at an angle uniform in [-135, -45] degrees; the image is brightened
    towards 1.5 * grey + 0.5 (weight 1 - keep) and the layer is added with its 180-degree rotation."""

    name = PREFIX + "snow"
    levels = ((0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
              (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8))

    def corrupt(self, images, generator):
        mean, std, zoom, cut, radius, sigma, keep = self.level
        x = pixels(images)
        n = len(x)
        layer = torch.randn((n, 1, SIZE, SIZE), generator=generator, device=generator.device, dtype=torch.float64)
        layer = clipped_zoom(layer.to(x.device) * std + mean, zoom)
        layer = layer.where(layer >= cut, 0).clamp(0, 1).mul(255).floor().div(255)  # an 8-bit image
        layer = motion_blur(layer, radius, sigma, uniform(generator, -135, -45, (n,)))
        grey = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
        x = keep * x + (1 - keep) * torch.maximum(x, grey * 1.5 + 0.5)
        return to_images(x + layer + layer.flip(2, 3), images)


#: the frost photographs the original draws from (its randint(5) never picks the sixth, frost6.jpg)
FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")


@lru_cache(maxsize=1)
def frost_layers() -> tuple[torch.Tensor, torch.Tensor]:
    """The frost photographs as the original uses them, OpenCV's ``resize(fx=0.2, fy=0.2)`` (bilinear at
    scale 5: every fifth pixel from the third), stacked and zero-padded: uint8 (5, 3, H, W), and their
    sizes (5, 2)."""
    spec = importlib.util.find_spec("imagecorruptions")
    folder = Path(spec.submodule_search_locations[0]) / "frost" if spec and spec.submodule_search_locations else None
    if folder is None or not all((folder / f).is_file() for f in FROST_FILES):
        raise RobenchError(f"{PREFIX}frost blends in the frost photographs of the imagecorruptions package, which "
                           "is not installed; pip install 'robench[cifar10c]' (or imagecorruptions).")
    layers = []
    for file in FROST_FILES:
        with Image.open(folder / file) as photo:
            rgb = np.asarray(photo.convert("RGB"))
        h, w = round(rgb.shape[0] * 0.2), round(rgb.shape[1] * 0.2)
        layers.append(rgb[np.minimum(5 * np.arange(h) + 2, rgb.shape[0] - 1)][:, np.minimum(5 * np.arange(w) + 2,
                                                                                          rgb.shape[1] - 1)])
    sizes = torch.tensor([layer.shape[:2] for layer in layers])
    stack = np.zeros((len(layers), int(sizes[:, 0].max()), int(sizes[:, 1].max()), 3), np.uint8)
    for k, layer in enumerate(layers):
        stack[k, :layer.shape[0], :layer.shape[1]] = layer
    return torch.from_numpy(stack).permute(0, 3, 1, 2).contiguous(), sizes


@register
class Frost(CifarCCorruption):
    """keep * x + frost * (a 32x32 crop of a frost photograph, uniform over the five and over the
    original's crop positions); (keep, frost) = (1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)."""

    name = PREFIX + "frost"
    levels = ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45))

    def __init__(self, *, severity: int = 3):
        super().__init__(severity=severity)
        frost_layers()  # fails early, with the fix, where the photographs are missing

    def corrupt(self, images, generator):
        keep, weight = self.level
        stack, sizes = frost_layers()
        n, dev = len(images), generator.device
        which = torch.randint(0, len(stack), (n,), generator=generator, device=dev).cpu()
        # randint(0, size - 32): the original never starts a crop at the last position
        top = (torch.rand(n, generator=generator, device=dev, dtype=torch.float64).cpu()
               * (sizes[which, 0] - SIZE)).long()
        left = (torch.rand(n, generator=generator, device=dev, dtype=torch.float64).cpu()
                * (sizes[which, 1] - SIZE)).long()
        span = torch.arange(SIZE)
        rows, cols = (top[:, None] + span)[:, :, None], (left[:, None] + span)[:, None, :]
        crops = stack[which[:, None, None], :, rows, cols].permute(0, 3, 1, 2).to(images.device, torch.float64)
        return to_images(keep * pixels(images) + weight * crops / 255, images)


def plasma_fractal(n: int, decay: float, generator: torch.Generator, size: int = SIZE) -> torch.Tensor:
    """The original's plasma fractal, n at once: diamond-square on a size x size torus, each new point
    the mean of its 4 neighbours + U(-w^2, w^2) with w = 100 divided by `decay` per level, rescaled to
    [0, 1] -> float64 (n, size, size)."""
    plasma = torch.zeros((n, size, size), dtype=torch.float64, device=generator.device)
    step, wibble = size, 100.0

    def noisy(total: torch.Tensor) -> torch.Tensor:
        return total / 4 + wibble * uniform(generator, -wibble, wibble, tuple(total.shape))

    while step >= 2:
        h = step // 2
        corners = plasma[:, ::step, ::step]
        around = corners + corners.roll(-1, 1)
        plasma[:, h::step, h::step] = noisy(around + around.roll(-1, 2))
        centres, corners = plasma[:, h::step, h::step], plasma[:, ::step, ::step]
        plasma[:, ::step, h::step] = noisy(centres + centres.roll(1, 1) + corners + corners.roll(-1, 2))
        plasma[:, h::step, ::step] = noisy(centres + centres.roll(1, 2) + corners + corners.roll(-1, 1))
        step //= 2
        wibble /= decay
    plasma -= plasma.amin((1, 2), keepdim=True)
    return plasma / plasma.amax((1, 2), keepdim=True)


@register
class Fog(CifarCCorruption):
    """(x + c * plasma fractal of decay d) * max(x) / (max(x) + c); (c, d) = (0.2, 3), (0.5, 3), (0.75, 2.5),
    (1, 2), (1.5, 1.75)."""

    name = PREFIX + "fog"
    levels = ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75))

    def corrupt(self, images, generator):
        strength, decay = self.level
        x = pixels(images)
        top = x.amax((1, 2, 3), keepdim=True)
        plasma = plasma_fractal(len(x), decay, generator).to(x.device).unsqueeze(1)
        return to_images((x + strength * plasma) * top / (top + strength), images)
