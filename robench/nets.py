"""Architectures of the zoo. Every net takes images in [0, 1] and normalises them in its first layer."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from robench.errors import unknown_name


class Normalize(nn.Module):
    """(x - mean) / std per channel, as the first layer of a model."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def small_cnn(channels: int, size: int, classes: int, norm: Normalize) -> nn.Module:
    """Two 3x3 conv layers (32, 64) with max pooling and a 128-unit hidden layer; fast on a CPU."""
    return nn.Sequential(
        norm, nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(64 * (size // 4) ** 2, 128), nn.ReLU(), nn.Linear(128, classes))


def small_cnn_bn(channels: int, size: int, classes: int, norm: Normalize) -> nn.Module:
    """`small_cnn` with batch normalisation after each convolution and the hidden layer (Galloway et al.
    2019 compare the same net with and without it)."""
    return nn.Sequential(
        norm, nn.Conv2d(channels, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(64 * (size // 4) ** 2, 128), nn.BatchNorm1d(128), nn.ReLU(), nn.Linear(128, classes))


class KWinners(nn.Module):
    """k-winners-take-all (Ahmad & Scheinkman 2019): per example, the `k` largest activations of the layer
    pass, every other is zero (the gradient flows through the winners only)."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        threshold = flat.topk(self.k, dim=1).values[:, -1:]
        return (flat * (flat >= threshold)).view_as(x)


class SparseWeights(nn.Module):
    """A linear or conv layer of which only a fixed random `density` share of the weights can be nonzero
    (per output unit; the mask is a buffer drawn from torch's global generator at construction)."""

    def __init__(self, layer: nn.Linear | nn.Conv2d, density: float):
        super().__init__()
        self.layer = layer
        fan_in = layer.weight[0].numel()
        keep = max(1, round(density * fan_in))
        scores = torch.rand(layer.weight.shape[0], fan_in)
        mask = torch.zeros_like(scores).scatter_(1, scores.topk(keep, dim=1).indices, 1.0)
        self.register_buffer("mask", mask.view_as(layer.weight))
        with torch.no_grad():
            layer.weight.mul_(self.mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.layer.weight * self.mask
        if isinstance(self.layer, nn.Conv2d):
            return self.layer._conv_forward(x, weight, self.layer.bias)
        return nn.functional.linear(x, weight, self.layer.bias)


def sparse_cnn(channels: int, size: int, classes: int, norm: Normalize) -> nn.Module:
    """`small_cnn` made sparse as in Ahmad & Scheinkman (2019): the second convolution and the hidden layer
    keep 35% and 30% of their weights, and k-winners-take-all keeps 10% of the activations after the
    convolutions and 25% of the hidden units (the first convolution stays dense)."""
    units = 64 * (size // 4) ** 2
    return nn.Sequential(
        norm, nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        SparseWeights(nn.Conv2d(32, 64, 3, padding=1), 0.35), nn.MaxPool2d(2), KWinners(round(0.1 * units)),
        nn.Flatten(), SparseWeights(nn.Linear(units, 128), 0.3), KWinners(32), nn.Linear(128, classes))


def madry_cnn(channels: int, size: int, classes: int, norm: Normalize) -> nn.Module:
    """The MNIST CNN of Madry et al. (2018): conv 5x5x32, pool, conv 5x5x64, pool, fc 1024."""
    return nn.Sequential(
        norm, nn.Conv2d(channels, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(64 * (size // 4) ** 2, 1024), nn.ReLU(), nn.Linear(1024, classes))


def lenet5(channels: int, size: int, classes: int, norm: Normalize) -> nn.Module:
    """LeNet-5 (LeCun et al. 1998) with ReLU and max pooling; 28x28 inputs are padded to 32x32."""
    pad = (32 - size) // 2 if size < 32 else 0
    return nn.Sequential(
        norm, nn.Conv2d(channels, 6, 5, padding=pad), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, classes))


def mlp(channels: int, size: int, classes: int, norm: Normalize) -> nn.Module:
    """Two hidden layers of 256 units."""
    return nn.Sequential(norm, nn.Flatten(), nn.Linear(channels * size * size, 256), nn.ReLU(),
                         nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, classes))


def gowal_small(channels: int, size: int, classes: int, norm: Normalize) -> nn.Module:
    """The small CNN of Gowal et al. (2018) for certified training: conv 16 4x4 stride 2, conv 32 4x4, fc 100;
    no pooling (bound propagation through strided convolutions stays tight)."""
    side = (size - 4) // 2 + 1 - 3
    return nn.Sequential(
        norm, nn.Conv2d(channels, 16, 4, stride=2), nn.ReLU(), nn.Conv2d(16, 32, 4), nn.ReLU(), nn.Flatten(),
        nn.Linear(32 * side * side, 100), nn.ReLU(), nn.Linear(100, classes))


def gowal_medium(channels: int, size: int, classes: int, norm: Normalize) -> nn.Module:
    """The medium CNN of Gowal et al. (2018): conv 32 3x3, conv 32 4x4 stride 2, conv 64 3x3, conv 64 4x4
    stride 2, fc 512, fc 512 (padding 1: 28x28 -> 14x14 -> 7x7)."""
    return nn.Sequential(
        norm, nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 4, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 4, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(64 * (size // 4) ** 2, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
        nn.Linear(512, classes))


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.skip = nn.Sequential()
        if stride != 1 or cin != cout:
            self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.skip(x))


def resnet20(channels: int, size: int, classes: int, norm: Normalize) -> nn.Module:
    """ResNet-20 for 32x32 images (He et al. 2016): 3 stages of 3 basic blocks, 16/32/64 channels."""
    layers: list[nn.Module] = [norm, nn.Conv2d(channels, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
    cin = 16
    for cout, stride in ((16, 1), (32, 2), (64, 2)):
        for i in range(3):
            layers.append(_Block(cin, cout, stride if i == 0 else 1))
            cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, classes)]
    return nn.Sequential(*layers)


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "small-cnn": small_cnn, "small-cnn-bn": small_cnn_bn, "sparse-cnn": sparse_cnn, "madry-cnn": madry_cnn, "lenet5": lenet5, "mlp": mlp, "resnet20": resnet20,
    "gowal-small": gowal_small, "gowal-medium": gowal_medium,
}


def create(arch: str, *, channels: int, size: int, classes: int,
           mean: tuple[float, ...], std: tuple[float, ...]) -> nn.Module:
    """A freshly initialised `arch` for (channels, size, size) images with the given normalisation."""
    if arch not in ARCHITECTURES:
        raise unknown_name("architecture", arch, ARCHITECTURES)
    return ARCHITECTURES[arch](channels, size, classes, Normalize(mean, std))
