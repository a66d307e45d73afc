"""Tasks: how a user history becomes a prompt and its answer.

    build_training_samples(dataset, ["rec", "exp"], history_len=5, seed=0, epoch=3)
    build_eval_samples(dataset, "rec", "test", history_len=5)

One module per task (rec, search, exp, img_sel, img_gen), each with `training` and `evaluation`
builders; none of them looks at the dataset's name, only at the items table's text fields (and, for
img_gen, the image codes of `unimp tokenize-images`).

`history_len` is an int (every task; a task with its own default, img_gen's 2, keeps it) or a
mapping task -> length (see `history_lengths`).
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import polars as pl

from ..data.store import Dataset
from ..errors import UnimpError
from ..task_names import BUILTIN_TASKS, add_task_name, remove_task_name, task_names
from . import exp, img_gen, img_sel, rec, search
from .base import Sample, Task, TaskContext, task_rng
from .curriculum import curriculum_mix, curriculum_tasks

TASKS: dict[str, Task] = {t.name: t for t in (rec.TASK, search.TASK, exp.TASK, img_sel.TASK, img_gen.TASK)}
assert tuple(TASKS) == BUILTIN_TASKS

__all__ = [
    "BUILTIN_TASKS", "TASKS", "Sample", "Task", "TaskContext",
    "DATA_NEEDS", "build_eval_samples", "build_training_samples", "context", "curriculum_mix", "curriculum_tasks",
    "get_task", "history_lengths", "instance_table", "run_history_lengths", "register",
    "served_tasks", "skipped_line", "task_names", "unregister", "unsupported_tasks",
]


def _any_text(column: pl.Series) -> bool:
    return bool((column.drop_nulls().str.strip_chars().str.len_chars() > 0).any())


# What a task may need of a dataset (`Task.data_needs`): (the reason given when it is absent, whether the
# dataset's items (with their placed `image`) and interactions hold it).
DATA_NEEDS: dict[str, tuple[str, Callable[[pl.DataFrame, pl.DataFrame], bool]]] = {
    "images": ("no item images", lambda items, inter: bool(items["image"].is_not_null().any())),
    "reviews": ("no reviews", lambda items, inter: _any_text(inter["explanation"])),
    "categories": ("no item categories to query", lambda items, inter: _any_text(items["category"])),
}


def unsupported_tasks(items: pl.DataFrame, interactions: pl.DataFrame,
                      tasks: Sequence[str] | None = None) -> dict[str, str]:
    """task -> why the dataset cannot support it, for each of `tasks` (default: every task) whose
    `data_needs` the dataset lacks; training or evaluating such a task would teach or measure nothing."""
    held = {need: has(items, interactions) for need, (_, has) in DATA_NEEDS.items()}
    out = {}
    for name in tasks if tasks is not None else list(TASKS):
        missing = [DATA_NEEDS[need][0] for need in get_task(name).data_needs if not held[need]]
        if missing:
            out[name] = ", ".join(missing)
    return out


def skipped_line(skipped: Mapping[str, str]) -> str:
    """One line naming the skipped tasks and why: `skipped tasks: exp (no reviews); img_sel, img_gen (no item images)`."""
    by_reason: dict[str, list[str]] = {}
    for name, reason in skipped.items():
        by_reason.setdefault(reason, []).append(name)
    return "skipped tasks: " + "; ".join(f"{', '.join(names)} ({reason})" for reason, names in by_reason.items())


def register(task: Task) -> Task:
    """Make `task` known by its name to every command (specs, training, evaluate, generate)."""
    if task.name in TASKS and TASKS[task.name] is not task:
        raise UnimpError(f"task {task.name!r} is already registered")
    unknown = set(task.data_needs) - set(DATA_NEEDS)
    if unknown:
        raise UnimpError(f"task {task.name!r}: unknown data_needs {sorted(unknown)} (known: {', '.join(DATA_NEEDS)})")
    TASKS[task.name] = task
    add_task_name(task.name)
    return task


def unregister(name: str) -> None:
    """Forget a registered task (built-in ones stay)."""
    remove_task_name(name)
    TASKS.pop(name, None)


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise UnimpError(f"unknown task {name!r} (known: {', '.join(task_names())})") from None


def served_tasks() -> dict[str, str]:
    """endpoint -> task name, for every registered task `unimp serve` answers (`Task.endpoint`)."""
    return {t.endpoint: name for name, t in TASKS.items() if t.endpoint is not None}


def context(data: Dataset | TaskContext, item_codes=None) -> TaskContext:
    """Index a dataset for the tasks (pass the result around to index it only once); with `item_codes`
    (unimp_core.itemcodes.codes.ItemCodes) its prompts name items by their semantic ids."""
    ctx = data if isinstance(data, TaskContext) else TaskContext.from_dataset(data)
    return ctx if item_codes is None else ctx.with_item_codes(item_codes)


def _check_history_len(history_len: int) -> None:
    if history_len < 1:
        raise UnimpError(f"history_len must be at least 1 (got {history_len})")


def history_lengths(tasks: Sequence[str], history_len: int | Mapping[str, int],
                    overrides: Mapping[str, int] | None = None) -> dict[str, int]:
    """task -> history length: `overrides`, else the task's own default (img_gen: 2, the paper's code's),
    else `history_len`. A mapping `history_len` is taken as given (missing tasks: their default, else 5)."""
    out = {}
    for name in tasks:
        if overrides and name in overrides:
            n = overrides[name]
        elif isinstance(history_len, Mapping):
            n = history_len.get(name, get_task(name).history_len or 5)
        else:
            n = get_task(name).history_len or history_len
        _check_history_len(n)
        out[name] = n
    return out


def run_history_lengths(data, tasks: Sequence[str], override: int | None = None) -> dict[str, int]:
    """task -> history length of a run (`data`: its DataSpec): `override` (--history-len) for every
    task when given, else the run's per-task overrides, the task's default (img_gen: 2), its history_len."""
    if override is not None:
        _check_history_len(override)
        return {name: override for name in tasks}
    return history_lengths(tasks, data.history_len, data.task_history_len)


def instance_table(task: str) -> str:
    """The stored eval/<table>.parquet a task's evaluation reads (img_gen reads rec's)."""
    return get_task(task).instances or task


def build_training_samples(
    data: Dataset | TaskContext,
    tasks: Sequence[str],
    history_len: int | Mapping[str, int] = 5,
    seed: int = 0,
    epoch: int = 0,
    fractions: Mapping[str, float] | None = None,
    shuffle: bool = True,
) -> list[Sample]:
    """One epoch's training stream: at most one sample per training user and task, tasks mixed.

    Deterministic in (seed, epoch): a resumed run rebuilds the same list and skips to its position.
    `fractions` keeps that share of a task's samples (the curriculum's replay); `shuffle` mixes
    the tasks into one seeded order.
    """
    lengths = history_lengths(tasks, history_len)
    ctx = context(data)
    samples: list[Sample] = []
    for name in tasks:
        part = get_task(name).training(ctx, task_rng(seed, epoch, name), lengths[name])
        frac = 1.0 if fractions is None else fractions.get(name, 1.0)
        if frac < 1.0 and part:
            n = max(1, round(frac * len(part))) if frac > 0 else 0
            keep = np.sort(task_rng(seed, epoch, name, stream=1).permutation(len(part))[:n])
            part = [part[i] for i in keep]
        samples += part
    if shuffle:
        order = np.random.default_rng([seed, epoch]).permutation(len(samples))
        samples = [samples[i] for i in order]
    return samples


def build_eval_samples(
    dataset: Dataset, task: str, split: str, history_len: int | Mapping[str, int] = 5, ctx: TaskContext | None = None
) -> list[Sample]:
    """Evaluation prompts for the stored instances of `task` in `split` ("valid" or "test"), in table order."""
    length = history_lengths([task], history_len)[task]
    t = get_task(task)
    table = dataset.instances.get(instance_table(task))
    if table is None:
        where = dataset.root / "eval" if dataset.root is not None else "dataset"
        raise UnimpError(f"{where}: no {instance_table(task)}.parquet evaluation instances (rerun `unimp prepare`)")
    if split not in ("valid", "test"):
        raise UnimpError(f"unknown evaluation split {split!r} (choose valid or test)")
    return t.evaluation(ctx or context(dataset), table.filter(table["split"] == split), length)
