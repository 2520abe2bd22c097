"""The ops bound propagation reads a network as (robench.defenses.bounds): affine layers with a forward
map, |W| and a transpose, and the linear relaxations of ReLU, MaxPool2d and k-winners-take-all; and the
conversion of one torch layer into its op."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from robench.errors import RobenchError
from robench.nets import KWinners, Normalize, SparseWeights

SUPPORTED = ("Linear, Conv2d, ReLU, MaxPool2d (no padding), Flatten, eval-mode BatchNorm1d/2d, AvgPool2d, "
             "AdaptiveAvgPool2d (dividing sizes), robench.nets.Normalize, SparseWeights and KWinners, Identity, "
             "eval-mode Dropout")

Box = tuple[torch.Tensor, torch.Tensor]


class CannotBound(RobenchError):
    """A model the bounds cannot read: an unsupported layer, not an nn.Sequential, not returning logits, or in
    low precision."""


class Affine:
    """An affine op v -> W v + b on batched tensors: `forward`, `abs_linear` (|W| r), `transpose`
    (A -> A W for coefficients A (B, S, *out)) and `bias` (A -> sum of A * b, (B, S))."""

    elementwise = False  # a diagonal W (or a permutation): IBP through it is exact

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def abs_linear(self, r: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def transpose(self, a: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def bias(self, a: torch.Tensor) -> torch.Tensor | None:
        return None


class LinearOp(Affine):
    def __init__(self, layer: nn.Linear, weight: torch.Tensor | None = None):
        self.w, self.b = layer.weight if weight is None else weight, layer.bias

    def forward(self, x):
        return F.linear(x, self.w, self.b)

    def abs_linear(self, r):
        return F.linear(r, self.w.abs())

    def transpose(self, a):
        return a @ self.w

    def bias(self, a):
        return None if self.b is None else a @ self.b


class ConvOp(Affine):
    def __init__(self, layer: nn.Conv2d, in_shape: torch.Size, out_shape: torch.Size, weight: torch.Tensor | None = None):
        self.w, self.b = layer.weight if weight is None else weight, layer.bias
        self.args = dict(stride=layer.stride, padding=layer.padding, dilation=layer.dilation, groups=layer.groups)
        k = layer.weight.shape[2:]
        self.output_padding = tuple(
            in_shape[1 + d] - ((out_shape[1 + d] - 1) * layer.stride[d] - 2 * layer.padding[d]
                               + layer.dilation[d] * (k[d] - 1) + 1) for d in range(2))
        self.in_shape = in_shape

    def forward(self, x):
        return F.conv2d(x, self.w, self.b, **self.args)

    def abs_linear(self, r):
        return F.conv2d(r, self.w.abs(), None, **self.args)

    def transpose(self, a):
        out = F.conv_transpose2d(a.flatten(0, 1), self.w, None, output_padding=self.output_padding, **self.args)
        return out.view(*a.shape[:2], *self.in_shape)

    def bias(self, a):
        return None if self.b is None else a.sum((-2, -1)) @ self.b


class ChannelOp(Affine):
    """v -> s v + t per channel (axis 1): robench's input Normalize and eval-mode BatchNorm."""

    elementwise = True

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor, in_shape: torch.Size):
        channels = in_shape[0]
        view = (channels, *[1] * (len(in_shape) - 1))
        self.s = scale.reshape(-1).expand(channels).reshape(view)
        self.t = shift.reshape(-1).expand(channels).reshape(view)

    def forward(self, x):
        return x * self.s + self.t

    def abs_linear(self, r):
        return r * self.s.abs()

    def transpose(self, a):
        return a * self.s

    def bias(self, a):
        return (a * self.t).flatten(2).sum(-1)


class FlattenOp(Affine):
    elementwise = True

    def __init__(self, in_shape: torch.Size):
        self.in_shape = in_shape

    def forward(self, x):
        return x.flatten(1)

    abs_linear = forward

    def transpose(self, a):
        return a.reshape(*a.shape[:2], *self.in_shape)


class AvgPoolOp(Affine):
    """Average pooling as a depthwise sum over windows (a conv with a kernel of ones) times a per-position
    divisor map."""

    def __init__(self, kernel, stride, padding, count_include_pad: bool, divisor: int | None,
                 in_shape: torch.Size, like: torch.Tensor):
        channels = in_shape[0]
        self.ones = torch.ones(channels, 1, *kernel, dtype=like.dtype, device=like.device)
        self.args = dict(stride=stride, padding=padding, groups=channels)
        if divisor:
            count = torch.full((1, 1, 1, 1), float(divisor), dtype=like.dtype, device=like.device)
        elif count_include_pad:
            count = torch.full((1, 1, 1, 1), float(math.prod(kernel)), dtype=like.dtype, device=like.device)
        else:
            count = F.conv2d(torch.ones(1, 1, *in_shape[1:], dtype=like.dtype, device=like.device),
                             self.ones[:1], stride=stride, padding=padding)
        self.scale = 1 / count
        out = self.forward(torch.zeros(1, *in_shape, dtype=like.dtype, device=like.device)).shape[1:]
        self.output_padding = tuple(in_shape[1 + d] - ((out[1 + d] - 1) * stride[d] - 2 * padding[d] + kernel[d])
                                    for d in range(2))
        self.in_shape = in_shape

    def forward(self, x):
        return F.conv2d(x, self.ones, **self.args) * self.scale

    abs_linear = forward

    def transpose(self, a):
        out = F.conv_transpose2d((a * self.scale).flatten(0, 1), self.ones, output_padding=self.output_padding,
                                 **self.args)
        return out.view(*a.shape[:2], *self.in_shape)


class ReluOp:
    """ReLU, relaxed by CROWN's lines: stable units exactly, an unstable one (l < 0 < u) by the upper line
    u (v - l) / (u - l) and the lower line a v, a = 1 when u > -l, else 0."""

    def interval(self, lo, hi):
        return lo.clamp(min=0), hi.clamp(min=0)

    def backward(self, a: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(A', c): A relu(v) >= A' v + c for v in [lo, hi], for coefficients `a` (B, S, *shape)."""
        upper_slope, intercept, lower_slope = relu_lines(lo, hi)
        out = a * torch.where(a >= 0, lower_slope.unsqueeze(1), upper_slope.unsqueeze(1))
        return out, dot(a.clamp(max=0), intercept)


def relu_lines(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per unit with pre-activation bounds [lo, hi]: the upper line's slope and intercept and the lower
    line's slope (stable active: 1, 0, 1; stable inactive: 0, 0, 0)."""
    unstable = (lo < 0) & (hi > 0)
    width = torch.where(unstable, hi - lo, torch.ones_like(lo))
    upper_slope = torch.where(unstable, hi / width, (lo >= 0).to(lo.dtype))
    intercept = torch.where(unstable, -lo * hi / width, torch.zeros_like(lo))
    lower_slope = ((lo >= 0) | (unstable & (hi > -lo))).to(lo.dtype)
    return upper_slope, intercept, lower_slope


class MaxPoolOp:
    """Max pooling over windows without padding, relaxed per window: max >= the input with the largest lower
    bound (v*); max <= v* where v*'s lower bound reaches every other input's upper bound (then max = v*),
    else max <= the largest upper bound."""

    def __init__(self, kernel, stride, in_shape: torch.Size):
        self.kernel, self.stride, self.in_shape = kernel, stride, in_shape

    def interval(self, lo, hi):
        return F.max_pool2d(lo, self.kernel, self.stride), F.max_pool2d(hi, self.kernel, self.stride)

    def backward(self, a, lo, hi):
        b, c = lo.shape[:2]
        kk, (h, w) = math.prod(self.kernel), self.in_shape[1:]
        windows = lambda t: F.unfold(t, self.kernel, stride=self.stride).view(b, c, kk, -1)
        low, high = windows(lo), windows(hi)
        best = low.argmax(2, keepdim=True)  # (B, C, 1, L)
        others = high.scatter(2, best, -math.inf).amax(2)
        exact = low.gather(2, best).squeeze(2) >= others  # (B, C, L)
        positions = F.unfold(torch.arange(h * w, dtype=lo.dtype, device=lo.device).view(1, 1, h, w), self.kernel,
                             stride=self.stride).view(kk, -1)
        where = positions.gather(0, best.flatten(0, 2)).view(b, c, -1).long()  # input position of v* per window
        coef = a.flatten(3)  # (B, S, C, L)
        on_best = torch.where(exact.unsqueeze(1) | (coef >= 0), coef, 0)
        const = dot(coef.clamp(max=0), torch.where(exact, 0, high.amax(2)))
        out = torch.zeros(*a.shape[:3], h * w, dtype=a.dtype, device=a.device)
        out.scatter_add_(3, where.unsqueeze(1).expand_as(coef), on_best)
        return out.view(*a.shape[:2], *self.in_shape), const


class KWinnersOp:
    """k-winners-take-all: per example, a unit passes when it is among the k largest of the layer, else it is
    0. A unit surely passes when fewer than k others can exceed its lower bound, and surely fails when at
    least k others surely exceed its upper bound; an undecided unit is v or 0, relaxed by the hull of both:
    for l < 0 < u the lines through (l, 0) and (u, u) above and (l, l) and (u, 0) below; v above and 0 below
    for l >= 0; 0 above and v below for u <= 0."""

    def __init__(self, k: int):
        self.k = k

    def decided(self, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(surely passes, surely fails) per unit, from the sorted bounds of each example's layer."""
        lo_flat, hi_flat = lo.flatten(1).contiguous(), hi.flatten(1).contiguous()
        n = lo_flat.shape[1]
        others_above = n - torch.searchsorted(hi_flat.sort(1).values, lo_flat, right=True) - (hi_flat > lo_flat).long()
        surely_above = n - torch.searchsorted(lo_flat.sort(1).values, hi_flat, right=True)  # never the unit itself
        return (others_above < self.k).view_as(lo), (surely_above >= self.k).view_as(lo)

    def interval(self, lo, hi):
        passes, fails = self.decided(lo, hi)
        undecided = ~passes & ~fails
        return (torch.where(undecided, lo.clamp(max=0), torch.where(fails, 0, lo)),
                torch.where(undecided, hi.clamp(min=0), torch.where(fails, 0, hi)))

    def backward(self, a, lo, hi):
        passes, fails = self.decided(lo, hi)
        undecided = ~passes & ~fails
        straddles = undecided & (lo < 0) & (hi > 0)
        width = torch.where(straddles, hi - lo, torch.ones_like(lo))
        one, zero = torch.ones_like(lo), torch.zeros_like(lo)
        upper_slope = torch.where(straddles, hi / width, torch.where(passes | (undecided & (lo >= 0)), one, zero))
        upper_intercept = torch.where(straddles, -lo * hi / width, zero)
        lower_slope = torch.where(straddles, -lo / width, torch.where(passes | (undecided & (hi <= 0)), one, zero))
        lower_intercept = torch.where(straddles, lo * hi / width, zero)
        out = a * torch.where(a >= 0, lower_slope.unsqueeze(1), upper_slope.unsqueeze(1))
        return out, dot(a.clamp(min=0), lower_intercept) + dot(a.clamp(max=0), upper_intercept)


Op = Affine | ReluOp | MaxPoolOp | KWinnersOp


def dot(a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """sum over the unit axes of A * v, for coefficients (B, S, *shape) and a value per unit (B, *shape)."""
    return torch.bmm(a.flatten(2), v.flatten(1).unsqueeze(2)).squeeze(2)


def layers_of(model: nn.Module) -> list[nn.Module]:
    if isinstance(model, nn.Sequential):
        return [leaf for child in model for leaf in layers_of(child)]
    return [model]


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def convert_layer(layer: nn.Module, in_shape: torch.Size, out_shape: torch.Size, like: torch.Tensor) -> Op | None:
    """The op of one layer (None for an identity); a CannotBound naming a layer it cannot bound."""
    if isinstance(layer, nn.Linear) and len(in_shape) == 1:
        return LinearOp(layer)
    if isinstance(layer, nn.Conv2d) and layer.padding_mode == "zeros" and not isinstance(layer.padding, str):
        return ConvOp(layer, in_shape, out_shape)
    if isinstance(layer, nn.ReLU):
        return ReluOp()
    if isinstance(layer, SparseWeights) and isinstance(layer.layer, nn.Linear) and len(in_shape) == 1:
        return LinearOp(layer.layer, layer.layer.weight * layer.mask)
    if (isinstance(layer, SparseWeights) and isinstance(layer.layer, nn.Conv2d) and layer.layer.padding_mode == "zeros"
            and not isinstance(layer.layer.padding, str)):
        return ConvOp(layer.layer, in_shape, out_shape, layer.layer.weight * layer.mask)
    if isinstance(layer, KWinners):
        return KWinnersOp(layer.k)
    if isinstance(layer, Normalize):
        return ChannelOp(1 / layer.std, -layer.mean / layer.std, in_shape)
    if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)) and not layer.training and layer.running_var is not None:
        scale = torch.rsqrt(layer.running_var + layer.eps)
        if layer.weight is not None:
            scale = scale * layer.weight
        shift = -layer.running_mean * scale + (layer.bias if layer.bias is not None else 0)
        return ChannelOp(scale, shift, in_shape)
    if isinstance(layer, nn.Flatten) and layer.start_dim == 1 and layer.end_dim == -1:
        return FlattenOp(in_shape)
    if isinstance(layer, nn.AvgPool2d) and not layer.ceil_mode:
        kernel = _pair(layer.kernel_size)
        return AvgPoolOp(kernel, _pair(layer.stride or kernel), _pair(layer.padding), layer.count_include_pad,
                         layer.divisor_override, in_shape, like)
    if isinstance(layer, nn.AdaptiveAvgPool2d):
        size = [s if s is not None else i for s, i in zip(_pair(layer.output_size), in_shape[1:])]
        if all(i % s == 0 for i, s in zip(in_shape[1:], size)):
            kernel = tuple(i // s for i, s in zip(in_shape[1:], size))
            return AvgPoolOp(kernel, kernel, (0, 0), True, None, in_shape, like)
    if (isinstance(layer, nn.MaxPool2d) and _pair(layer.padding) == (0, 0) and _pair(layer.dilation) == (1, 1)
            and not layer.ceil_mode and not layer.return_indices):
        kernel = _pair(layer.kernel_size)
        return MaxPoolOp(kernel, _pair(layer.stride or kernel), in_shape)
    if isinstance(layer, nn.Identity) or (isinstance(layer, nn.Dropout) and not layer.training):
        return None
    raise unsupported(layer)


def unsupported(layer: nn.Module) -> CannotBound:
    name = f"{type(layer).__name__}(...)" if list(layer.children()) else repr(layer)
    why = " in training mode (call model.eval())" if isinstance(layer, (nn.modules.batchnorm._BatchNorm,
                                                                        nn.Dropout)) and layer.training else ""
    return CannotBound(f"bound propagation cannot handle the layer {name}{why}; supported: {SUPPORTED}.")
