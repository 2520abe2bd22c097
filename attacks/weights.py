"""The base class of weight attacks (bit flips on quantised weights), beside the input attacks' `Attack`
in attacks/base.py: a subclass proposes flips one step at a time; the final ``__call__`` applies them
within the budget and measures accuracy after each."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Iterator, final

import torch
from torch import nn

from robench.attacks.fx_evaluator import FxEvaluator
from robench.attacks.quantization import QuantizedModel
from robench.errors import RobenchError
from robench.inference import check_images, predict

@dataclass
class Proposal:
    """Bits a weight attack wants flipped next, in layer `layer` (index into QuantizedModel.layers);
    `loss` is the attack's objective once they are flipped (None where it has none)."""

    layer: int
    indices: torch.Tensor
    bits: torch.Tensor
    loss: float | None
    seconds: float


@dataclass
class Step:
    """One applied proposal: flat weight indices and bits flipped in `layer`, the objective `loss`,
    `correct` examples of the evaluation slice afterwards, cumulative `flips`, and search time."""

    layer: str
    indices: tuple[int, ...]
    bits: tuple[int, ...]
    loss: float | None
    correct: int
    flips: int
    seconds: float


@dataclass
class WeightAttackResult:
    """The attacked quantised model, the trace of steps, and per-example correctness (bool (N,)) of the
    original, the freshly quantised and the attacked model on the evaluation slice."""

    quantized: QuantizedModel
    trace: list[Step]
    clean_correct: torch.Tensor
    quantized_correct: torch.Tensor
    final_correct: torch.Tensor

    @property
    def model(self) -> nn.Module:
        return self.quantized.model

    @property
    def flips(self) -> int:
        return self.trace[-1].flips if self.trace else 0


class WeightAttack(ABC):
    """An attack on the quantised weights of a model. Hyperparameters are keyword-only arguments of
    ``__init__``; the budget `flips` is given at call time. Subclasses implement `search`, which proposes
    flips one step at a time; the final ``__call__`` quantises a copy of the model, applies each proposal,
    measures accuracy on the evaluation slice after it, and stops at the budget or the target accuracy."""

    @abstractmethod
    def search(self, quantized: QuantizedModel, generator: torch.Generator,
               pool: torch.Tensor | None) -> Iterator[Proposal]:
        """Proposals, each made on the model with all earlier proposals applied; `pool` holds images the
        attack may draw its data from."""

    @final
    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, flips: int,
                 target: float | None = None, pool: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> WeightAttackResult:
        """Attack a quantised copy of `model` with at most `flips` bit flips, stopping once accuracy on
        `x` (N, C, H, W) in [0, 1] with labels `y` is <= `target`. `pool`: images (float in [0, 1] or
        uint8) the attack draws its batch from."""
        check_images(x, y)
        if not isinstance(flips, int) or flips < 0:
            raise RobenchError(f"flips must be an integer >= 0; got {flips!r}.")
        if target is not None and not 0 <= target <= 1:
            raise RobenchError(f"target accuracy must lie in [0, 1]; got {target!r}.")
        generator = generator or torch.Generator().manual_seed(0)
        was_training = model.training
        try:
            model.eval()
            clean = predict(model, x).argmax(1) == y
            quantized = QuantizedModel(model)
        finally:
            model.train(was_training)
        evaluator = FxEvaluator(quantized, x.to(quantized.layers[0].weight.device))
        correct = evaluator.full().argmax(1).to(y.device) == y
        first = correct
        trace: list[Step] = []
        done = 0
        proposals = self.search(quantized, generator, pool)
        while done < flips and not (target is not None and correct.float().mean() <= target):
            proposal = next(proposals, None)
            if proposal is None or done + len(proposal.indices) > flips:
                break
            layer = quantized.layers[proposal.layer]
            layer.flip(proposal.indices, proposal.bits)
            done += len(proposal.indices)
            correct = evaluator.after(proposal.layer).argmax(1).to(y.device) == y
            trace.append(Step(layer.name, tuple(proposal.indices.tolist()), tuple(proposal.bits.tolist()),
                              proposal.loss, int(correct.sum()), done, proposal.seconds))
        proposals.close()
        return WeightAttackResult(quantized, trace, clean, first, correct)
