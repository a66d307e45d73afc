"""`unimp evaluate`: load a run, score the stored evaluation instances, write metrics and predictions.

    setup (run folder -> model with its weights, dataset, task context)
    -> per task: this process's share of the instances -> records (one per instance, keyed by its index)
    -> gather the records of every process (no duplicates, no drops) -> metrics (+ popularity baseline)
    -> evaluations/<name>/metrics.json and predictions/<task>.jsonl (main process, atomic writes)
(`unimp evaluate` then draws evaluations/<name>/report.html: unimp_core.report.report_beside)

Where the results go: `RUN/evaluations/<checkpoint>-<split>[-<decode>][-exclude-history][-h<N>][-first<N>]/`
(e.g. `runs/x/evaluations/final-test/metrics.json`), so evaluating another checkpoint, split or
protocol never overwrites a result; evaluating more tasks into the same folder adds them to its
metrics.json (a task evaluated again replaces its own entry).

Under `accelerate launch` (several processes) each process takes every n-th instance; the records are
gathered with `accelerate.utils.gather_object` and de-duplicated by instance index, so the metrics are
exactly those of a one-process evaluation.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import run_folder as RF
from ..data.store import Dataset, training_lengths
from ..errors import UnimpError
from ..io import atomic_path
from ..progress import Progress
from ..run_folder import PREDICTIONS
from ..specs.evaluate import EvaluateSpec
from ..tasks import TaskContext, build_eval_samples, get_task, instance_table, run_history_lengths
from . import metrics as M
from .scoring import EvalContext

# ------------------------------------------------------------------------------------- training data


def training_interactions(ds: Dataset, ctx: TaskContext) -> tuple[np.ndarray, list[float]]:
    """Item ids and ratings that training could see (`store.training_lengths`), in the context's user order."""
    lengths = training_lengths(ds)
    users = {u: lengths[u] for u in ctx.sequences if u in lengths}
    items = [ctx.sequences[u][:n] for u, n in users.items()]
    ratings = [r for u, n in users.items() for r in ctx.ratings[u][:n] if r is not None and np.isfinite(r)]
    return (np.concatenate(items) if items else np.zeros(0, dtype=np.int64)), ratings


# --------------------------------------------------------------------------------- distributed


def gather_records(records: list[dict], n: int, gather: Callable[[list], list] | None = None) -> list[dict]:
    """Every process's records, one per instance index 0..n-1, in index order.

    `gather` collects a list from every process (accelerate's `gather_object`; None: one process).
    Raises UnimpError when an instance is missing (a dropped shard) rather than scoring fewer users.
    """
    merged = gather(records) if gather is not None else records
    by_index: dict[int, dict] = {}
    for rec in merged:
        by_index.setdefault(int(rec["index"]), rec)
    missing = sorted(set(range(n)) - set(by_index))
    if missing or len(by_index) != n:
        raise UnimpError(f"evaluation: {len(missing)} of {n} instances missing after gathering (e.g. {missing[:3]})")
    return [by_index[i] for i in range(n)]


def shard(n: int, rank: int, world: int) -> list[int]:
    """The instance indices process `rank` of `world` evaluates (every world-th one)."""
    return list(range(rank, n, world))


# ------------------------------------------------------------------------------------------- output


def evaluation_name(spec: EvaluateSpec, run_history_len: int, tasks: list[str] | None = None) -> str:
    """The folder under RUN/evaluations/ that holds this evaluation (see the module docstring).

    --decode and --exclude-history only change the numbers of ranked tasks (rec, search), so they name
    the folder only when one of those is evaluated; a task's own generation settings are recorded in its entry.
    """
    parts = [spec.checkpoint or RF.default_checkpoint(spec.run), spec.split]
    ranking = tasks is None or any(get_task(t).ranked for t in tasks)
    if spec.decode != "rank" and ranking:
        parts.append(spec.decode)
    if spec.exclude_history and ranking:
        parts.append("exclude-history")
    if spec.history_len is not None and spec.history_len != run_history_len:
        parts.append(f"h{spec.history_len}")
    if spec.limit is not None:
        parts.append(f"first{spec.limit}")
    return "-".join(parts)


def _write_predictions(path: Path, records: list[dict]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            for rec in records:
                f.write(json.dumps(rec) + "\n")


def _merge_previous(out_dir: Path, tasks: dict[str, Any]) -> dict[str, Any]:
    """Tasks evaluated earlier into the same folder stay in its metrics.json."""
    previous = (RF.read_evaluation(out_dir) or {}).get("tasks")
    if not isinstance(previous, dict):
        return tasks
    return {**{t: v for t, v in previous.items() if t not in tasks}, **tasks}


# -------------------------------------------------------------------------------------------- entry


def manifest_sha256(folder: Path) -> str:
    """The dataset folder's identity: the sha256 of its manifest.json (written once, last, by prepare)."""
    import hashlib

    return hashlib.sha256((Path(folder) / "manifest.json").read_bytes()).hexdigest()


def with_checkpoint(spec):
    """`spec` with its checkpoint resolved (default: best when the run kept one, else final), and a
    note saying why when it was not given."""
    if spec.checkpoint is not None:
        return spec, None
    name = RF.default_checkpoint(spec.run)
    note = f"{name} (the default"
    record = RF.best_record(spec.run) if name == RF.BEST else None
    if record:
        note += f": best valid {record.get('metric')} {record.get('value', 0):.4f} at step {record.get('step')}"
    elif name == RF.FINAL:
        note += ": the run kept no best checkpoint"
    return spec.model_copy(update={"checkpoint": name}), note + ")"


def check_family_tasks(loaded, tasks: list[str], decode: str = "rank") -> None:
    """A model family that cannot do a task (one that reads item ids: rec only, exact ranking) says so in one line."""
    allowed = getattr(loaded.setup.family, "TASKS", None)
    if allowed is None:
        return
    name = loaded.setup.family.NAME
    other = [t for t in tasks if t not in allowed]
    if other:
        raise UnimpError(f"{loaded.run}: a {name} run does {', '.join(allowed)} only, not {', '.join(other)}")
    if decode != "rank":
        raise UnimpError(f"{loaded.run}: a {name} run ranks items exactly; --decode {decode} needs a token model")


def run_evaluate(spec: EvaluateSpec, progress: Progress | None = None) -> dict[str, Any]:
    """Evaluate a run; returns the metrics (what metrics.json holds) on every process.

    The main process writes RUN/evaluations/<name>/metrics.json and predictions/<task>.jsonl.
    """
    import torch
    from accelerate import PartialState
    from accelerate.utils import gather_object

    from ..model.setup import load_run

    progress = progress or Progress()
    started = time.perf_counter()
    spec, chosen = with_checkpoint(spec)
    # cpu=True where there is no GPU: `accelerate launch --multi_gpu` then runs gloo processes on the CPU
    state = PartialState(cpu=not torch.cuda.is_available())
    loaded = load_run(spec.run, spec.checkpoint, spec.data, device=state.device, history_len=spec.history_len,
                  max_tokens=spec.max_tokens, progress=progress)
    tasks = spec.tasks or list(loaded.train_spec.data.tasks)
    check_family_tasks(loaded, tasks, spec.decode)
    missing = [t for t in tasks if instance_table(t) not in loaded.dataset.instances]
    if missing:
        skipped = loaded.dataset.manifest.get("tasks_skipped") or {}  # prepare drew none: the data cannot support it
        why = "; ".join(f"{t} ({skipped[t]})" if t in skipped else f"{t} (rerun `unimp prepare`)" for t in missing)
        raise UnimpError(f"{loaded.dataset.root}: no evaluation instances for {why}")
    train_items, train_ratings = training_interactions(loaded.dataset, loaded.ctx)
    counts = M.item_counts(train_items, loaded.bundle.n_items)
    gather = gather_object if state.num_processes > 1 else None
    out_dir = RF.evaluation_dir(spec.run, evaluation_name(spec, loaded.train_spec.data.history_len, tasks))

    with RF.writer_lock(out_dir):  # one evaluation writes this folder at a time
        results: dict[str, Any] = {}
        ev = EvalContext(loaded, spec, out_dir, counts, train_ratings, state.is_main_process)
        for task in tasks:  # fail before any task runs
            steps = get_task(task)
            steps.step("records"), steps.step("summary")
            if steps.check is not None:
                steps.check(ev)
        lengths = run_history_lengths(loaded.train_spec.data, tasks, spec.history_len)
        for task in tasks:
            samples = build_eval_samples(loaded.dataset, task, spec.split, lengths, loaded.ctx)[: spec.limit]
            if not samples:
                results[task] = {"users": 0, "note": f"no {spec.split} instances"}
                continue
            mine = shard(len(samples), state.process_index, state.num_processes)
            t0 = time.perf_counter()
            with progress.task(f"evaluating {task}", total=len(mine)) as advance:
                records = get_task(task).step("records")(ev, samples, mine, advance)
            seconds = [time.perf_counter() - t0]
            records = gather_records(records, len(samples), gather)
            seconds = max(gather(seconds) if gather else seconds)  # the slowest process sets the pace
            summary = get_task(task).step("summary")(records, samples, ev)
            results[task] = {"users": len(samples), **summary, "seconds": round(seconds, 3),
                             "users_per_s": round(len(samples) / max(seconds, 1e-9), 2),
                             "predictions": f"{PREDICTIONS}/{task}.jsonl"}
            if state.is_main_process:
                _write_predictions(RF.predictions_file(out_dir, task), records)

        report = {
            "run": str(spec.run), "checkpoint": spec.checkpoint, "checkpoint_note": chosen, "split": spec.split,
            "protocol": loaded.ctx.protocol, "dataset": str(loaded.dataset.root),
            "dataset_manifest_sha256": manifest_sha256(loaded.dataset.root), "model_family": loaded.setup.family.NAME,
            "synthetic": bool(loaded.dataset.manifest.get("synthetic", False)),
            "history_len": loaded.history_len, "task_history_len": lengths, "processes": state.num_processes,
            "device": str(loaded.device),
            "folder": str(out_dir), "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(time.perf_counter() - started, 3), "spec": spec.model_dump(mode="json"),
        }
        report["evaluated"] = list(results)
        report["tasks"] = _merge_previous(out_dir, results) if state.is_main_process else results
        if state.is_main_process:
            RF.write_evaluation(out_dir, report)
    state.wait_for_everyone()
    return report
