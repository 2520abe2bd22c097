"""Bit-flip attacks on 8-bit quantised weights: the progressive bit search (BFA, Rakin et al. 2019) and
the random-flip baseline, with the threats `bitflip` and `bitflip-random`.

Every conv and linear layer of a deep copy of the model is quantised per layer, symmetrically, to 8 bits:
``step = max|W| / 127``, codes ``round(W / step)`` in [-127, 127] held as int8 two's complement (bit
values 1, 2, 4, ..., 64, -128); the forward pass uses ``codes * step``. A flip XORs bits of the codes and
rewrites the matching dequantised weights, so flipping the same bits again restores them exactly.
"""
from __future__ import annotations

import copy
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator, final

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from robench.data import load_dataset
from robench.errors import RobenchError
from robench.inference import check_images, predict
from robench.metrics import accuracy, clopper_pearson
from robench.registry import ATTACKS
from robench.seeding import derived
from robench.threats import Outputs, Threat

#: value of bit b (0 = least significant) of an int8 in two's complement
BIT_VALUES = torch.tensor([1, 2, 4, 8, 16, 32, 64, -128], dtype=torch.int32)
_SHIFTS = torch.arange(8, dtype=torch.uint8)


def to_bits(codes: torch.Tensor) -> torch.Tensor:
    """The 8 bits (uint8 0/1, least significant first) of int8 `codes`: shape (*codes.shape, 8)."""
    return (codes.view(torch.uint8).unsqueeze(-1) >> _SHIFTS.to(codes.device)) & 1


def from_bits(bits: torch.Tensor) -> torch.Tensor:
    """int8 codes from bits (..., 8) as made by `to_bits`."""
    return (bits.to(torch.int32) * BIT_VALUES.to(bits.device)).sum(-1).to(torch.int8)


@dataclass
class QuantLayer:
    """One quantised layer: int8 `codes` (flat), the `step` they are scaled by, and the module whose
    weight holds ``codes * step``."""

    name: str
    module: nn.Module
    codes: torch.Tensor
    step: float

    @property
    def weight(self) -> torch.Tensor:
        return self.module.weight

    def flip(self, indices: torch.Tensor, bits: torch.Tensor) -> None:
        """XOR bit `bits[i]` of weight `indices[i]` (flat index) for every i; the (index, bit) pairs
        must be distinct."""
        weights, inverse = torch.unique(indices, return_inverse=True)
        masks = torch.zeros(len(weights), dtype=torch.int32, device=indices.device)
        masks.index_add_(0, inverse, torch.ones_like(bits, dtype=torch.int32) << bits.to(torch.int32))
        new = (self.codes[weights].view(torch.uint8).to(torch.int32) ^ masks).to(torch.uint8).view(torch.int8)
        self.codes[weights] = new
        with torch.no_grad():
            self.weight.view(-1)[weights] = new.to(self.weight.dtype) * self.step


class QuantizedModel:
    """A deep copy of `model` in eval mode whose conv and linear weights are symmetric 8-bit per layer;
    `model` itself is never modified."""

    def __init__(self, model: nn.Module):
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.layers: list[QuantLayer] = []
        seen: set[int] = set()
        for name, module in self.model.named_modules():
            if not isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)) or id(module.weight) in seen:
                continue
            seen.add(id(module.weight))
            w = module.weight.detach()
            top = float(w.abs().max()) if w.numel() else 0.0
            step = top / 127 if top > 0 else 1.0
            codes = torch.round(w / step).clamp_(-127, 127).to(torch.int8).flatten()
            module.weight.data = (codes.to(w.dtype) * step).view_as(w).contiguous()
            self.layers.append(QuantLayer(name or "(model)", module, codes, step))
        if not self.layers:
            raise RobenchError("the model has no Conv or Linear layer to quantise; a bit-flip attack needs one.")

    @property
    def num_bits(self) -> int:
        return 8 * sum(layer.codes.numel() for layer in self.layers)

    def hamming(self, other: "QuantizedModel") -> int:
        """How many bits differ from `other` (a quantised copy of the same model)."""
        return sum(int(to_bits(a.codes ^ b.codes).sum()) for a, b in zip(self.layers, other.layers))


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


class _Capture(fx.Interpreter):
    """Runs a traced model, storing the values of the nodes in `kept` into `keep` (detached)."""

    def __init__(self, graph: fx.GraphModule, kept: set[fx.Node], keep: dict[fx.Node, Any] | None):
        super().__init__(graph)
        self.kept, self.keep = kept, keep

    def run_node(self, node: fx.Node) -> Any:
        value = super().run_node(node)
        if self.keep is not None and node in self.kept:
            self.keep[node] = value.detach() if torch.is_tensor(value) else value
        return value


class _Evaluator:
    """Logits of a quantised model on fixed images `x`, in chunks of 1024 as `predict`. After a change to
    one quantised layer, only the computation from that layer on runs again, from kept activations
    (when torch.fx can trace the model and the kept activations fit in `cache_bytes`; else it all runs)."""

    def __init__(self, quantized: QuantizedModel, x: torch.Tensor, cache_bytes: int = 512 << 20):
        self.model, self.chunks, self.cache_bytes = quantized.model, x.split(1024), cache_bytes
        self.cache: list[dict[fx.Node, Any]] = []
        try:
            self.graph: fx.GraphModule | None = fx.symbolic_trace(self.model)
        except Exception:  # untraceable models are evaluated whole
            self.graph = None
            return
        nodes = list(self.graph.graph.nodes)
        order = {node: i for i, node in enumerate(nodes)}
        names = {layer.name: i for i, layer in enumerate(quantized.layers)}
        self.start = [len(nodes)] * len(quantized.layers)
        for node in nodes:  # first node that reads a layer's module or weight
            target = str(node.target).rsplit(".", 1)[0] if node.op == "get_attr" else node.target
            if node.op in ("call_module", "get_attr") and target in names:
                i = names[target]
                self.start[i] = min(self.start[i], order[node])
        # per layer: nodes before it whose values are read from it on; they are all that must be kept
        self.needed = [{n for n in nodes[:p] if any(order[u] >= p for u in n.users)} for p in self.start]
        self.prefix = [nodes[:p] for p in self.start]
        if len(nodes) in self.start:  # a layer the trace does not show reading its weight: run it all
            self.graph = None
        self.kept = set().union(*self.needed)

    def _run(self, x: torch.Tensor, env: dict[fx.Node, Any], keep: dict[fx.Node, Any] | None) -> torch.Tensor:
        return _Capture(self.graph, self.kept, keep).run(x, initial_env=env)

    def full(self, grad: bool = False) -> torch.Tensor:
        """Logits (N, K) of the whole model, differentiable with `grad`; refreshes the kept activations."""
        with torch.set_grad_enabled(grad):
            if self.graph is None:
                return torch.cat([self.model(c) for c in self.chunks])
            self.cache = [{} for _ in self.chunks]
            out = torch.cat([self._run(c, {}, keep) for c, keep in zip(self.chunks, self.cache)])
        size = sum(v.numel() * v.element_size() for keep in self.cache for v in keep.values() if torch.is_tensor(v))
        if size > self.cache_bytes:
            self.graph, self.cache = None, []
        return out

    def after(self, layer: int, keep: bool = True) -> torch.Tensor:
        """Logits (N, K) once quantised layer `layer` (alone) changed since the last `full` or kept
        `after`; `keep=False` leaves the kept activations as they were (for a trial change)."""
        if self.graph is None:
            return self.full()
        out = []
        with torch.no_grad():
            for c, cache in zip(self.chunks, self.cache):
                env = {n: cache.get(n) for n in self.prefix[layer]}
                out.append(self._run(c, env, cache if keep else None))
        return torch.cat(out)


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
        evaluator = _Evaluator(quantized, x.to(quantized.layers[0].weight.device))
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

    budget_parameters: ClassVar[dict] = {"flips": 100, "target": 0.11, "dataset": "mnist", "seeds": 5}

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
        evaluator = _Evaluator(quantized, x)
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
    def as_threat(cls, flips: int, target: float, dataset: str, seeds: int, **hyperparameters: Any) -> "BitFlipThreat":
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
    of `dataset`, found under the data root (``$ROBENCH_DATA`` or the cache), and is its own part."""

    kind = "weight-attack"
    version = 2  # v2: `seeds` attack batches, median and range (v1: one batch)
    shard_size = None

    def __init__(self, attack: BitFlipAttack, *, flips: int, target: float, dataset: str, batches: range | tuple):
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
        images = load_dataset(self.dataset, "train").images
        if images.shape[1:] != x.shape[1:]:
            raise RobenchError(f"the {self.dataset} training images are {tuple(images.shape[1:])} but the "
                               f"evaluated images are {tuple(x.shape[1:])}; set dataset= to the evaluated "
                               "dataset, e.g. bitflip:dataset=cifar10.")
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


class RandomFlipThreat(Threat):
    """Accuracy of the quantised model after each of `flips` random bit flips, for `seeds` independent
    runs (seeds drawn from the threat's generator); the median over runs is the baseline."""

    kind = "weight-attack"
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
