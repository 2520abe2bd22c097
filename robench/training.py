"""The one training loop; training-time defenses plug into it through `TrainingDefense`."""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robench.data import DataSplit
from robench.errors import RobenchError
from robench.progress import bar as progress_bar
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
          progress: bool = True, checkpoint: str | Path | None = None) -> dict[str, Any]:
    """Train `model` in place on `data` with `recipe`, with the recipe's torch threads whatever the caller's
    setting; returns a summary (final loss, train accuracy, time, threads and the CPU kernels' instruction set).

    With `checkpoint` (a file path), the state after each epoch (weights, optimizer, schedule, random
    streams) is written there, and a killed run started again resumes after its last finished epoch, to
    the weights an uninterrupted run gives. A checkpoint of another recipe, torch build, CPU instruction
    set, CPU or device is not resumed from: training starts over. The caller removes the file when done."""
    if recipe.epochs < 1 or recipe.batch_size < 1 or recipe.lr <= 0 or recipe.threads < 1:
        raise RobenchError(f"recipe needs epochs, batch_size, threads >= 1 and lr > 0; got {recipe.as_dict()}.")
    with torch_threads(recipe.threads):
        summary = _train(model, data, recipe, device, progress, None if checkpoint is None else Path(checkpoint))
    from robench.about import cpu

    return {**summary, "torch_threads": recipe.threads, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu": cpu()}


def _train(model: nn.Module, data: DataSplit, recipe: Recipe, device: str | torch.device,
           progress: bool, checkpoint: Path | None) -> dict[str, Any]:
    defense = DEFENSES.create(recipe.defense, **recipe.defense_params) if recipe.defense else None
    generator = torch.Generator().manual_seed(recipe.seed)
    torch.manual_seed(recipe.seed)
    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    steps_per_epoch = -(-len(data) // recipe.batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, recipe.epochs * steps_per_epoch)
    state = _Checkpoint(checkpoint, recipe, device, model, optimizer, scheduler, generator)
    first = state.resume(progress)
    start = time.perf_counter()
    bar = progress_bar(total=recipe.epochs * steps_per_epoch, initial=first * steps_per_epoch, desc="train",
                       unit="batch", enabled=progress)
    seen = correct = 0
    loss_sum = 0.0
    for epoch in range(first, recipe.epochs):
        if defense is not None:
            defense.on_epoch(epoch, recipe.epochs, steps_per_epoch)
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
            loss = defense.loss(model, x, y, logits) if defense is not None else None
            if loss is None:
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
        if epoch + 1 < recipe.epochs:  # after the last epoch the caller writes the weights themselves
            state.save(epoch + 1)
    bar.close()
    model.eval()
    return {"train_loss": loss_sum / max(seen, 1), "train_accuracy": correct / max(seen, 1),
            "seconds": round(time.perf_counter() - start, 1), "device": str(device),
            **({"resumed_after_epoch": first} if first else {})}


class _Checkpoint:
    """The training state after an epoch in one file (torch.save of tensors and plain values, read back
    with weights_only=True), written atomically; nothing when the path is None."""

    def __init__(self, path: Path | None, recipe: Recipe, device, model, optimizer, scheduler, generator):
        from robench.about import cpu

        self.path, self.model, self.optimizer, self.scheduler, self.generator = path, model, optimizer, scheduler, generator
        self.setting = {"recipe": recipe.as_dict(), "torch": str(torch.__version__), "device": str(device),
                        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu": cpu(),
                        "threads": recipe.threads}

    def resume(self, progress: bool) -> int:
        """Restore the saved state if it is this training's; the number of epochs already done."""
        from robench.progress import note

        if self.path is None or not self.path.is_file():
            return 0
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
            usable = saved["setting"] == self.setting
        except Exception as exc:  # a damaged file: start over (it is rewritten after the first epoch)
            note(f"robench: ignoring the training checkpoint {self.path} ({type(exc).__name__}: {exc})",
                 enabled=progress)
            return 0
        if not usable:
            note(f"robench: the training checkpoint {self.path} is of another setting ({saved['setting']}); "
                 "starting over", enabled=progress)
            return 0
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.generator.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        note(f"robench: resuming after epoch {saved['epoch']} from {self.path}", enabled=progress)
        return int(saved["epoch"])

    def save(self, epoch: int) -> None:
        if self.path is None:
            return
        from robench.files import atomic_path

        state = {"setting": self.setting, "epoch": epoch, "model": self.model.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state()}
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)
