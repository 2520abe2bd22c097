"""Noise corruptions for grey and RGB images: Gaussian, shot (Poisson), impulse (salt and pepper) and
Patch Gaussian. The functions are used at test time here (registered as `gaussian`, `shot`, `impulse`,
`patch-gaussian`), at training time by robench.defenses.noise, and by the MNIST-C suite."""
from __future__ import annotations

import torch

from robench.corruptions.base import Corruption, register
from robench.errors import RobenchError


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


def shot_noise(images: torch.Tensor, generator: torch.Generator, rate: float) -> torch.Tensor:
    """Poisson(images * rate) / rate per pixel and channel, clipped to [0, 1]: photon noise with `rate`
    photons at full intensity (lower is noisier). Black pixels stay black."""
    out = torch.zeros_like(images)
    lit = images > 0
    out[lit] = torch.poisson(images[lit].double() * rate, generator=generator).to(images.dtype) / rate
    return out.clamp_(0, 1)


def impulse_noise(images: torch.Tensor, generator: torch.Generator, amount: float) -> torch.Tensor:
    """Salt and pepper: each pixel and channel, with probability `amount`, set to 0 or 1 (even odds)."""
    u = torch.rand(images.shape, generator=generator, device=images.device, dtype=torch.float64)
    salt = torch.rand(images.shape, generator=generator, device=images.device) < 0.5
    return torch.where(u < amount, salt.to(images.dtype), images)


def _check(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise RobenchError(f"{name} must lie in [{low}, {high}]; got {value}.")


@register
class Gaussian(Corruption):
    """Additive Gaussian noise of standard deviation `sigma` (images in [0, 1])."""

    name = "gaussian"

    def __init__(self, *, sigma: float = 0.18):
        _check("sigma", sigma, 0.0, float("inf"))
        self.sigma = sigma

    @property
    def isotropic_sigma(self) -> float:
        """The standard deviation of the isotropic Gaussian noise (see Threat.isotropic_noise)."""
        return self.sigma

    def apply(self, images, generator):
        return gaussian_noise(images, generator, self.sigma)


@register
class Shot(Corruption):
    """Poisson (photon) noise with `rate` photons at full intensity; lower rates are noisier."""

    name = "shot"

    def __init__(self, *, rate: float = 12.0):
        if not rate > 0:
            raise RobenchError(f"rate must be positive; got {rate}.")
        self.rate = rate

    def apply(self, images, generator):
        return shot_noise(images, generator, self.rate)


@register
class Impulse(Corruption):
    """Salt-and-pepper noise hitting a fraction `amount` of the pixels."""

    name = "impulse"

    def __init__(self, *, amount: float = 0.09):
        _check("amount", amount, 0.0, 1.0)
        self.amount = amount

    def apply(self, images, generator):
        return impulse_noise(images, generator, self.amount)


@register
class PatchGaussian(Corruption):
    """Gaussian noise of std `sigma` inside one `width` x `width` square per image at a random place."""

    name = "patch-gaussian"

    def __init__(self, *, width: int = 25, sigma: float = 1.0):
        if width < 1:
            raise RobenchError(f"width must be at least 1 pixel; got {width}.")
        _check("sigma", sigma, 0.0, float("inf"))
        self.width, self.sigma = width, sigma

    def apply(self, images, generator):
        return patch_gaussian_noise(images, generator, self.width, self.sigma)
