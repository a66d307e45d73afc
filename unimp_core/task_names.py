"""Task names: the one list the specs, the collator and the registry read (no torch, no polars).

The built-in tasks are listed here; `unimp_core.tasks.register` adds a new task's name at run time
(after the built-in ones: a task's position fixes the task id the collator emits).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator

BUILTIN_TASKS: tuple[str, ...] = ("rec", "search", "exp", "img_sel", "img_gen")
DEFAULT_TRAIN_TASKS: tuple[str, ...] = ("rec", "search", "exp", "img_sel")
DEFAULT_TASK_WEIGHTS: dict[str, float] = {"rec": 2.0}  # unlisted tasks: 1.0 (rec 2.0, as the paper's code)
# What `unimp generate`, `unimp evaluate --compare` and `unimp finetune` take when no task is named: the
# next items, the question every run can answer.
DEFAULT_TASK = "rec"

# How a rec prompt lays out the history (tasks/rec.py): the items back to back, each predicting the next,
# or the paper's chunks (each item followed by `<answer> item <|endofchunk|>`, the question last).
RecPrompt = Literal["sequence", "chunks"]

_names: list[str] = list(BUILTIN_TASKS)


def task_names() -> tuple[str, ...]:
    """Every known task, built-in ones first, in registration order."""
    return tuple(_names)


def add_task_name(name: str) -> None:
    if name not in _names:
        _names.append(name)


def remove_task_name(name: str) -> None:
    if name in BUILTIN_TASKS:
        raise ValueError(f"{name!r} is a built-in task")
    if name in _names:
        _names.remove(name)


def check_task(name: str) -> str:
    """`name` if it is a known task, else a ValueError naming the known ones."""
    if name not in _names:
        raise ValueError(f"unknown task {name!r} (known: {', '.join(_names)})")
    return name


# A spec field holding a task name: checked against the live list, so a registered task is accepted.
TaskName = Annotated[str, AfterValidator(check_task)]
