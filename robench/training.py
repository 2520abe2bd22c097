"""The one training loop; training-time defenses plug into it through `TrainingDefense`."""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from robench.data import DataSplit
from robench.errors import RobenchError
from robench.registry import DEFENSES

@contextmanager
def torch_threads(n: int):
    """Run the block with `n` torch intra-op threads, then restore the previous count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclass(frozen=True)
class Recipe:
    """How a zoo model is trained: an optional training-time defense with its parameters, Adam with
    `lr` (cosine-decayed to 0), `epochs` over the training split, a seed for init and shuffling, and the
    torch `threads` training runs with. CPU kernels split their float sums across threads, so the weights
    depend on the thread count (on 2 cores, 2 threads give other weights than 1); for a given count they
    depend only on torch's build and the CPU's instruction set (see leaderboards/README.md)."""

    defense: str | None = None
    defense_params: dict = field(default_factory=dict, hash=False)
    epochs: int = 3
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    threads: int = 1

    def as_dict(self) -> dict[str, Any]:
        recipe = {"defense": self.defense, "defense_params": dict(sorted(self.defense_params.items())),
                  "epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr, "seed": self.seed}
        if self.threads != 1:  # recipes of one thread keep the hash they had before threads were recorded
            recipe["threads"] = self.threads
        return recipe


def train(model: nn.Module, data: DataSplit, recipe: Recipe, *, device: str | torch.device = "cpu",
          progress: bool = True) -> dict[str, Any]:
    """Train `model` in place on `data` with `recipe`, with the recipe's torch threads whatever the caller's
    setting; returns a summary (final loss, train accuracy, time, threads and the CPU kernels' instruction set)."""
    if recipe.epochs < 1 or recipe.batch_size < 1 or recipe.lr <= 0 or recipe.threads < 1:
        raise RobenchError(f"recipe needs epochs, batch_size, threads >= 1 and lr > 0; got {recipe.as_dict()}.")
    with torch_threads(recipe.threads):
        summary = _train(model, data, recipe, device, progress)
    return {**summary, "torch_threads": recipe.threads, "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def _train(model: nn.Module, data: DataSplit, recipe: Recipe, device: str | torch.device,
           progress: bool) -> dict[str, Any]:
    defense = DEFENSES.create(recipe.defense, **recipe.defense_params) if recipe.defense else None
    generator = torch.Generator().manual_seed(recipe.seed)
    torch.manual_seed(recipe.seed)
    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    steps_per_epoch = -(-len(data) // recipe.batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, recipe.epochs * steps_per_epoch)
    start = time.perf_counter()
    bar = tqdm(total=recipe.epochs * steps_per_epoch, desc="train", unit="batch", disable=not progress)
    seen = correct = 0
    loss_sum = 0.0
    for epoch in range(recipe.epochs):
        if defense is not None:
            defense.on_epoch(epoch, recipe.epochs)
        order = torch.randperm(len(data), generator=generator)
        seen = correct = 0
        loss_sum = 0.0
        for i in range(0, len(data), recipe.batch_size):
            idx = order[i:i + recipe.batch_size]
            x = data.images[idx].to(device).float().div_(255)
            y = data.labels[idx].to(device)
            if defense is not None:
                x, y = defense.transform(model, x, y, generator)
                model.train()
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            penalty = defense.penalty(model) if defense is not None else None
            total = loss if penalty is None else loss + penalty
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            scheduler.step()
            seen += len(y)
            correct += int((logits.argmax(1) == y).sum())
            loss_sum += loss.item() * len(y)
            bar.update()
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
    bar.close()
    model.eval()
    return {"train_loss": loss_sum / max(seen, 1), "train_accuracy": correct / max(seen, 1),
            "seconds": round(time.perf_counter() - start, 1), "device": str(device)}
