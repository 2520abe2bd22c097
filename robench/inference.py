"""Checks on devices, inputs, models and their outputs, and batched prediction, shared by every threat."""
from __future__ import annotations

import warnings

import torch
from torch import nn

from robench.errors import RobenchError


#: the arithmetic a model's forward (and backward) passes may run in: "fp32" as the model is, or "bf16" /
#: "fp16" under torch.autocast with that dtype (faster on hardware with fast half-precision units; different
#: arithmetic, so only on request). Attacks and certifiers that take a `precision` read it here.
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str) -> str:
    """`precision` itself when it names one of PRECISIONS; else a RobenchError listing them."""
    if precision not in PRECISIONS:
        raise RobenchError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}.")
    return precision


def out_of_memory(error: BaseException) -> bool:
    """`error` is an allocator's failure: CUDA's OutOfMemoryError, or the CPU allocator's RuntimeError."""
    text = str(error)
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in text or "can't allocate memory" in text


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`device` as a torch.device (None: cuda if available, else cpu); an error unless it exists here."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise RobenchError(f"device {str(device)!r} is not a torch device; give cpu, cuda or cuda:N.") from None
    if dev.type == "cpu":
        return dev
    backend = getattr(torch, dev.type, None)  # torch.cuda, torch.mps, torch.xpu
    count = backend.device_count() if hasattr(backend, "is_available") and backend.is_available() else 0
    if not count:
        hint = " (torch.cuda.is_available() is False: check the GPU driver and CUDA_VISIBLE_DEVICES)"
        raise RobenchError(f"device {str(device)!r}: no {dev.type.upper()} device is visible here"
                           f"{hint if dev.type == 'cuda' else ''}; use --device cpu.")
    if dev.index is not None and dev.index >= count:
        raise RobenchError(f"device {str(device)!r} does not exist: {count} {dev.type.upper()} device(s) are "
                           f"visible, {dev.type}:0 to {dev.type}:{count - 1}.")
    return dev


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
    """Raise unless a model's output is finite (n, classes)."""
    if not torch.is_tensor(logits) or logits.dim() != 2 or len(logits) != n:
        raise RobenchError(f"the model must return logits of shape (N, classes) = ({n}, K); got "
                           f"{tuple(getattr(logits, 'shape', ())) or type(logits).__name__}.")
    bad = int((~torch.isfinite(logits)).any(1).sum())
    if bad:
        raise RobenchError(f"the model returned NaN or infinite logits for {bad} of {n} examples; check its weights "
                           "(a diverged training run) and its forward pass (a division by zero, a log of 0).")


def looks_like_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Per row of a model's outputs (N, classes): all in [0, 1] and summing to 1 (probabilities, not logits)."""
    inside = (logits >= 0).all(1) & (logits <= 1).all(1)
    return inside & ((logits.sum(1) - 1).abs() <= 1e-4)


def warn_if_probabilities(logits: torch.Tensor) -> None:
    """Warn when a model's outputs (N, classes) look like probabilities rather than logits (every row, see
    `looks_like_probabilities`): the calibration metrics apply softmax to them and gradient attacks weaken."""
    if len(logits) and bool(looks_like_probabilities(logits).all()):
        warnings.warn("the model's outputs look like probabilities (rows in [0, 1] summing to 1), not logits: "
                      "accuracy is unaffected, but NLL, Brier and ECE apply softmax to them and come out wrong, "
                      "and gradient attacks are weakened; remove the final softmax so the model returns logits.",
                      stacklevel=2)


def check_weights(model: nn.Module) -> None:
    """Raise, naming the first one, if a floating parameter or buffer of `model` holds NaN or inf."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            bad = int((~torch.isfinite(tensor)).sum())
            raise RobenchError(f"the model's {name} holds {bad} NaN or infinite value(s) of {tensor.numel()}; "
                               "the weights are corrupt or their training diverged: retrain or fetch them again.")


def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Logits of `model` on `x`, batched, without gradients."""
    with torch.no_grad():
        parts = [model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    logits = torch.cat(parts) if parts else torch.empty(0, 0)
    check_logits(logits, len(x))
    return logits.float()
