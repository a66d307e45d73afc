"""What a report shows, read from run folders (no torch, no model): the training curves of metrics.jsonl,
the kept best/, every evaluation's metrics.json, and a few generated examples with their users' histories.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import rank_metrics as RM
from .. import run_folder as RF
from ..errors import UnimpError

EXAMPLES = 3  # generated examples shown per task (those with an `example` step: exp, img_gen)
# the task entry's optional per-popularity breakdown: {bucket label: {metric: value, ..., "users": n}}
BY_POPULARITY = "by_popularity"


@dataclass
class Series:
    """One line of a chart: its label and the (step, value) points, steps ascending."""

    label: str
    steps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    def add(self, step: int, value: Any) -> None:
        if isinstance(value, (int, float)) and value == value:  # numbers only; NaN (a diverged step) is left out
            self.steps.append(int(step))
            self.values.append(float(value))


@dataclass
class RunView:
    """A run as the report shows it."""

    path: Path
    name: str
    family: str
    tasks: list[str]
    dataset: str
    records: list[dict[str, Any]]  # metrics.jsonl, one dict per line
    best: dict[str, Any] | None  # best/state.json: step, metric, value
    evaluations: dict[str, dict[str, Any]]  # evaluation folder name -> its metrics.json


def read_run(path: Path, evaluations: list[str] | None = None) -> RunView:
    """The run folder at `path` with its evaluations (all of them, or those named)."""
    path = Path(path)
    spec = RF.read_train_spec_dict(path)  # "not a run folder" when it is not one
    family = spec.get("model", {}).get("family")  # a saved spec always names it
    there = {}
    folder = path / RF.EVALUATIONS
    for sub in sorted(folder.iterdir()) if folder.is_dir() else []:
        report = RF.read_evaluation(sub)
        if report is not None and isinstance(report.get("tasks"), dict):
            there[sub.name] = report
    missing = sorted(set(evaluations or []) - set(there))
    if missing:
        raise UnimpError(f"{path}: no evaluation {', '.join(missing)} (have: {', '.join(there) or 'none'})")
    found = {name: rep for name, rep in there.items() if evaluations is None or name in evaluations}
    return RunView(path=path, name=path.name, family=family, tasks=list(spec.get("data", {}).get("tasks", [])),
                   dataset=str(spec.get("data", {}).get("path", "")), records=RF.read_metrics(path),
                   best=RF.best_record(path), evaluations=found)


# ------------------------------------------------------------------------------------------- curves


def training_series(records: list[dict[str, Any]], key: str) -> Series:
    """A training line's value over steps (`loss`, `lr`, `samples_per_s`)."""
    out = Series(key)
    for r in records:
        if key in r:
            out.add(r["step"], r[key])
    return out


def task_loss_series(records: list[dict[str, Any]]) -> list[Series]:
    """Each task's training loss and, where the run measured it, its validation loss, over steps."""
    lines: dict[str, Series] = {}
    for r in records:
        for key, prefix in (("task_loss", "train"), ("valid_loss", "valid")):
            for task, value in (r.get(key) or {}).items():
                lines.setdefault(f"{prefix} {task}", Series(f"{prefix} {task}")).add(r["step"], value)
    return [lines[k] for k in sorted(lines, key=lambda k: (k.split()[1], k.split()[0] != "train"))]


def valid_metric_series(records: list[dict[str, Any]], metric: str) -> Series:
    """The validation rank metric that selects best/ (e.g. NDCG@10), over steps."""
    out = Series(f"valid {metric}")
    for r in records:
        if metric in (r.get("valid_rank") or {}):
            out.add(r["step"], r["valid_rank"][metric])
    return out


def selection_metric(run: RunView) -> str | None:
    """The metric best/ was chosen by (its state.json), else the first the run's validations measured."""
    if run.best and run.best.get("metric"):
        return str(run.best["metric"])
    for r in run.records:
        if r.get("valid_rank"):
            names = list(r["valid_rank"])
            return "NDCG@10" if "NDCG@10" in names else names[0]
    return None


# -------------------------------------------------------------------------------------------- tests


def ranking_names(metrics: dict[str, Any]) -> list[str]:
    """The rank metrics in table order (HR@k, NDCG@k, MRR@k, ...), each by k ascending (the names a ranking
    entry holds)."""
    return sorted((n for n in metrics if "@" in n), key=RM.sort_key)


def numeric_leaves(entry: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Every number of a non-ranking task's entry (exp: rating RMSE/MAE, BLEU, ROUGE; img_sel: precision,
    ...), by dotted name; bookkeeping (users, seconds, settings) is left out."""
    skip = {"users", "seconds", "users_per_s", "max_new_tokens", "num_beams", "scored", "unparsable",
            "no_reference", "samples", "fill_value", BY_POPULARITY}
    out: dict[str, float] = {}
    for key, value in entry.items():
        if key in skip:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(numeric_leaves(value, f"{name}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def by_popularity(entry: dict[str, Any]) -> dict[str, dict[str, float]] | None:
    """The task entry's rank metrics by target-item popularity bucket (`by_popularity`), when evaluation
    wrote one: {bucket label: {metric: value, "users": n}}, buckets in their written order."""
    table = entry.get(BY_POPULARITY)
    if not isinstance(table, dict) or not table:
        return None
    return {str(bucket): {k: v for k, v in row.items() if isinstance(v, (int, float))}
            for bucket, row in table.items() if isinstance(row, dict)}


# ----------------------------------------------------------------------------------------- examples


def examples(report: dict[str, Any], task: str, n: int = EXAMPLES) -> tuple[Any, list[dict[str, Any]]]:
    """The first `n` predictions of `task` (exp, img_gen) with the user's history and the target item.

    Returns (the dataset the evaluation read, or None when that folder is gone, and the examples), each
    {"user_id", "history": [item rows, oldest first], "target": item row, "record": the prediction line,
    "pair": the generated|true PNG (img_gen) or None}; the item rows are `generation.item_row`'s. The
    history is the one the evaluation's prompt showed (its samples, rebuilt from the dataset).
    """
    from ..data.store import is_complete, load_dataset
    from ..generation import item_row
    from ..tasks import build_eval_samples, context

    folder = Path(report["folder"])
    path = RF.predictions_file(folder, task)
    if not path.is_file():
        return None, []
    records = []
    with open(path) as f:
        for line in f:
            if line.strip():
                records.append(json.loads(line))
            if len(records) >= n:
                break
    root = Path(report.get("dataset", ""))
    ds = load_dataset(root) if records and is_complete(root) else None
    length = int((report.get("task_history_len") or {}).get(task, report.get("history_len", 5)))
    samples, ctx = [], None
    if ds is not None:
        ctx = context(ds)
        samples = build_eval_samples(ds, task, report["split"], {task: length}, ctx)
    out = []
    for r in records:
        history, target = [], None
        if ctx is not None and 0 <= r["index"] < len(samples):
            meta = samples[r["index"]].meta
            seq = ctx.sequence(meta["user_id"])
            history = [item_row(ds.items, int(i)) for i in seq[max(0, meta["position"] - length):meta["position"]]]
            target = item_row(ds.items, int(meta["target"]))
        pair = folder / r["pair"] if r.get("pair") else None
        out.append({"user_id": r.get("user_id"), "history": history, "target": target, "record": r,
                    "pair": pair if pair is not None and pair.is_file() else None})
    return ds, out
