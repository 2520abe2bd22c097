"""Progress that is never silent for minutes: a bar on a terminal or in a notebook (tqdm.auto), a line
every `INTERVAL` seconds anywhere else (CI logs, pipes, nohup), nothing when silenced.

    with bar(total=len(data), desc=f"{model} | {threat}", unit="ex", enabled=progress) as b:
        b.update(64)

`note` prints a one-off message (what is about to be trained, what was written) without breaking a
bar that is being drawn."""
from __future__ import annotations

import sys
import threading
import time
import weakref
from typing import IO, Any, Iterable

#: seconds between two progress lines when output is not a terminal
INTERVAL = 15.0


def interactive(stream: IO | None = None) -> bool:
    """Whether a live bar can be drawn: `stream` (default stderr) is a terminal, or Python runs in a
    Jupyter kernel (where tqdm.auto draws a widget)."""
    stream = sys.stderr if stream is None else stream
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return hasattr(shell, "kernel") or bool(getattr(stream, "isatty", lambda: False)())


def bar(iterable: Iterable | None = None, *, total: float | None = None, desc: str = "", unit: str = "it",
        initial: float = 0, enabled: bool = True, leave: bool = False, stream: IO | None = None,
        interval: float | None = None) -> Any:
    """A progress bar with tqdm's interface (update, set_postfix, close, iteration, `with`): tqdm.auto's
    where `interactive(stream)`, else a `Lines` printer (a line per `interval`, default `INTERVAL`,
    seconds), or a silent tqdm when not `enabled`."""
    from tqdm.auto import tqdm

    if not enabled:
        return tqdm(iterable, total=total, disable=True)
    if interactive(stream):
        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, leave=leave, file=stream)
    return Lines(iterable, total=total, desc=desc, unit=unit, initial=initial, stream=stream,
                 interval=INTERVAL if interval is None else interval)


def duration(seconds: float) -> str:
    """A duration for people: "42 s", "3.5 min", "1.2 h"."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


class Lines:
    """Progress as plain lines, at most one per `interval` seconds, for output that is not a terminal:
    ``desc: 120/500 ex (24%) after 30 s, about 95 s left``. While nothing moves (one long shard), a
    heartbeat thread still prints a line per `interval`, until closed or dropped. Once it has printed, a
    last line when closed (unless the last one already said it all)."""

    def __init__(self, iterable: Iterable | None = None, *, total: float | None = None, desc: str = "",
                 unit: str = "it", initial: float = 0, stream: IO | None = None, interval: float = INTERVAL,
                 heartbeat: bool = True):
        self.iterable, self.desc, self.unit, self.interval = iterable, desc, unit, interval
        self.total = len(iterable) if total is None and hasattr(iterable, "__len__") else total
        self.n = self.start_n = initial
        self.stream = stream
        self.postfix = ""
        self.start = self.last = time.monotonic()
        self.shown: float | None = None  # the count the last line printed, None before the first
        self._lock = threading.Lock()
        self._stop = threading.Event()
        if heartbeat and interval > 0:
            threading.Thread(target=_heartbeat, args=(weakref.ref(self), self._stop, interval), daemon=True,
                             name="robench-progress").start()

    def _print(self, text: str) -> None:
        print(f"{self.desc}: {text}" if self.desc else text, file=self.stream or sys.stderr, flush=True)
        self.shown = self.n

    def _done(self) -> str:
        if not self.total:
            return f"{self.n:g} {self.unit}"
        return f"{self.n:g}/{self.total:g} {self.unit} ({100 * self.n / self.total:.0f}%)"

    def _report(self, now: float) -> None:
        """A line, if the last one is `interval` old."""
        with self._lock:
            if now - self.last < self.interval or self._stop.is_set():
                return
            self.last = now
            elapsed = now - self.start
            rate = (self.n - self.start_n) / elapsed if elapsed > 0 else 0.0
            ahead = self.total - self.n if self.total else 0
            left = f", about {duration(ahead / rate)} left" if ahead > 0 and rate > 0 else ""
            self._print(f"{self._done()} after {duration(elapsed)}{left}{self.postfix}")

    def update(self, n: float = 1) -> None:
        self.n += n
        self._report(time.monotonic())

    def set_postfix(self, **values: Any) -> None:
        self.postfix = " (" + ", ".join(f"{k} {v}" for k, v in values.items()) + ")" if values else ""

    def close(self) -> None:
        with self._lock:
            self._stop.set()
            if self.shown is not None and self.shown != self.n:
                self._print(f"{self._done()} in {duration(time.monotonic() - self.start)}{self.postfix}")
            self.shown = None

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update()
        self.close()

    def __enter__(self) -> "Lines":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _heartbeat(lines: "weakref.ref[Lines]", stop: threading.Event, interval: float) -> None:
    """Every `interval` seconds, a line from the Lines printer, until it is closed or garbage."""
    while not stop.wait(interval):
        printer = lines()
        if printer is None:
            return
        printer._report(time.monotonic())
        del printer


def note(message: str, *, enabled: bool = True, stream: IO | None = None) -> None:
    """Print `message` as a line of its own on `stream` (default stderr), above any bar being drawn."""
    if enabled:
        from tqdm.auto import tqdm

        tqdm.write(message, file=stream or sys.stderr)
