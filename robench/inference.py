"""Checks on inputs and model outputs, and batched prediction, shared by every threat."""
from __future__ import annotations

import torch
from torch import nn

from robench.errors import RobenchError


def check_images(x: torch.Tensor, y: torch.Tensor | None = None) -> None:
    """Raise a clear error unless `x` is float (N, C, H, W) in [0, 1] and `y` int64 (N,)."""
    if not torch.is_tensor(x) or x.dim() != 4 or not x.is_floating_point():
        raise RobenchError(f"images must be a float tensor of shape (N, C, H, W); got "
                           f"{getattr(x, 'dtype', type(x).__name__)} {tuple(getattr(x, 'shape', ()))}.")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise RobenchError(f"images must lie in [0, 1] (got values in [{x.min():.3g}, {x.max():.3g}]); "
                           "scale inputs to [0, 1] and put normalisation inside the model.")
    if y is not None and (y.dim() != 1 or len(y) != len(x) or y.dtype != torch.int64):
        raise RobenchError(f"labels must be an int64 tensor of shape ({len(x)},); got {y.dtype} {tuple(y.shape)}.")


def check_logits(logits: torch.Tensor, n: int) -> None:
    """Raise unless a model's output is (n, classes)."""
    if not torch.is_tensor(logits) or logits.dim() != 2 or len(logits) != n:
        raise RobenchError(f"the model must return logits of shape (N, classes) = ({n}, K); got "
                           f"{tuple(getattr(logits, 'shape', ())) or type(logits).__name__}.")


def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Logits of `model` on `x`, batched, without gradients."""
    with torch.no_grad():
        parts = [model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    logits = torch.cat(parts) if parts else torch.empty(0, 0)
    check_logits(logits, len(x))
    return logits.float()
