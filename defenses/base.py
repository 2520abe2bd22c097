"""Base classes of defenses: training-time batch transforms and inference-time model wrappers."""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn


class TrainingDefense(ABC):
    """Transforms each training batch (augmentation, adversarial examples); used by robench.training.
    Parameters are keyword-only arguments of ``__init__``."""

    @abstractmethod
    def transform(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch to train on, from images `x` (N, C, H, W) in [0, 1] and labels `y` (N,)."""

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor) -> torch.Tensor | None:
        """The training loss of the batch (`x`, `y`) that `transform` returned, whose logits are `logits`, or
        None for the cross-entropy (e.g. a distillation loss)."""
        return None

    def penalty(self, model: nn.Module) -> torch.Tensor | None:
        """An extra loss term added to the training loss (e.g. a weight regulariser), or None."""
        return None

    @classmethod
    def depends_on(cls, params: dict) -> dict[str, str]:
        """Identities of what the trained weights depend on besides the recipe, for the parameters `params`
        (e.g. a teacher model's recipe hash), by name; the zoo's cache key includes them."""
        return {}

    def on_epoch(self, epoch: int, epochs: int, batches: int) -> None:
        """Called at the start of each epoch (0-based) of `epochs`, each of `batches` batches, e.g. for
        an eps warm-up."""


class InferenceDefense(nn.Module):
    """Wraps a base model at test time (e.g. the smoothed classifier)."""

    def __init__(self, base: nn.Module):
        super().__init__()
        self.base = base
