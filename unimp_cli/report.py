"""`unimp report`: one self-contained HTML page about one or more runs (training curves, test results
beside popularity, examples). It reads run folders only: no spec file, no model, no torch."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .common import handle_errors


@handle_errors
def report(
    runs: List[Path] = typer.Argument(..., exists=True, file_okay=False, metavar="RUN...",
                                     help="Run folders written by `unimp train`."),
    out: Path = typer.Option(Path("report.html"), "--out", "-o", help="The HTML file to write."),
    evaluation: Optional[List[str]] = typer.Option(
        None, "--evaluation", help="Only these evaluations (folder names under RUN/evaluations/, e.g. best-test); "
        "default: every one."),
) -> None:
    """Write one HTML page (opens from disk, charts and pictures inlined) about RUN [RUN ...]: loss per task,
    learning rate, samples/s and the validation metric over steps with the kept best/ marked; every evaluation's
    test metrics of the runs side by side beside popularity, with the protocol; rank metrics by target-item
    popularity where the evaluation measured them; a few generated examples (exp, img_gen)."""
    from unimp_core.report import write_report

    path = write_report(list(runs), out, evaluation or None)
    typer.echo(f"report: {path}")
