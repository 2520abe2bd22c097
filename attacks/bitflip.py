"""Bit-flip attacks on 8-bit quantised weights: the progressive bit search (BFA, Rakin et al. 2019) and
the random-flip baseline, with the threats `bitflip` and `bitflip-random`.

The pieces they stand on live beside this module: the quantisation and bit arithmetic in
attacks/quantization.py, the incremental fx evaluator in attacks/fx_evaluator.py, and the weight-attack
base class (`WeightAttack`, its proposals and result) in attacks/weights.py; their names are re-exported
here.
"""
from __future__ import annotations

import time
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from robench.attacks.fx_evaluator import FxEvaluator
from robench.attacks.quantization import BIT_VALUES, QuantizedModel, QuantLayer, from_bits, to_bits
from robench.attacks.weights import Proposal, Step, WeightAttack, WeightAttackResult
from robench.data import load_dataset
from robench.errors import RobenchError
from robench.inference import check_images, predict
from robench.metrics import Accuracy, accuracy, clopper_pearson
from robench.registry import ATTACKS
from robench.seeding import derived
from robench.report import Column, Curve, Report
from robench.threats import Kind, Outputs, Threat

__all__ = ["BIT_VALUES", "QuantLayer", "QuantizedModel", "from_bits", "to_bits", "Proposal", "Step",
           "WeightAttack", "WeightAttackResult", "FxEvaluator", "MARGIN_CAP", "margin_loss", "LOSSES", "BitFlipAttack",
           "RandomFlipAttack", "BitFlipThreat", "RandomFlipThreat"]


def _batch(pool: torch.Tensor | None, size: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    if pool is None or len(pool) < size:
        raise RobenchError(f"the bit-flip attack needs a pool of at least {size} training images to draw its "
                           f"batch from; got {0 if pool is None else len(pool)}.")
    batch = pool[torch.randperm(len(pool), generator=generator)[:size]]
    batch = batch.float().div_(255) if batch.dtype == torch.uint8 else batch
    check_images(batch)
    return batch.to(device)


#: where the margin loss stops counting an example: it is then well past the decision boundary
MARGIN_CAP = 10.0


def margin_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over examples of min(MARGIN_CAP, best other logit - logit of the label); logits (N, K)."""
    own = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.scatter(1, labels[:, None], float("-inf")).amax(1)
    return (other - own).clamp(max=MARGIN_CAP).mean()


#: objectives of the bit search: "ce" as in the paper; "margin" stops rewarding examples that are far
#: past the boundary, where cross-entropy keeps growing, so the search goes on to flip other examples
LOSSES = {"ce": F.cross_entropy, "margin": margin_loss}


@ATTACKS.register("bitflip")
class BitFlipAttack(WeightAttack):
    """Progressive bit search (Rakin et al. 2019). On a batch of `batch` pool images labelled with the
    quantised model's own predictions, each iteration: gradient of the cross-entropy for every layer;
    per layer, the `k` weights with the largest |grad| ("all": every weight) and their bit gradients
    ``grad * bit_value``; of the bits whose flip raises the loss to first order, the n with the largest
    |bit gradient| (n = 1 first); the loss with each layer's n flips applied, one layer at a time; the
    layer that raises the loss most wins; if none raises it, n grows by one. `loss`: the objective,
    "margin" (`margin_loss`, the default) or "ce" (cross-entropy, as in the paper). On the zoo's MNIST
    CNN (perf/bitflip.py) the margin search needed 30 flips to bring accuracy to 11% and cross-entropy 58:
    cross-entropy keeps rewarding examples already far past the boundary."""

    #: `dataset`: where the attack batches come from; None (the default) is the dataset being evaluated
    budget_parameters: ClassVar[dict] = {"flips": 100, "target": 0.11, "dataset": None, "seeds": 5}

    def __init__(self, *, k: int | str = 10, batch: int = 128, loss: str = "margin"):
        if not (k == "all" or isinstance(k, int) and k >= 1):
            raise RobenchError(f"k must be an integer >= 1 or 'all'; got {k!r}.")
        if not isinstance(batch, int) or batch < 1:
            raise RobenchError(f"batch must be an integer >= 1; got {batch!r}.")
        if loss not in LOSSES:
            raise RobenchError(f"loss must be one of {', '.join(LOSSES)}; got {loss!r}.")
        self.k, self.batch, self.loss = k, batch, loss

    def objective(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return LOSSES[self.loss](logits, labels)

    def _gains(self, layer: QuantLayer, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Candidate weights (flat indices, (K,)) and the first-order loss gain of flipping each of their
        bits ((K, 8); > 0 where the flip raises the loss)."""
        grad = grad.flatten()
        if self.k == "all" or self.k >= grad.numel():
            candidates = torch.arange(grad.numel(), device=grad.device)
        else:
            candidates = grad.abs().topk(self.k).indices
        bit_grad = grad[candidates, None] * (BIT_VALUES.to(grad) * layer.step)
        return candidates, bit_grad * (1 - 2 * to_bits(layer.codes[candidates]).to(grad))

    def search(self, quantized, generator, pool):
        device = quantized.layers[0].weight.device
        x = _batch(pool, self.batch, generator, device)
        labels = predict(quantized.model, x).argmax(1)
        weights = [layer.weight for layer in quantized.layers]
        evaluator = FxEvaluator(quantized, x)
        while True:
            start = time.perf_counter()
            for w in weights:
                w.requires_grad_(True)
            loss = self.objective(evaluator.full(grad=True), labels)
            grads = torch.autograd.grad(loss, weights)
            for w in weights:
                w.requires_grad_(False)
            base = float(loss.detach())
            gains = [self._gains(layer, g) for layer, g in zip(quantized.layers, grads)]
            allowed = [int((gain > 0).sum()) for _, gain in gains]
            for n in range(1, max(allowed) + 1):
                best: tuple[float, int, torch.Tensor, torch.Tensor] | None = None
                for i, ((candidates, gain), layer) in enumerate(zip(gains, quantized.layers)):
                    if allowed[i] < n:
                        continue
                    top = gain.flatten().topk(n).indices
                    indices, bits = candidates[top // 8], top % 8
                    layer.flip(indices, bits)
                    trial = float(self.objective(evaluator.after(i, keep=False), labels))
                    layer.flip(indices, bits)
                    if best is None or trial > best[0]:
                        best = (trial, i, indices, bits)
                if best is not None and best[0] > base:
                    yield Proposal(best[1], best[2], best[3], best[0], time.perf_counter() - start)
                    break
            else:
                return

    @classmethod
    def as_threat(cls, flips: int, target: float, dataset: str | None, seeds: int,
                  **hyperparameters: Any) -> "BitFlipThreat":
        return BitFlipThreat(cls(**hyperparameters), flips=flips, target=target, dataset=dataset,
                             batches=range(_check_seeds(seeds)))


@ATTACKS.register("bitflip-random")
class RandomFlipAttack(WeightAttack):
    """Random-flip baseline: each step flips one bit drawn uniformly from all bits of the quantised
    weights (so a layer is hit in proportion to its size), never one flipped before."""

    budget_parameters: ClassVar[dict] = {"flips": 100, "seeds": 5}

    def search(self, quantized, generator, pool):
        ends = torch.tensor([layer.codes.numel() for layer in quantized.layers]).cumsum(0)
        flipped: set[int] = set()
        while True:
            start = time.perf_counter()
            bit = int(torch.randint(8 * int(ends[-1]), (), generator=generator))
            if bit in flipped:
                continue
            flipped.add(bit)
            weight = bit // 8
            layer = int(torch.searchsorted(ends, weight, right=True))
            index = weight - (int(ends[layer - 1]) if layer else 0)
            device = quantized.layers[layer].codes.device
            yield Proposal(layer, torch.tensor([index], device=device), torch.tensor([bit % 8], device=device),
                           None, time.perf_counter() - start)

    @classmethod
    def as_threat(cls, flips: int, seeds: int) -> "RandomFlipThreat":
        return RandomFlipThreat(cls(), flips=flips, seeds=seeds)


# -- threats -----------------------------------------------------------------------------------------

def _check_budget(flips: Any) -> int:
    if not isinstance(flips, int) or isinstance(flips, bool) or flips < 1:
        raise RobenchError(f"flips must be an integer >= 1; got {flips!r}.")
    return flips


def _check_seeds(seeds: Any) -> int:
    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        raise RobenchError(f"seeds must be an integer >= 1; got {seeds!r}.")
    return seeds


def _curve(flips: np.ndarray, correct: np.ndarray, n: int) -> list[dict[str, Any]]:
    return [{"flips": int(f), "accuracy": int(c) / n, "ci95": list(clopper_pearson(int(c), n))}
            for f, c in zip(flips, correct)]


class BitFlipThreat(Threat):
    """Accuracy of the quantised model under the progressive bit search, flip by flip, and the flips it
    takes to bring accuracy to `target`, for `seeds` attack batches: the flips needed depend strongly on
    the batch (55 or 30 flips to 11% on the MNIST small CNN for two draws), so the headline is the median
    over batches with its range. Each batch is drawn (with its own random stream) from the training split
    of `dataset` (default: the dataset being evaluated, from the threat's context), found under the
    context's data root (``--data-root``, else ``$ROBENCH_DATA`` or the cache), and is its own part."""

    kind = Kind.WEIGHT_ATTACK
    version = 2  # v2: `seeds` attack batches, median and range (v1: one batch)
    shard_size = None

    def __init__(self, attack: BitFlipAttack, *, flips: int, target: float, dataset: str | None,
                 batches: range | tuple):
        self.attack = attack
        self.flips = _check_budget(flips)
        if not isinstance(target, (int, float)) or not 0 <= target <= 1:
            raise RobenchError(f"target must be an accuracy in [0, 1]; got {target!r}.")
        self.target, self.dataset, self.batches = float(target), dataset, tuple(batches)

    def parts(self) -> dict[str, "BitFlipThreat"]:
        if len(self.batches) == 1:
            return {"": self}
        return {f"batch={b}": BitFlipThreat(self.attack, flips=self.flips, target=self.target, dataset=self.dataset,
                                            batches=(b,)) for b in self.batches}

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        """The training images (uint8 (N, C, H, W)) the attack batches are drawn from: those of `dataset`,
        else of the evaluated dataset (the context `bind` gave), under the context's data root."""
        name = self.dataset or (self.context.dataset if self.context else None)
        if name is None:
            raise RobenchError("bitflip draws its attack batches from the training split of the evaluated dataset, "
                               "which it was not told: evaluate it through robench.evaluate (or bind a "
                               "ThreatContext), or give dataset=, e.g. bitflip:dataset=mnist.")
        images = load_dataset(name, "train", self.context.data_root if self.context else None).images
        if images.shape[1:] != x.shape[1:]:
            raise RobenchError(f"the {name} training images are {tuple(images.shape[1:])} but the "
                               f"evaluated images are {tuple(x.shape[1:])}; set dataset= to the evaluated "
                               "dataset, e.g. bitflip:dataset=cifar10, or leave it out.")
        return images

    def evaluate_shard(self, model, x, y, generator) -> Outputs:
        pool = self._pool(x)
        out: Outputs = {}
        for b in self.batches:
            result = self.attack(model, x, y, flips=self.flips, target=self.target, pool=pool,
                                 generator=derived(generator, "batch", b))
            trace = result.trace
            per_bit = [(s, step.layer, i, bit) for s, step in enumerate(trace)
                       for i, bit in zip(step.indices, step.bits)]
            out.update({
                "clean_correct": result.clean_correct.cpu().numpy(),
                "quantized_correct": result.quantized_correct.cpu().numpy(),
                f"final_correct@{b}": result.final_correct.cpu().numpy(),
                f"step_flips@{b}": np.array([s.flips for s in trace], dtype=np.int64),
                f"step_correct@{b}": np.array([s.correct for s in trace], dtype=np.int64),
                f"step_loss@{b}": np.array([s.loss for s in trace], dtype=np.float64),
                f"step_seconds@{b}": np.array([s.seconds for s in trace], dtype=np.float64),
                f"flip_step@{b}": np.array([p[0] for p in per_bit], dtype=np.int64),
                f"flip_layer@{b}": np.array([p[1] for p in per_bit], dtype=np.str_),
                f"flip_index@{b}": np.array([p[2] for p in per_bit], dtype=np.int64),
                f"flip_bit@{b}": np.array([p[3] for p in per_bit], dtype=np.int64),
                f"hamming@{b}": np.array([result.quantized.hamming(QuantizedModel(model))], dtype=np.int64),
            })
        return out

    def _to_target(self, outputs: Outputs, b: int) -> int | None:
        n = len(outputs["quantized_correct"])
        if outputs["quantized_correct"].mean() <= self.target:
            return 0
        reached = np.flatnonzero(outputs[f"step_correct@{b}"] / max(n, 1) <= self.target)
        return int(outputs[f"step_flips@{b}"][reached[0]]) if len(reached) else None

    def summarize(self, outputs: Outputs) -> dict[str, Any]:
        """The flips to the target per batch, their (lower) median and range; the trace, final accuracy and
        flipped bits of the median batch (unreached counts as more than `flips`)."""
        n = len(outputs["quantized_correct"])
        to_target = {b: self._to_target(outputs, b) for b in self.batches}
        ranked = sorted(self.batches, key=lambda b: (to_target[b] is None, to_target[b] or 0, b))
        median = ranked[(len(ranked) - 1) // 2]
        reached = [v for v in to_target.values() if v is not None]
        steps = outputs[f"step_flips@{median}"]
        seconds = np.concatenate([outputs[f"step_seconds@{b}"] for b in self.batches])
        return {
            "clean_accuracy": accuracy(outputs["clean_correct"]),
            "quantized_accuracy": accuracy(outputs["quantized_correct"]),
            "final_accuracy": accuracy(outputs[f"final_correct@{median}"]),
            "target": self.target,
            "flips_to_target": to_target[median],
            "flips_to_target_range": [min(reached) if reached else None,
                                      max(reached) if len(reached) == len(to_target) else None],
            "flips_to_target_per_batch": [to_target[b] for b in self.batches],
            "batches": len(self.batches),
            "median_batch": median,
            "flips": int(steps[-1]) if len(steps) else 0,
            "hamming_distance": int(outputs[f"hamming@{median}"][0]),
            "accuracy_per_flip": _curve(steps, outputs[f"step_correct@{median}"], n),
            "seconds_per_iteration": float(seconds.mean()) if len(seconds) else None,
            "flipped": [{"step": int(s), "layer": str(layer), "index": int(i), "bit": int(bit)}
                        for s, layer, i, bit in zip(*(outputs[f"flip_{k}@{median}"]
                                                      for k in ("step", "layer", "index", "bit")))],
        }

    def report(self, metrics: dict[str, Any]) -> Report:
        """Headline: the flips to the target accuracy (median over batches; ">N" when not reached within N,
        more is better); details: 8-bit accuracy, range over batches, final accuracy, flips, Hamming
        distance; the curve of accuracy against flips (8-bit accuracy at 0 flips)."""
        quantized = Accuracy.from_json(metrics["quantized_accuracy"])
        to_target = metrics["flips_to_target"]
        target = f"flips to {100 * metrics['target']:g}%"
        columns = [Column("8-bit", quantized),
                   Column(target, to_target if to_target is not None else f">{metrics['flips']}", head=target)]
        if "flips_to_target_range" in metrics:
            lo, hi = (f">{self.flips}" if v is None else v for v in metrics["flips_to_target_range"])
            columns += [Column("range over batches", f"{lo} to {hi}"), Column("batches", metrics["batches"])]
        columns += [Column("final", Accuracy.from_json(metrics["final_accuracy"])),
                    Column("flips", metrics["flips"]), Column("hamming", metrics["hamming_distance"])]
        points = [(0.0, quantized.value, *quantized.interval)] + [
            (float(p["flips"]), p["accuracy"], *p.get("ci95", (None, None))) for p in metrics["accuracy_per_flip"]]
        return Report(
            "BFA", "bit flips the progressive bit search (BFA) needs to bring the 8-bit model's accuracy to "
                   f"{100 * self.target:g}%", tuple(columns),
            (Curve("bitflip", "Accuracy under bit-flip attack", "bit flips", tuple(points)),),
            notes=("BFA flips: bit flips the progressive bit search needs to bring the 8-bit model's accuracy down "
                   "to the target, the median over attack batches (their range is in the detail table; more is "
                   "better; >N: not reached within N).",),
            provenance=(f"{len(self.batches)} attack batches of {self.attack.batch} "
                        f"{self.dataset or 'evaluated dataset'} training images",))


class RandomFlipThreat(Threat):
    """Accuracy of the quantised model after each of `flips` random bit flips, for `seeds` independent
    runs (seeds drawn from the threat's generator); the median over runs is the baseline."""

    kind = Kind.WEIGHT_ATTACK
    version = 2  # v2: bits drawn uniformly from the whole model (v1: a layer first, then a bit in it)
    shard_size = None

    def __init__(self, attack: RandomFlipAttack, *, flips: int, seeds: int):
        self.attack = attack
        self.flips = _check_budget(flips)
        self.seeds = _check_seeds(seeds)

    def evaluate_shard(self, model, x, y, generator) -> Outputs:
        seeds = torch.randint(2 ** 62, (self.seeds,), generator=generator).tolist()
        runs = [self.attack(model, x, y, flips=self.flips, generator=torch.Generator().manual_seed(s))
                for s in seeds]
        return {
            "clean_correct": runs[0].clean_correct.cpu().numpy(),
            "quantized_correct": runs[0].quantized_correct.cpu().numpy(),
            "seeds": np.array(seeds, dtype=np.int64),
            "correct": np.array([[s.correct for s in r.trace] for r in runs], dtype=np.int64),
        }

    def summarize(self, outputs: Outputs) -> dict[str, Any]:
        n = len(outputs["quantized_correct"])
        correct = outputs["correct"]
        median = np.median(correct, axis=0)
        final = correct[:, -1] / n
        quantized = outputs["quantized_correct"].mean()
        return {
            "clean_accuracy": accuracy(outputs["clean_correct"]),
            "quantized_accuracy": accuracy(outputs["quantized_correct"]),
            "flips": self.flips,
            "seeds": len(correct),
            "median_accuracy": float(np.median(final)),
            "median_drop": float(quantized - np.median(final)),
            "accuracy_per_seed": [float(a) for a in final],
            "median_accuracy_per_flip": [
                {"flips": f + 1, "accuracy": float(m) / n} for f, m in enumerate(median)],
        }

    def report(self, metrics: dict[str, Any]) -> Report:
        """Details only: 8-bit accuracy and the median accuracy after the random flips (the baseline of
        the bit-flip attack)."""
        return Report("random flips", f"accuracy of the 8-bit model after {self.flips} random bit flips, median "
                                      f"over {self.seeds} runs",
                      (Column("8-bit", Accuracy.from_json(metrics["quantized_accuracy"])),
                       Column(f"median acc. after {metrics['flips']} random flips %", metrics["median_accuracy"],
                              percent=True),
                       Column("seeds", metrics["seeds"])))
