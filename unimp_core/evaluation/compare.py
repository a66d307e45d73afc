"""`unimp evaluate --run A --compare B C`: several runs side by side, on the same users and protocol.

Every run is evaluated by `run_evaluate` with one EvaluateSpec (its own default checkpoint: best
when it kept one), so each also gets its ordinary metrics.json; the comparison is one table with the
popularity baseline (and one more by the target's popularity in training: each run's `by_popularity`,
the baseline's `popularity_by_popularity`, as `scoring.ranking_summary` describes them), under a protocol line that states the split, the candidates, whether history
items are excluded, the tie policy and the number of users. Runs trained on different datasets
(another manifest: rebuilt, re-indexed or another source) are refused before anything is evaluated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import run_folder as RF
from ..errors import UnimpError
from ..progress import Progress
from ..specs.evaluate import EvaluateSpec
from ..task_names import DEFAULT_TASK
from ..tasks import TASKS, get_task


def protocol(report: dict[str, Any], res: dict[str, Any]) -> dict[str, Any]:
    """What a ranking table (`res`, one task's entry of `report`) measured: split, candidates, history
    exclusion, ties, users."""
    return {"split": report["split"], "protocol": report["protocol"], "candidates": res.get("candidates"),
            "history_excluded": bool(res.get("exclude_history")),
            "ties": "pessimistic (items scoring the target's score rank above it)" if res.get("decode") == "rank"
            else "beam order", "users": res["users"]}


def protocol_line(p: dict[str, Any]) -> str:
    """One line saying how a ranking table was measured."""
    history = "history items excluded" if p["history_excluded"] else "history items kept as candidates"
    return (f"protocol: {p['split']} split ({p['protocol']}), candidates: {p['candidates']}, {history}, "
            f"ties {p['ties']}, {p['users']:,} users")


def _dataset_of(run: Path, data: Path | None) -> tuple[Path, str]:
    from .runner import manifest_sha256

    folder = RF.dataset_folder(run, RF.read_train_spec(run), data)
    if not (folder / "manifest.json").is_file():
        raise UnimpError(f"{folder}: not a complete dataset folder (no manifest.json)")
    return folder, manifest_sha256(folder)


def run_compare(spec: EvaluateSpec, progress: Progress | None = None) -> dict[str, Any]:
    """Evaluate `spec.run` and every `spec.compare` run under `spec`; returns the side-by-side result."""
    from .runner import run_evaluate

    runs = [Path(spec.run), *spec.compare]
    if len({r.resolve() for r in runs}) < len(runs):
        raise UnimpError("--compare: a run is named twice")
    tasks = spec.tasks or [DEFAULT_TASK]
    other = [t for t in tasks if not get_task(t).ranked]
    if other:
        ranked = ", ".join(name for name, t in TASKS.items() if t.ranked)
        raise UnimpError(f"--compare ranks items ({ranked}); not {', '.join(other)}")
    datasets = [_dataset_of(r, spec.data) for r in runs]
    for run, (folder, identity) in zip(runs[1:], datasets[1:]):
        if identity != datasets[0][1]:
            raise UnimpError(f"--compare: {run} was trained on {folder}, {runs[0]} on {datasets[0][0]} (another "
                             "dataset: different manifest.json); compare runs of one dataset")
    reports = [run_evaluate(spec.model_copy(update={"run": r, "compare": [], "tasks": tasks}), progress)
               for r in runs]
    out: dict[str, Any] = {"dataset": str(datasets[0][0]), "dataset_manifest_sha256": datasets[0][1],
                           "split": spec.split, "tasks": {}}
    for task in tasks:
        first = reports[0]["tasks"][task]
        if not first.get("users"):
            out["tasks"][task] = {"users": 0, "note": first.get("note", "no instances")}
            continue
        rows = [{"run": str(rep["run"]), "model": rep.get("model_family"), "checkpoint": rep["checkpoint"],
                 "metrics": rep["tasks"][task]["metrics"], "by_popularity": rep["tasks"][task]["by_popularity"],
                 "folder": rep["folder"]} for rep in reports]
        out["tasks"][task] = {"protocol": protocol(reports[0], first), "runs": rows, "popularity": first["popularity"],
                              "popularity_by_popularity": first["popularity_by_popularity"]}
    return out
