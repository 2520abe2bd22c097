"""Symmetric 8-bit per-layer quantisation of a model's weights, and bit flips on the int8 codes.

Every conv and linear layer of a deep copy of the model is quantised per layer, symmetrically, to 8 bits:
``step = max|W| / 127``, codes ``round(W / step)`` in [-127, 127] held as int8 two's complement (bit
values 1, 2, 4, ..., 64, -128); the forward pass uses ``codes * step``. A flip XORs bits of the codes and
rewrites the matching dequantised weights, so flipping the same bits again restores them exactly.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from robench.errors import RobenchError

#: value of bit b (0 = least significant) of an int8 in two's complement
BIT_VALUES = torch.tensor([1, 2, 4, 8, 16, 32, 64, -128], dtype=torch.int32)
_SHIFTS = torch.arange(8, dtype=torch.uint8)


def to_bits(codes: torch.Tensor) -> torch.Tensor:
    """The 8 bits (uint8 0/1, least significant first) of int8 `codes`: shape (*codes.shape, 8)."""
    return (codes.view(torch.uint8).unsqueeze(-1) >> _SHIFTS.to(codes.device)) & 1


def from_bits(bits: torch.Tensor) -> torch.Tensor:
    """int8 codes from bits (..., 8) as made by `to_bits`."""
    return (bits.to(torch.int32) * BIT_VALUES.to(bits.device)).sum(-1).to(torch.int8)


@dataclass
class QuantLayer:
    """One quantised layer: int8 `codes` (flat), the `step` they are scaled by, and the module whose
    weight holds ``codes * step``."""

    name: str
    module: nn.Module
    codes: torch.Tensor
    step: float

    @property
    def weight(self) -> torch.Tensor:
        return self.module.weight

    def flip(self, indices: torch.Tensor, bits: torch.Tensor) -> None:
        """XOR bit `bits[i]` of weight `indices[i]` (flat index) for every i; the (index, bit) pairs
        must be distinct."""
        weights, inverse = torch.unique(indices, return_inverse=True)
        masks = torch.zeros(len(weights), dtype=torch.int32, device=indices.device)
        masks.index_add_(0, inverse, torch.ones_like(bits, dtype=torch.int32) << bits.to(torch.int32))
        new = (self.codes[weights].view(torch.uint8).to(torch.int32) ^ masks).to(torch.uint8).view(torch.int8)
        self.codes[weights] = new
        with torch.no_grad():
            self.weight.view(-1)[weights] = new.to(self.weight.dtype) * self.step


class QuantizedModel:
    """A deep copy of `model` in eval mode whose conv and linear weights are symmetric 8-bit per layer;
    `model` itself is never modified."""

    def __init__(self, model: nn.Module):
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.layers: list[QuantLayer] = []
        seen: set[int] = set()
        for name, module in self.model.named_modules():
            if not isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)) or id(module.weight) in seen:
                continue
            seen.add(id(module.weight))
            w = module.weight.detach()
            top = float(w.abs().max()) if w.numel() else 0.0
            step = top / 127 if top > 0 else 1.0
            codes = torch.round(w / step).clamp_(-127, 127).to(torch.int8).flatten()
            module.weight.data = (codes.to(w.dtype) * step).view_as(w).contiguous()
            self.layers.append(QuantLayer(name or "(model)", module, codes, step))
        if not self.layers:
            raise RobenchError("the model has no Conv or Linear layer to quantise; a bit-flip attack needs one.")

    def hamming(self, other: "QuantizedModel") -> int:
        """How many bits differ from `other` (a quantised copy of the same model)."""
        return sum(int(to_bits(a.codes ^ b.codes).sum()) for a, b in zip(self.layers, other.layers))
