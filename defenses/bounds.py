"""Linf bound propagation through a feed-forward network: IBP, CROWN and CROWN-IBP (REFERENCE.md section 8).

A network (an ``nn.Sequential``, nested ones flattened) is read as a chain of ops v_0 -> v_1 -> ... -> v_L,
v_0 the input, v_L the logits. Affine ops (Linear, Conv2d, eval-mode BatchNorm, AvgPool, robench's
input `Normalize`, Flatten, SparseWeights' masked layers) have a forward map, |W| and a transpose; ReLU,
MaxPool2d and k-winners-take-all are relaxed (the ops: robench.defenses.bound_ops).
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

from robench.defenses.bound_ops import (SUPPORTED, Affine, Box, CannotBound, Op, ReluOp, convert_layer, dot, layers_of,
                                        unsupported)
from robench.errors import RobenchError

METHODS = ("ibp", "crown-ibp", "crown")
#: elements of the largest coefficient tensor one backward pass of CROWN's intermediate bounds holds
CHUNK_ELEMENTS = 1 << 24


class BoundedNet:
    """The ops of `model` (an nn.Sequential of supported layers) for inputs of shape `input_shape`
    (C, H, W), with the bounds of IBP, CROWN-IBP and CROWN."""

    def __init__(self, model: nn.Module, input_shape: torch.Size, like: torch.Tensor):
        check_arithmetic(model, like)
        layers = layers_of(model)
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
                    raise unsupported(layer)  # before its forward, which would update its statistics
                try:
                    out = layer(value)
                except Exception as exc:
                    raise CannotBound(f"bound propagation: layer {layer!r} fails on inputs of shape "
                                       f"{tuple(value.shape[1:])}: {exc}") from None
                op = convert_layer(layer, value.shape[1:], out.shape[1:], like)
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
        return total + dot(a, (hi + lo) / 2) - dot(a.abs(), (hi - lo) / 2)

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
