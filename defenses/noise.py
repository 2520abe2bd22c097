"""Noise augmentation defenses: Gaussian and Patch Gaussian (Lopes et al. 2019) training."""
from __future__ import annotations

import torch
from torch import nn

from robench.corruptions.noise import gaussian_noise, patch_gaussian_noise
from robench.defenses.base import TrainingDefense
from robench.errors import RobenchError
from robench.registry import DEFENSES


def _sigmas(n: int, sigma: float, uniform: bool, generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    if not uniform:
        return torch.full((n,), sigma, dtype=like.dtype, device=like.device)
    return torch.rand(n, generator=generator, device=like.device, dtype=like.dtype) * sigma


@DEFENSES.register("gaussian")
class GaussianAugmentation(TrainingDefense):
    """Train on x + N(0, sigma^2) per pixel, clipped to [0, 1] (the base classifier of randomized
    smoothing). `uniform` draws sigma ~ U(0, sigma) per image instead, as Patch Gaussian does."""

    def __init__(self, *, sigma: float = 0.25, uniform: bool = False):
        if sigma < 0:
            raise RobenchError(f"gaussian: sigma must be >= 0; got {sigma}.")
        self.sigma, self.uniform = float(sigma), uniform

    def transform(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return gaussian_noise(x, generator, _sigmas(len(x), self.sigma, self.uniform, generator, x)), y


@DEFENSES.register("patch-gaussian")
class PatchGaussianAugmentation(TrainingDefense):
    """Patch Gaussian: per image sigma ~ U(0, sigma_max), Gaussian noise inside one square patch whose
    centre is uniform over the pixels (cut off at the border). The patch width is `width` (fixed) or,
    when `width` is None, an integer drawn uniformly from 0..max_width per image."""

    def __init__(self, *, width: int | None = 25, max_width: int | None = None, sigma_max: float = 1.0):
        if (width is None) == (max_width is None):
            raise RobenchError("patch-gaussian: give exactly one of width (fixed) and max_width (random); "
                               f"got width={width}, max_width={max_width}.")
        if (width if width is not None else max_width) < 0 or sigma_max < 0:
            raise RobenchError("patch-gaussian: width, max_width and sigma_max must be >= 0.")
        self.width, self.max_width, self.sigma_max = width, max_width, float(sigma_max)

    def transform(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(x)
        sigma = _sigmas(n, self.sigma_max, True, generator, x)
        if self.width is not None:
            width: int | torch.Tensor = self.width
        else:
            width = torch.randint(0, self.max_width + 1, (n,), generator=generator, device=x.device)
        return patch_gaussian_noise(x, generator, width, sigma), y
