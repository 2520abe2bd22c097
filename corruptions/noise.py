"""Noise corruptions for grey and RGB images: Gaussian and Patch Gaussian (used at test time here and
at training time by robench.defenses.noise)."""
from __future__ import annotations

import torch


def _per_image(value: float | torch.Tensor, n: int, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(value, dtype=like.dtype, device=like.device).expand(n).reshape(n, 1, 1, 1)


def gaussian_noise(images: torch.Tensor, generator: torch.Generator, sigma: float | torch.Tensor) -> torch.Tensor:
    """images + N(0, sigma^2) per pixel and channel, clipped to [0, 1]; sigma a float or (N,) tensor."""
    noise = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
    return (images + noise * _per_image(sigma, len(images), images)).clamp(0, 1)


def patch_gaussian_noise(images: torch.Tensor, generator: torch.Generator, width: int | torch.Tensor,
                         sigma: float | torch.Tensor) -> torch.Tensor:
    """Gaussian noise inside one width x width square per image whose centre is uniform over all pixels
    (the square is cut off at the border); width and sigma are numbers or (N,) tensors."""
    n, _, h, w = images.shape
    dev = images.device
    cy = torch.randint(0, h, (n,), generator=generator, device=dev).view(n, 1, 1, 1)
    cx = torch.randint(0, w, (n,), generator=generator, device=dev).view(n, 1, 1, 1)
    size = torch.as_tensor(width, device=dev).expand(n).reshape(n, 1, 1, 1)
    lo_y, lo_x = cy - size // 2, cx - size // 2
    rows = torch.arange(h, device=dev).view(1, 1, h, 1)
    cols = torch.arange(w, device=dev).view(1, 1, 1, w)
    inside = (rows >= lo_y) & (rows < lo_y + size) & (cols >= lo_x) & (cols < lo_x + size)
    noisy = gaussian_noise(images, generator, sigma)
    return torch.where(inside, noisy, images)
