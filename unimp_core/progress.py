"""Progress reporting for long steps: rich bars on a terminal, silent in tests.

A step with a known total draws a bar with `done/total`; one without (reading a CSV, a search over
unknown ground) draws a spinner and the count so far, never a bar that would have to invent a total.
"""

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
    def rich(cls, console=None) -> "Progress":
        """Bars on stderr (or on `console`, a rich Console)."""
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress, ProgressColumn,
                                   SpinnerColumn, Text, TextColumn, TimeElapsedColumn, TimeRemainingColumn)

        class IfTotal(ProgressColumn):
            """`column` for a step with a known total; for one without, `count` (the count so far) or nothing."""

            def __init__(self, column: ProgressColumn, count: bool = False) -> None:
                super().__init__()
                self.column, self.count = column, count

            def render(self, task):
                if task.total is not None:
                    return self.column.render(task)
                return Text(f"{int(task.completed):,}" if self.count and task.completed else "",
                            style="progress.download")

        class Spinner(SpinnerColumn):
            """Spins while a step runs; a tick once it ended (a step without a total never "finishes" in rich)."""

            def render(self, task):
                return self.finished_text if task.fields.get("done") else super().render(task)

        bars = RichProgress(
            Spinner(finished_text="[green]✓[/]"), TextColumn("[progress.description]{task.description}"),
            IfTotal(BarColumn()), IfTotal(MofNCompleteColumn(), count=True), TimeElapsedColumn(),
            IfTotal(TimeRemainingColumn()), TextColumn("{task.fields[info]}"),
            console=console or Console(stderr=True), transient=False,
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
        completed when the block ends; without a `total` a spinner and the count stand in for the bar."""
        if self._bars is None:
            yield lambda n=1, info=None: None
            return
        tid = self._bars.add_task(description, total=total, info="", done=False)

        def advance(n: float = 1, info: str | None = None) -> None:
            if info is None:
                self._bars.advance(tid, n)
            else:
                self._bars.update(tid, advance=n, info=info)

        try:
            yield advance
        finally:
            if total is not None:
                self._bars.update(tid, completed=total, done=True)
            else:
                self._bars.update(tid, done=True)
                self._bars.stop_task(tid)  # the elapsed time stops here

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
