"""`unimp report`: one self-contained HTML page about one or more runs.

    run folders (metrics.jsonl, best/state.json, evaluations/<name>/metrics.json, predictions/)
    -> `collect` (plain data, no torch) -> `charts` (matplotlib PNGs as data URIs) -> `page` (HTML)

`unimp evaluate` also writes one beside each evaluation's metrics.json (`report_beside`).
"""

from __future__ import annotations

from pathlib import Path

from .. import run_folder as RF
from ..errors import UnimpError
from ..io import write_bytes_atomic


def write_report(runs: list[Path], out: Path, evaluations: list[str] | None = None) -> Path:
    """Write the report about `runs` (their evaluations: all, or those named) to `out`; returns `out`."""
    from .collect import read_run
    from .page import render

    if not runs:
        raise UnimpError("report: name at least one run folder")
    if len({Path(r).resolve() for r in runs}) < len(runs):
        raise UnimpError("report: a run is named twice")
    out = Path(out)
    if out.is_dir():
        raise UnimpError(f"--out {out}: a folder; name the HTML file to write (e.g. {out / 'report.html'})")
    views = [read_run(Path(r), evaluations) for r in runs]
    write_bytes_atomic(out, render(views).encode("utf-8"))
    return out


def report_beside(run: Path, evaluation_folder: Path) -> Path:
    """The run's report on one evaluation, as `evaluation_folder/report.html`."""
    return write_report([run], Path(evaluation_folder) / RF.EVAL_REPORT, [Path(evaluation_folder).name])
