"""Executors run the shard tasks of a benchmark grid. An executor's `run(fn, shared, tasks)` calls
``fn(shared, task)`` for every task and yields ``(task, result)`` pairs as they finish; `shared` (the
model and threat) is the same for all tasks, so a distributed executor ships it once. An executor that
knows what its tasks cost keeps their CPU seconds so far in `cpu_seconds` (the Records' provenance reads it).

The driver (robench.evaluate) stores each result as it arrives, so whatever an executor yields before it
fails or is interrupted is kept, and a rerun sends only the missing tasks."""
from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Iterator

from robench.errors import RobenchError, unknown_name

EXECUTORS = ("local", "ray")


class LocalExecutor:
    """Runs tasks one after another in this process, in order."""

    name = "local"

    def __init__(self):
        self.cpu_seconds = 0.0

    def run(self, fn: Callable[[Any, Any], Any], shared: Any, tasks: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
        for task in tasks:
            cpu = time.process_time()
            result = fn(shared, task)
            self.cpu_seconds += time.process_time() - cpu
            yield task, result


def _import_ray():
    try:
        import ray
    except ImportError:
        raise RobenchError("the Ray executor needs Ray: pip install 'robench[ray]' (or pip install ray).") from None
    return ray


def _call_in_worker(fn: Callable[[Any, Any], Any], shared: Any, task: Any) -> tuple[Any, float]:
    """What a Ray worker runs for one task: one torch thread per task (each task holds one CPU); the result
    and the CPU seconds the task took."""
    import torch

    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)
    cpu = time.process_time()
    result = fn(shared, task)
    return result, time.process_time() - cpu


def _describe(task: Any) -> str:
    where = f"examples {task.start}:{task.stop}" if hasattr(task, "start") else repr(task)
    key = getattr(task, "key", None)
    return f"{where} (shard {key[:12]})" if key else where


def _error_text(exc: BaseException) -> str:
    """The user's error inside a Ray error (RayTaskError wraps it as `cause`), on one line."""
    cause = getattr(exc, "cause", None)
    err = cause if isinstance(cause, BaseException) else exc
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"


def _owned(result: Any) -> Any:
    """Arrays that ray.get returns are read-only views of Ray's object store (gone after ray.shutdown);
    copy those of a result dict so that Records and the store hold ordinary arrays."""
    if isinstance(result, dict):
        import numpy as np

        return {k: np.array(v) if isinstance(v, np.ndarray) else v for k, v in result.items()}
    return result


class RayExecutor:
    """Runs each task as one Ray task (1 CPU, 1 torch thread) on a local Ray instance or a cluster.

    `address`: a running cluster (``"HEAD:6379"``, ``"auto"``); None starts a local instance (or uses the
    one this process already started, or ``$RAY_ADDRESS``). `workers`: most tasks in flight at once
    (default: every CPU of the cluster). `max_retries`: how often Ray reruns a task whose worker died.
    An exception raised by the task itself is not retried (the same seed fails the same way): the
    executor keeps going, and after every other task has finished raises a RobenchError naming the
    failed shards and their errors; the finished shards are already in the store, so a rerun computes
    only the failed ones. `num_gpus`: GPUs each task asks for (give 1, or a fraction, with a cuda device).
    """

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None, max_retries: int = 3,
                 num_gpus: float = 0, init_kwargs: dict[str, Any] | None = None):
        if workers is not None and workers < 1:
            raise RobenchError(f"workers must be at least 1; got {workers}.")
        self.address, self.workers, self.max_retries = address, workers, max_retries
        self.num_gpus = num_gpus
        self.init_kwargs = dict(init_kwargs or {})
        self._remote = None
        self.cpu_seconds = 0.0

    def _ensure_started(self):
        ray = _import_ray()
        if not ray.is_initialized():
            kwargs = {"include_dashboard": False, "log_to_driver": True, **self.init_kwargs}
            if self.address:
                kwargs["address"] = self.address
            elif self.workers and "num_cpus" not in kwargs:
                kwargs["num_cpus"] = self.workers
            try:
                ray.init(**kwargs)
            except ConnectionError as exc:
                raise RobenchError(f"cannot reach the Ray cluster at {self.address!r}: {exc}. Start it with "
                                   "`ray start --head` and give the head's address, e.g. --address HEAD:6379.") from None
        if self._remote is None:
            self._remote = ray.remote(_call_in_worker).options(
                num_cpus=1, num_gpus=self.num_gpus, max_retries=self.max_retries, retry_exceptions=False)
        return ray

    def _slots(self, ray) -> int:
        if self.workers:
            return self.workers
        return max(1, int(ray.cluster_resources().get("CPU", 1)))

    def run(self, fn: Callable[[Any, Any], Any], shared: Any, tasks: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
        tasks = list(tasks)
        if not tasks:
            return
        ray = self._ensure_started()
        shared_ref = ray.put(shared)  # shipped once per threat, not once per task
        slots = self._slots(ray)
        queue = iter(tasks)
        running: dict[Any, Any] = {}
        failed: list[tuple[Any, str]] = []

        def submit() -> None:
            task = next(queue, None)
            if task is not None:
                running[self._remote.remote(fn, shared_ref, task)] = task

        try:
            for _ in range(min(slots, len(tasks))):
                submit()
            while running:
                ready, _ = ray.wait(list(running), num_returns=1)
                ref = ready[0]
                task = running.pop(ref)
                submit()
                try:
                    result, cpu = ray.get(ref)
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as exc:  # RayTaskError, WorkerCrashedError after the retries, ...
                    failed.append((task, _error_text(exc)))
                    continue
                self.cpu_seconds += cpu
                yield task, _owned(result)
        finally:
            for ref in running:  # interrupted (the driver stopped iterating): stop what is still running
                ray.cancel(ref, force=True)
        if failed:
            lines = "; ".join(f"{_describe(t)}: {e}" for t, e in failed)
            raise RobenchError(f"{len(failed)} of {len(tasks)} shards failed on Ray: {lines}. The other "
                               f"{len(tasks) - len(failed)} are kept in the results store; run again to retry "
                               "only the failed shards.")


def get_executor(name: str = "local", address: str | None = None, workers: int | None = None,
                 gpus_per_task: float | None = None, **kwargs: Any):
    """An executor by name: "local" (in this process, the default) or "ray" (a Ray cluster at `address`,
    or a local Ray instance; `workers` tasks at once, each asking for `gpus_per_task` GPUs)."""
    if name == "local":
        if address or workers or gpus_per_task:
            raise RobenchError("--address, --workers and --gpus-per-task need --executor ray; the local "
                               "executor runs in this process (on --device).")
        return LocalExecutor()
    if name == "ray":
        if gpus_per_task is not None and not 0 < gpus_per_task:
            raise RobenchError(f"--gpus-per-task must be > 0 (1, or a fraction to share a GPU); got {gpus_per_task}.")
        _import_ray()
        return RayExecutor(address=address, workers=workers, num_gpus=gpus_per_task or 0, **kwargs)
    raise unknown_name("executor", name, EXECUTORS)
