"""Logits of a quantised model on fixed images, recomputing after a change to one layer only the
computation from that layer on (torch.fx), from kept activations."""
from __future__ import annotations

from typing import Any

import torch
from torch import fx

from robench.attacks.quantization import QuantizedModel

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


class FxEvaluator:
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
