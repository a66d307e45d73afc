"""What the progress display draws: a bar with done/total only where the total is known."""

from __future__ import annotations

import io

from rich.console import Console

from unimp_core.progress import Progress


def _drawn(steps) -> list[str]:
    out = io.StringIO()
    with Progress.rich(Console(file=out, width=100, force_terminal=False, color_system=None)) as progress:
        steps(progress)
    return [line for line in out.getvalue().splitlines() if line.strip()]


def test_a_step_without_a_total_shows_a_count_not_a_bar():
    def steps(progress):
        with progress.task("reading log.csv"):
            pass
        with progress.task("counting rows") as advance:
            advance(1234)
        list(progress.track(range(5), "known total"))

    reading, counting, known = _drawn(steps)
    assert "reading log.csv" in reading and "━" not in reading and "/" not in reading and "✓" in reading
    assert "1,234" in counting and "━" not in counting and "/" not in counting
    assert "5/5" in known and "━" in known


def test_silent_progress_accepts_everything():
    progress = Progress()
    with progress, progress.task("x") as advance:
        advance(3, info="loss 1.0")
    assert list(progress.track([1, 2], "y")) == [1, 2]
