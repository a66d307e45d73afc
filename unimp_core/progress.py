"""Progress reporting for long steps: rich bars on a terminal, silent in tests."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")


class Progress:
    """A thin facade over rich.progress so core code never depends on how it is shown.

    `Progress()` is silent; `Progress.rich()` draws bars on stderr.
    """

    def __init__(self, bars=None) -> None:
        self._bars = bars

    @classmethod
    def rich(cls) -> "Progress":
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress, SpinnerColumn,
                                   TextColumn, TimeElapsedColumn, TimeRemainingColumn)

        bars = RichProgress(
            SpinnerColumn(), TextColumn("[progress.description]{task.description}"), BarColumn(),
            MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
            console=Console(stderr=True), transient=False,
        )
        return cls(bars)

    def __enter__(self) -> "Progress":
        if self._bars is not None:
            self._bars.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._bars is not None:
            self._bars.stop()

    @contextmanager
    def task(self, description: str, total: float | None = None) -> Iterator[Callable[[float], None]]:
        """Yield `advance(n, info=None)`; `info` is shown after the bar (loss, lr, ...). The bar is
        completed when the block ends."""
        if self._bars is None:
            yield lambda n=1, info=None: None
            return
        tid = self._bars.add_task(description, total=total, info="")

        def advance(n: float = 1, info: str | None = None) -> None:
            if info is None:
                self._bars.advance(tid, n)
            else:
                self._bars.update(tid, advance=n, info=info)

        try:
            yield advance
        finally:
            self._bars.update(tid, completed=total if total is not None else self._bars.tasks[tid].completed)
            if total is None:
                self._bars.update(tid, total=self._bars.tasks[tid].completed)

    def track(self, items: Iterable[T], description: str, total: float | None = None) -> Iterator[T]:
        if total is None and hasattr(items, "__len__"):
            total = len(items)  # type: ignore[arg-type]
        with self.task(description, total) as advance:
            for item in items:
                yield item
                advance(1)

    def log(self, message: str) -> None:
        if self._bars is not None:
            self._bars.console.print(message)
