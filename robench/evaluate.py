"""The benchmark loop: (model, threat, data slice) -> Record, shard by shard through the results store."""
from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from robench import naming
from robench.data import DataSlice, load_dataset
from robench.errors import RobenchError
from robench.executors import LocalExecutor
from robench.identity import code_digest, weights_digest
from robench.inference import check_logits, check_weights, out_of_memory, resolve_device, warn_if_probabilities
from robench.progress import bar as progress_bar, note
from robench.spec import ThreatSpec
from robench.store import Store
from robench.threats import Outputs, Threat, ThreatContext, build_threat
from robench.version import __version__, git_commit


@dataclass
class Record:
    """One threat on one model over one data slice: metrics plus the provenance that identifies it."""

    model: str
    threat: str
    kind: str
    dataset: str
    split: str
    n: int
    metrics: dict[str, Any]
    provenance: dict[str, Any] = field(default_factory=dict)
    #: per-example outputs of the threat, only when asked for (``evaluate(..., with_outputs=True)``)
    outputs: Outputs | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["outputs"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Record":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k != "outputs"})


def model_fingerprint(model: nn.Module) -> str:
    """sha256 of a model's weights (robench.identity.weights_digest): the "model_sha256" of a Record."""
    return weights_digest(model)


@functools.lru_cache(maxsize=1)
def _environment() -> dict[str, Any]:
    import foolbox
    import torchvision

    from robench.about import cpu

    return {"robench": __version__, "git_commit": git_commit(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "foolbox": foolbox.__version__, "cpu": cpu()}


def _indices_text(indices: np.ndarray) -> str:
    """Compact form of example indices: "0:1000" for a contiguous run, else the comma-separated list."""
    if len(indices) and np.array_equal(indices, np.arange(indices[0], indices[0] + len(indices))):
        return f"{indices[0]}:{indices[0] + len(indices)}"
    return ",".join(map(str, indices.tolist()))


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def check_model(model: nn.Module, data: DataSlice, device: torch.device) -> None:
    """Fail early, with a clear message, when a model has NaN weights or does not map images to
    (N, classes) finite logits; warn when its outputs look like probabilities."""
    check_weights(model)
    try:
        with torch.no_grad():
            logits = model(data.x[:2].to(device))
    except Exception as exc:
        raise RobenchError(f"the model failed on a batch of shape {tuple(data.x[:2].shape)} from "
                           f"{data.dataset}: {type(exc).__name__}: {exc}") from None
    check_logits(logits, min(2, len(data)))
    warn_if_probabilities(logits)
    if logits.shape[1] <= int(data.y.max()):
        raise RobenchError(f"the model returns {logits.shape[1]} classes but {data.dataset} has labels up to "
                           f"{int(data.y.max())}.")


#: bump when a change to the loop changes results of every threat (seeds, shards), so stored results and
#: leaderboard entries become stale. v2: shard sizes from the threat's cost, seeds independent of the model;
#: v3: a shard's seed from the threat's name, not its whole spec
EVALUATION_VERSION = 3

#: the work of one task, in forward-pass FLOPs: about half a minute on one core of a 2020s CPU, so a
#: killed run loses about that much of each task in flight
TASK_FLOPS = 3e11


def forward_flops(model: nn.Module, x: torch.Tensor) -> float:
    """FLOPs of one forward pass of `model` on the batch `x`, counted by torch (matrix products and
    convolutions); twice the parameter count per example where counting fails."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(x)
        flops = float(counter.get_total_flops())
    except Exception:  # an operation the counter cannot trace: fall back on the model's size
        flops = 0.0
    return flops or 2.0 * len(x) * sum(p.numel() for p in model.parameters())


def shard_size_for(threat: Threat, model: nn.Module, example: torch.Tensor) -> int | None:
    """Examples per shard: as many as fit TASK_FLOPS for the threat's costliest part on this model (one
    example `example` (1, C, H, W) measures it), at least the threat's `min_shard_size` and at most its
    `shard_size`; None for threats evaluated on the whole slice at once. It depends on the model and the
    threat only, so results do not depend on the machine."""
    if threat.shard_size is None:
        return None
    cost = max(part.cost for part in threat.parts().values()) * forward_flops(model, example)
    return min(threat.shard_size, max(threat.min_shard_size, int(TASK_FLOPS // cost)))


@dataclass
class ShardTask:
    """One part (see `Threat.parts`) of one shard of one threat: examples start..stop-1 of the slice,
    the store key and the seed (the shard's, shared by its parts)."""

    start: int
    stop: int
    key: str
    seed: int
    x: torch.Tensor
    y: torch.Tensor
    part: str = ""
    #: the examples' indices in the dataset split (the threat's ``context.indices`` for this shard)
    indices: np.ndarray | None = None
    #: the outputs of the part this one continues (its `after`) on the same shard; None for independent parts
    previous: Outputs | None = None


def compute_shard(shared: tuple[nn.Module, dict[str, Threat], str], task: ShardTask) -> Outputs:
    """Evaluate one part of one shard; `shared` is (model, the threat's parts, device), the same for every
    task of a threat (executors ship it once)."""
    model, parts, device = shared
    dev = torch.device(device)
    generator = torch.Generator(device=dev).manual_seed(task.seed)
    part = parts[task.part] if task.indices is None else parts[task.part].at(task.indices)
    if task.previous is not None:
        part = part.following(task.previous)
    try:
        outputs = part.evaluate_shard(model.to(dev).eval(), task.x.to(dev), task.y.to(dev), generator)
    except (torch.OutOfMemoryError, RuntimeError) as error:
        if not out_of_memory(error):
            raise
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        raise ShardOutOfMemory(f"a shard of {task.stop - task.start} examples ran out of memory on {dev}") from None
    return {k: np.asarray(v) for k, v in outputs.items()}


class ShardOutOfMemory(RobenchError):
    """A shard's evaluation ran out of memory; the loop halves the shard size and evaluates again."""


def evaluate(model: nn.Module | str, threats: str | ThreatSpec | Threat | Sequence[str | ThreatSpec | Threat], *,
             dataset: str = "mnist", split: str = "test", n: int | None = None,
             indices: Sequence[int] | None = None, data_root: str | None = None,
             store: Store | str | None = None, seed: int = 0, device: str | torch.device | None = None,
             model_name: str | None = None, shard_size: int | None = None, progress: bool = True,
             executor: Any = None, with_outputs: bool = False) -> list[Record]:
    """Evaluate `model` (an nn.Module taking images in [0, 1], or a zoo name or ``package.module:callable``
    loaded by robench.zoo.resolve) under each threat on the first `n` examples (or the given `indices`) of
    `dataset`/`split`; returns one Record per threat.

    Finished shards and Records go to `store` (a Store or a path; default ``$ROBENCH_CACHE/results.sqlite``),
    so a repeated call is served from cache and an interrupted one resumes. With `with_outputs`, each
    Record also carries the threat's per-example outputs (e.g. certified radii)."""
    from robench import zoo

    if isinstance(model, str):
        model_name = model_name or model
        model = zoo.resolve(model, dataset=dataset, data_root=data_root, progress=progress)
    if not isinstance(model, nn.Module):
        raise RobenchError(f"model must be a torch.nn.Module, a zoo name or package.module:callable; "
                           f"got {type(model).__name__}.")
    model_name = model_name or naming.model_name(model)
    data = load_dataset(dataset, split, data_root).select(n=n, indices=indices)
    dev = resolve_device(device)
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.to(dev).eval()
        check_model(model, data, dev)
        identity = {"model_sha256": model_fingerprint(model), "model_code": code_digest(model)}
        store = store if isinstance(store, Store) else Store(store)
        executor = executor or LocalExecutor()
        if isinstance(threats, (str, ThreatSpec, Threat)):
            threats = [threats]
        built = [t if isinstance(t, Threat) else build_threat(t) for t in threats]
        context = ThreatContext(data.dataset, data.split, None if data_root is None else str(data_root), data.indices)
        return [_evaluate_threat(model, model_name, identity, threat, data, store, seed, dev, shard_size,
                                 progress, executor, with_outputs, context) for threat in built]
    finally:
        for module, mode in modes:  # each submodule's own mode, as the caller left it
            module.training = mode


def _evaluate_threat(model, model_name, identity: dict[str, str], threat: Threat, data: DataSlice, store: Store, seed: int,
                     dev: torch.device, shard_size: int | None, progress: bool, executor,
                     with_outputs: bool, context: ThreatContext | None = None) -> Record:
    base = {**identity, "threat": threat.canonical, "threat_version": threat.version,
            "evaluation_version": EVALUATION_VERSION, "dataset": data.dataset, "split": data.split, "seed": seed}
    parts = threat.parts()
    context = context or ThreatContext(data.dataset, data.split, None, data.indices)
    for bound in {id(t): t for t in (threat, *parts.values())}.values():
        bound.bind(context)  # once per threat and part, before any shard (and before they are shipped)
    size = shard_size or shard_size_for(threat, model, data.x[:1].to(dev)) or len(data)
    checksum = data.checksum
    record_key = _digest(base, _indices_text(data.indices), checksum, size)
    cached = store.get_record(record_key)
    if cached is not None and not with_outputs:
        return _named(Record.from_dict(cached), model_name)
    planned = size
    while True:
        try:
            merged, provenance = _evaluate_shards(model, model_name, threat, parts, data, store, seed, base, size,
                                                  dev, progress, executor)
            break
        except ShardOutOfMemory as error:
            if size == 1:
                raise RobenchError(f"{model_name} | {threat.spec.name}: one example runs out of memory on {dev}; "
                                   "free memory (other processes) or use a device with more.") from None
            size = (size + 1) // 2
            note(f"{model_name} | {threat.spec.name}: {error}; evaluating again in shards of {size} (a shard's "
                 "random stream depends on its examples, so the record says which size ran)", enabled=progress)
    if cached is not None:
        record = _named(Record.from_dict(cached), model_name)
        record.outputs = merged
        return record
    if size != planned:
        provenance["planned_shard_size"] = planned
    provenance = {**_environment(), "model": model_name, **base, "data_sha256": checksum,
                  "threat_hash": threat.spec.hash, "indices": _indices_text(data.indices), **provenance}
    record = Record(model_name, threat.canonical, threat.kind, data.dataset, data.split, len(data),
                    threat.summarize(merged), provenance, merged if with_outputs else None)
    store.put_record(record_key, record.to_dict())
    return record


def _evaluate_shards(model: nn.Module, model_name: str, threat: Threat, parts: dict[str, Threat], data: DataSlice,
                     store: Store, seed: int, base: dict[str, Any], size: int, dev: torch.device, progress: bool,
                     executor) -> tuple[Outputs, dict[str, Any]]:
    """The threat's outputs on `data` in shards of `size` examples (each finished shard from or into `store`),
    and the run's part of the provenance."""
    depth = _stage_depths(parts)
    shards: list[dict[str, str]] = []  # per shard, the store key of each part
    done: dict[str, Outputs] = {}
    waves: dict[int, list[ShardTask]] = {}  # the pending tasks by stage depth: a wave runs after the one before
    for start in range(0, len(data), size):
        stop = min(start + size, len(data))
        piece = data.part(start, stop)
        shard_key = _digest(base, _indices_text(piece.indices), piece.checksum)
        # the random stream depends on the seed, the threat's name and the examples, not on the model or
        # the threat's parameters: every model meets the same noise and random starts (paired comparisons),
        # and an eps sweep draws the same streams at every eps
        shard_seed = int(_digest(seed, threat.spec.name, data.dataset, data.split,
                                 _indices_text(piece.indices))[:15], 16)
        keys = {}
        for name in parts:
            key = shard_key if name == "" else _digest(shard_key, name)
            outputs = store.get_shard(key)
            if outputs is None:
                waves.setdefault(depth[name], []).append(
                    ShardTask(start, stop, key, shard_seed, piece.x, piece.y, name, piece.indices))
            else:
                done[key] = outputs
            keys[name] = key
        shards.append(keys)
    started = dt.datetime.now(dt.timezone.utc)
    clock, cpu = time.perf_counter(), getattr(executor, "cpu_seconds", None)
    for level in sorted(waves):
        pending = waves[level]
        names = [name for name in parts if depth[name] == level]
        for task in pending:
            after = parts[task.part].after
            if after is not None:
                task.previous = done[shards[task.start // size][after]]
        total, share = len(data), 1 / len(names)  # in examples: a shard's parts each count their share
        # a chain of stages names the stage in its bar (one bar per stage: "... | autoattack | apgd-t")
        stage = f" | {', '.join(dict.fromkeys(n.rsplit('/', 1)[-1] for n in names))}" if max(depth.values()) else ""
        bar = progress_bar(total=total, initial=total - share * sum(t.stop - t.start for t in pending),
                           desc=f"{model_name} | {threat.spec.name}{stage}", unit="ex", enabled=progress)
        for task, outputs in executor.run(compute_shard, (model, parts, str(dev)), pending):
            store.put_shard(task.key, threat.canonical, model_name, outputs)
            done[task.key] = outputs
            bar.update(share * (task.stop - task.start))
        bar.close()
    per_shard = [{k: v for key in keys.values() for k, v in done[key].items()} for keys in shards]
    merged = threat.combine(per_shard[0] if len(per_shard) == 1 else
                            {k: np.concatenate([p[k] for p in per_shard]) for k in per_shard[0]})
    timing = {"started": started.isoformat(timespec="seconds"), "wall_seconds": round(time.perf_counter() - clock, 3)}
    if cpu is not None:  # the CPU time of the tasks computed here, wherever they ran
        timing["cpu_seconds"] = round(executor.cpu_seconds - cpu, 3)
    return merged, {"shards": len(shards), "shard_size": size, "tasks": sum(map(len, shards)), "device": str(dev),
                    **timing}


def _stage_depths(parts: dict[str, Threat]) -> dict[str, int]:
    """Part name -> its stage: 0 for independent parts, one more than its `after` part's for a continuation."""
    depth: dict[str, int] = {}
    for name, part in parts.items():
        if part.after is None:
            depth[name] = 0
        elif part.after in depth:
            depth[name] = depth[part.after] + 1
        else:
            raise ValueError(f"part {name!r} continues {part.after!r}, which is not an earlier part")
    return depth


def _named(record: Record, model_name: str) -> Record:
    """A cached Record under the name given in this run (the store keys results by identity, not name)."""
    record.model = model_name
    record.provenance["model"] = model_name
    return record
