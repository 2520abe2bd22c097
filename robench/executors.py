"""Executors run the shard tasks of a benchmark grid. An executor's `run(fn, shared, tasks)` calls
``fn(shared, task)`` for every task and yields ``(task, result)`` pairs as they finish; `shared` (the
model and threat) is the same for all tasks, so a distributed executor ships it once."""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator


class LocalExecutor:
    """Runs tasks one after another in this process, in order."""

    name = "local"

    def run(self, fn: Callable[[Any, Any], Any], shared: Any, tasks: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
        for task in tasks:
            yield task, fn(shared, task)
