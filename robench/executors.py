"""Executors run the shard tasks of a benchmark grid: in-process by default."""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator


class LocalExecutor:
    """Runs tasks one after another in this process, yielding results in order."""

    name = "local"

    def map(self, fn: Callable[[Any], Any], tasks: Iterable[Any]) -> Iterator[Any]:
        for task in tasks:
            yield fn(task)
