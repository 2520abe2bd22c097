"""Linf bound propagation through a feed-forward network: IBP, CROWN and CROWN-IBP (REFERENCE.md section 8).

A network (an ``nn.Sequential``, nested ones flattened) is read as a chain of ops v_0 -> v_1 -> ... -> v_L,
v_0 the input, v_L the logits. Affine ops (Linear, Conv2d, eval-mode BatchNorm, AvgPool, robench's
input `Normalize`, Flatten, SparseWeights' masked layers) have a forward map, |W| and a transpose; ReLU,
MaxPool2d and k-winners-take-all are relaxed.
`intervals[i]` is the box of v_i (the input of op i). A specification matrix C (B, S, K) over the logits
is folded into the last affine ops: IBP bounds C v_L through the affine tail exactly from the box of the
last nonlinear op's output; CROWN and CROWN-IBP propagate C back to the input. Bounds are computed in
the dtype of the input (fp32 or fp64); low precision is refused, since a certificate computed in bf16 is
not a certificate. Gradients flow through every bound (for certified training).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from robench.errors import RobenchError
from robench.nets import KWinners, Normalize, SparseWeights

METHODS = ("ibp", "crown-ibp", "crown")
SUPPORTED = ("Linear, Conv2d, ReLU, MaxPool2d (no padding), Flatten, eval-mode BatchNorm1d/2d, AvgPool2d, "
             "AdaptiveAvgPool2d (dividing sizes), robench.nets.Normalize, SparseWeights and KWinners, Identity, "
             "eval-mode Dropout")
#: elements of the largest coefficient tensor one backward pass of CROWN's intermediate bounds holds
CHUNK_ELEMENTS = 1 << 24

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
        return out, _dot(a.clamp(max=0), intercept)


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
        const = _dot(coef.clamp(max=0), torch.where(exact, 0, high.amax(2)))
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
        return out, _dot(a.clamp(min=0), lower_intercept) + _dot(a.clamp(max=0), upper_intercept)


Op = Affine | ReluOp | MaxPoolOp | KWinnersOp


def _dot(a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """sum over the unit axes of A * v, for coefficients (B, S, *shape) and a value per unit (B, *shape)."""
    return torch.bmm(a.flatten(2), v.flatten(1).unsqueeze(2)).squeeze(2)


def _layers(model: nn.Module) -> list[nn.Module]:
    if isinstance(model, nn.Sequential):
        return [leaf for child in model for leaf in _layers(child)]
    return [model]


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _convert(layer: nn.Module, in_shape: torch.Size, out_shape: torch.Size, like: torch.Tensor) -> Op | None:
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
    raise _unsupported(layer)


def _unsupported(layer: nn.Module) -> CannotBound:
    name = f"{type(layer).__name__}(...)" if list(layer.children()) else repr(layer)
    why = " in training mode (call model.eval())" if isinstance(layer, (nn.modules.batchnorm._BatchNorm,
                                                                        nn.Dropout)) and layer.training else ""
    return CannotBound(f"bound propagation cannot handle the layer {name}{why}; supported: {SUPPORTED}.")


class BoundedNet:
    """The ops of `model` (an nn.Sequential of supported layers) for inputs of shape `input_shape`
    (C, H, W), with the bounds of IBP, CROWN-IBP and CROWN."""

    def __init__(self, model: nn.Module, input_shape: torch.Size, like: torch.Tensor):
        check_arithmetic(model, like)
        layers = _layers(model)
        if len(layers) == 1 and layers[0] is model and list(model.children()):
            raise CannotBound(f"bound propagation reads a model as an nn.Sequential of layers; "
                               f"{type(model).__name__} is not one (its forward cannot be read): rebuild it as "
                               f"nn.Sequential of {SUPPORTED}.")
        self.ops: list[Op] = []
        self.shapes = [torch.Size(input_shape)]
        value = torch.zeros(1, *input_shape, dtype=like.dtype, device=like.device)
        with torch.no_grad():
            for layer in layers:
                if isinstance(layer, nn.modules.batchnorm._BatchNorm) and layer.training:
                    raise _unsupported(layer)  # before its forward, which would update its statistics
                try:
                    out = layer(value)
                except Exception as exc:
                    raise CannotBound(f"bound propagation: layer {layer!r} fails on inputs of shape "
                                       f"{tuple(value.shape[1:])}: {exc}") from None
                op = _convert(layer, value.shape[1:], out.shape[1:], like)
                if op is not None:
                    self.ops.append(op)
                    self.shapes.append(out.shape[1:])
                value = out
        if value.dim() != 2:
            raise CannotBound(f"bound propagation needs a model returning logits (N, classes); this one returns "
                               f"{tuple(value.shape)}.")
        self.classes = value.shape[1]
        nonlinear = [i for i, op in enumerate(self.ops) if not isinstance(op, Affine)]
        #: the node after the last nonlinear op (0 if there is none): IBP bounds the affine tail from its box
        self.tail = nonlinear[-1] + 1 if nonlinear else 0

    def intervals(self, box: Box, refine: Callable[[int, list[Box]], Box] | None = None) -> list[Box]:
        """IBP boxes of v_0 ... v_L from the input `box`; `refine(i, boxes)` may tighten the box of a
        ReLU's input v_i given the boxes so far."""
        boxes = [box]
        for i, op in enumerate(self.ops):
            lo, hi = boxes[-1]
            if isinstance(op, ReluOp) and refine is not None:
                lo, hi = boxes[-1] = refine(i, boxes)
            if isinstance(op, Affine):
                centre, radius = op.forward((hi + lo) / 2), op.abs_linear((hi - lo) / 2)
                boxes.append((centre - radius, centre + radius))
            else:
                boxes.append(op.interval(lo, hi))
        return boxes

    def backward(self, a: torch.Tensor, start: int, boxes: list[Box], stop: int = 0) -> torch.Tensor:
        """Lower bounds (B, S) of A v_start, for coefficients `a` (B, S, *shape of v_start), by linear
        relaxation of the ops from `start` back to node `stop`, minimised over the box of v_stop."""
        total = torch.zeros(a.shape[:2], dtype=a.dtype, device=a.device)
        for i in range(start - 1, stop - 1, -1):
            op = self.ops[i]
            if isinstance(op, Affine):
                bias = op.bias(a)
                if bias is not None:
                    total = total + bias
                a = op.transpose(a)
            else:
                a, const = op.backward(a, *boxes[i])
                total = total + const
        lo, hi = boxes[stop]
        return total + _dot(a, (hi + lo) / 2) - _dot(a.abs(), (hi - lo) / 2)

    def crown_refine(self, i: int, boxes: list[Box]) -> Box:
        """The box of v_i tightened by CROWN for the units whose IBP box is unstable (l < 0 < u), rows of
        them `CHUNK_ELEMENTS` at a time. Kept as IBP's where IBP is exact: no nonlinear op before v_i and
        at most one affine op that mixes units."""
        lo, hi = boxes[i]
        if all(isinstance(op, Affine) for op in self.ops[:i]) and \
                sum(not op.elementwise for op in self.ops[:i]) <= 1:
            return lo, hi
        b = lo.shape[0]
        flat_lo, flat_hi = lo.flatten(1), hi.flatten(1)
        unstable = (flat_lo < 0) & (flat_hi > 0)
        count = int(unstable.sum(1).max()) if b else 0
        if count == 0:
            return lo, hi
        order = torch.argsort(unstable.to(torch.int8), dim=1, descending=True, stable=True)[:, :count]  # (B, count)
        n = flat_lo.shape[1]
        rows = max(1, CHUNK_ELEMENTS // (2 * b * max(s.numel() for s in self.shapes[:i + 1])))
        for start in range(0, count, rows):
            idx = order[:, start:start + rows]
            r = idx.shape[1]
            eye = F.one_hot(idx, n).to(lo.dtype)  # (B, r, n)
            a = torch.cat([eye, -eye], 1).view(b, 2 * r, *lo.shape[1:])
            bound = self.backward(a, i, boxes)
            flat_lo = flat_lo.scatter(1, idx, torch.maximum(flat_lo.gather(1, idx), bound[:, :r]))
            flat_hi = flat_hi.scatter(1, idx, torch.minimum(flat_hi.gather(1, idx), -bound[:, r:]))
        return flat_lo.view_as(lo), flat_hi.view_as(hi)

    def bound(self, spec: torch.Tensor, box: Box, method: str) -> torch.Tensor:
        """Lower bounds (B, S) of spec @ logits for every input in `box` ((B, C, H, W) each), by `method`."""
        if method == "ibp":
            boxes = self.intervals(box)
            return self.backward(spec, len(self.ops), boxes, stop=self.tail)
        if method == "crown-ibp":
            return self.backward(spec, len(self.ops), self.intervals(box))
        if method == "crown":
            return self.backward(spec, len(self.ops), self.intervals(box, self.crown_refine))
        raise RobenchError(f"bound method must be one of {', '.join(METHODS)}; got {method!r}.")

    def ibp_and_crown_ibp(self, spec: torch.Tensor, box: Box) -> tuple[torch.Tensor, torch.Tensor]:
        """The IBP and CROWN-IBP lower bounds of spec @ logits from one IBP pass (for training)."""
        boxes = self.intervals(box)
        return (self.backward(spec, len(self.ops), boxes, stop=self.tail),
                self.backward(spec, len(self.ops), boxes))


def check_arithmetic(model: nn.Module, like: torch.Tensor) -> None:
    """Refuse bounds in low precision: half or bfloat16 inputs or weights, or an active autocast."""
    low = [t.dtype for t in (like, *model.parameters(), *model.buffers())
           if t.is_floating_point() and t.dtype not in (torch.float32, torch.float64)]
    autocast = torch.is_autocast_enabled(like.device.type)
    if low or autocast:
        what = f"{low[0]}" if low else "autocast"
        raise CannotBound(f"bound propagation runs in fp32 or fp64 only, here it would run in {what}: a certificate "
                           "computed in low precision is not a certificate (rounding can make a bound wrong); "
                           "use the model and inputs in fp32 outside autocast.")


def input_box(x: torch.Tensor, eps: float) -> Box:
    """The Linf ball of radius `eps` around images `x` in [0, 1], intersected with [0, 1]."""
    return (x - eps).clamp(min=0), (x + eps).clamp(max=1)


def margin_spec(y: torch.Tensor, classes: int, dtype: torch.dtype) -> torch.Tensor:
    """C (N, K, K) with rows e_y - e_k: C @ logits are the margins z_y - z_k (row y is zero)."""
    eye = torch.eye(classes, dtype=dtype, device=y.device)
    return eye[y].unsqueeze(1) - eye.unsqueeze(0)


def margin_bounds(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, method: str) -> torch.Tensor:
    """Lower bounds (N, K) of the margins z_y - z_k of `model` over the Linf ball of radius `eps` around
    images `x` (N, C, H, W) in [0, 1] (clipped to [0, 1]); 0 at k = y. All positive off y: certified."""
    net = BoundedNet(model, x.shape[1:], x)
    return net.bound(margin_spec(y, net.classes, x.dtype), input_box(x, eps), method)


def certified_margin(bounds: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The certified margin (N,) from margin bounds (N, K): the smallest bound over k != y."""
    return bounds.scatter(1, y.unsqueeze(1), math.inf).amin(1)
