"""Progress that suits where it goes: tqdm bars on a terminal, a line per 10% in a log.

A bar redrawn in a file is thousands of carriage-return lines (the demo's log was 486 KB).
`tqdm(...)` here takes tqdm's arguments and returns a real bar when stderr is a terminal;
otherwise a `LogProgress` with the same interface (update, set_postfix, close, iteration,
context manager) that writes ``desc: 30% (163/544 batch, 41 s) loss=1.04`` to stderr at
each 10% step and at the end, nothing else (nothing at all for loops of fewer than
`LONG_LOOP` steps). ``GLACIERFACIES_PROGRESS=bar|log|off``
overrides the choice.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["LogProgress", "tqdm", "use_bars"]

STEP_PERCENT = 10
#: Loops shorter than this print nothing in a log (the stage's own line says enough).
LONG_LOOP = 10


def use_bars(stream: Any = None) -> bool:
    """True when progress should be drawn as bars (stderr is a terminal, or forced)."""
    mode = os.environ.get("GLACIERFACIES_PROGRESS", "").lower()
    if mode in ("bar", "log", "off"):
        return mode == "bar"
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class LogProgress:
    """tqdm's interface, printing one line per `STEP_PERCENT` % of `total` (and at the end)."""

    def __init__(self, iterable: Iterable | None = None, total: float | None = None,
                 desc: str | None = None, unit: str = "it", initial: float = 0,
                 disable: bool | None = False, file: Any = None, **_ignored: Any) -> None:
        self.iterable = iterable
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        self.total, self.desc, self.unit = total, desc or "progress", unit
        self.n = initial
        self.disable = (bool(disable) or os.environ.get("GLACIERFACIES_PROGRESS") == "off"
                        or (total is not None and total < LONG_LOOP))
        self.file = file
        self.postfix = ""
        self._t0 = time.perf_counter()
        self._next = self._step_after(initial)
        self._closed = False

    def _step_after(self, n: float) -> int:
        if not self.total:
            return 10**18
        done = int(100 * n / self.total)
        return (done // STEP_PERCENT + 1) * STEP_PERCENT

    def _write(self) -> None:
        if self.disable:
            return
        out = self.file or sys.stderr
        pct = f"{100 * self.n / self.total:.0f}% " if self.total else ""
        total = f"/{self.total:g}" if self.total else ""
        line = (f"{self.desc}: {pct}({self.n:g}{total} {self.unit}, "
                f"{time.perf_counter() - self._t0:.0f} s)")
        if self.postfix:
            line += f" {self.postfix}"
        print(line, file=out, flush=True)

    def update(self, n: float = 1) -> None:
        self.n += n
        if self.total and 100 * self.n / self.total >= self._next:
            self._next = self._step_after(self.n)
            if self.n < self.total:
                self._write()

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True,
                    **kwargs: Any) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = " ".join(f"{k}={v}" for k, v in items.items())

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or self.desc

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.total and self.n > 0:
            self._write()  # the last line: 100% (or where it stopped) and the time taken

    def __iter__(self) -> Iterator:
        if self.iterable is None:
            return iter(())
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def tqdm(iterable: Iterable | None = None, *args: Any, **kwargs: Any) -> Any:
    """A tqdm bar on a terminal, else a `LogProgress` (same arguments)."""
    if use_bars():
        from tqdm.auto import tqdm as _tqdm

        return _tqdm(iterable, *args, **kwargs)
    return LogProgress(iterable, *args, **kwargs)
