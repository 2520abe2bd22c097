"""Per-example norms of perturbations and the L2 helper every L2 attack steps and projects with."""
from __future__ import annotations

import torch

NORM_ORDERS = {"linf": float("inf"), "l2": 2, "l1": 1, "l0": 0}
#: how tables and figures write each norm
NORM_NAMES = {"linf": "Linf", "l2": "L2", "l1": "L1", "l0": "L0"}


def perturbation_norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-example norm (linf, l2, l1 or l0) of a perturbation (N, ...): shape (N,)."""
    return torch.linalg.vector_norm(delta.flatten(1), ord=NORM_ORDERS[norm], dim=1)


def l2_per_example(v: torch.Tensor) -> torch.Tensor:
    """The L2 norm of each example of `v` (N, ...), at least 1e-12, shaped (N, 1, ..., 1) to broadcast
    against `v`: ``v / l2_per_example(v)`` has unit norm, ``v * (eps / l2_per_example(v)).clamp(max=1)``
    is `v` projected onto the L2 ball of radius eps."""
    return v.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (v.dim() - 1)))
