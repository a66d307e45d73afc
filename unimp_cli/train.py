"""`unimp train` and `unimp finetune`: multi-task (or single-task) training of the UniMP model."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from unimp_core.errors import UnimpError
from unimp_core.specs.base import describe as d
from unimp_core.specs.model import ModelSpec as MS
from unimp_core.specs.train import DataSpec as DS, OptimSpec as OS, RunSpec as RS

from .common import CONFIG_HELP, DRY_RUN_HELP, handle_errors, resolve


def _weights(pairs: list[str] | None) -> dict[str, float] | None:
    if not pairs:
        return None
    out = {}
    for pair in pairs:
        task, sep, value = pair.partition("=")
        try:
            out[task] = float(value)
        except ValueError:
            raise UnimpError(f"--task-weight {pair!r}: expected task=number") from None
        if not sep:
            raise UnimpError(f"--task-weight {pair!r}: expected task=number")
    return out


def _overrides(**o) -> dict:
    """Flags -> the nested spec layout (None means 'not given')."""
    return {
        "model": {"preset": o["model"], "train_lm": o["train_lm"], "vision": o["vision"], "lm": o["lm"],
                  "cross_attn_every_n_layers": o["cross_attn_every"], "checkpoint": o["flamingo_checkpoint"]},
        "data": {"path": o["data"], "tasks": o["tasks"], "task_weights": _weights(o["task_weight"]),
                 "history_len": o["history_len"], "max_tokens": o["max_tokens"], "curriculum": o["curriculum"],
                 "valid_users": o["valid_users"]},
        "optim": {"lr": o["lr"], "schedule": o["schedule"], "warmup_ratio": o["warmup_ratio"], "gamma": o["gamma"],
                  "batch_size": o["batch_size"], "grad_accum": o["grad_accum"], "weight_decay": o["weight_decay"]},
        "run": {"out": o["out"], "epochs": o["epochs"], "max_steps": o["max_steps"], "seed": o["seed"],
                "precision": o["precision"], "save_every": o["save_every"], "keep_last": o["keep_last"],
                "eval_every": o["eval_every"], "log_every": o["log_every"], "resume": o["resume"],
                "distributed": o["distributed"], "accelerate_config": o["accelerate_config"],
                "cache_vision_features": o["cache_vision_features"], "trackers": o["tracker"],
                "num_workers": o["num_workers"]},
    }


# Options shared by both commands (typer reads them from each function's signature).
TASKS = typer.Option(None, "--tasks", help=d(DS, "tasks") + " Several: --tasks rec exp.")
OUT = typer.Option(None, "--out", "-o", help=d(RS, "out"))
# --data is checked by the core (one line: missing folder, unfinished or other schema version), not by typer.
DATA_HELP = d(DS, "path")


@handle_errors
def train(
    data: Optional[Path] = typer.Option(None, "--data", help=DATA_HELP),
    tasks: Optional[List[str]] = TASKS,
    out: Optional[Path] = OUT,
    model: Optional[str] = typer.Option(None, "--model", help=d(MS, "preset")),
    vision: Optional[str] = typer.Option(None, help=d(MS, "vision")),
    lm: Optional[str] = typer.Option(None, help=d(MS, "lm")),
    cross_attn_every: Optional[int] = typer.Option(None, help=d(MS, "cross_attn_every_n_layers")),
    flamingo_checkpoint: Optional[str] = typer.Option(None, help=d(MS, "checkpoint")),
    train_lm: Optional[bool] = typer.Option(None, "--train-lm/--freeze-lm", help=d(MS, "train_lm")),
    task_weight: Optional[List[str]] = typer.Option(None, help="task=weight, repeatable. " + d(DS, "task_weights")),
    history_len: Optional[int] = typer.Option(None, help=d(DS, "history_len")),
    max_tokens: Optional[int] = typer.Option(None, help=d(DS, "max_tokens")),
    curriculum: Optional[bool] = typer.Option(None, "--curriculum/--no-curriculum", help=d(DS, "curriculum")),
    valid_users: Optional[int] = typer.Option(None, help=d(DS, "valid_users")),
    lr: Optional[float] = typer.Option(None, help=d(OS, "lr")),
    schedule: Optional[str] = typer.Option(None, help=d(OS, "schedule")),
    warmup_ratio: Optional[float] = typer.Option(None, help=d(OS, "warmup_ratio")),
    weight_decay: Optional[float] = typer.Option(None, help=d(OS, "weight_decay")),
    gamma: Optional[float] = typer.Option(None, help=d(OS, "gamma")),
    batch_size: Optional[int] = typer.Option(None, help=d(OS, "batch_size")),
    grad_accum: Optional[int] = typer.Option(None, help=d(OS, "grad_accum")),
    epochs: Optional[float] = typer.Option(None, help=d(RS, "epochs")),
    max_steps: Optional[int] = typer.Option(None, help=d(RS, "max_steps")),
    seed: Optional[int] = typer.Option(None, help=d(RS, "seed")),
    precision: Optional[str] = typer.Option(None, help=d(RS, "precision")),
    save_every: Optional[int] = typer.Option(None, help=d(RS, "save_every")),
    keep_last: Optional[int] = typer.Option(None, help=d(RS, "keep_last")),
    eval_every: Optional[int] = typer.Option(None, help=d(RS, "eval_every")),
    log_every: Optional[int] = typer.Option(None, help=d(RS, "log_every")),
    resume: Optional[bool] = typer.Option(None, "--resume", help=d(RS, "resume")),
    distributed: Optional[str] = typer.Option(None, help=d(RS, "distributed")),
    accelerate_config: Optional[Path] = typer.Option(None, exists=True, dir_okay=False, help=d(RS, "accelerate_config")),
    cache_vision_features: Optional[bool] = typer.Option(None, "--cache-vision-features/--no-cache-vision-features",
                                                         help=d(RS, "cache_vision_features")),
    tracker: Optional[List[str]] = typer.Option(None, help=d(RS, "trackers")),
    num_workers: Optional[int] = typer.Option(None, help=d(RS, "num_workers")),
    config: Optional[Path] = typer.Option(None, "--config", exists=True, dir_okay=False, help=CONFIG_HELP),
    dry_run: bool = typer.Option(False, "--dry-run", help=DRY_RUN_HELP),
) -> None:
    """Train the UniMP model on one or several tasks of a dataset folder."""
    from unimp_core.specs.train import TrainSpec

    spec = resolve(TrainSpec, config, _overrides(**locals()), dry_run)
    _run(spec)


@handle_errors
def finetune(
    source: Path = typer.Option(..., "--from", exists=True, file_okay=False, help="Finished run to start from."),
    tasks: Optional[List[str]] = typer.Option(None, "--tasks", help=d(DS, "tasks") + " (default: rec)"),
    out: Path = typer.Option(..., "--out", "-o", help=d(RS, "out")),
    data: Optional[Path] = typer.Option(None, "--data", help=DATA_HELP + " (default: the run's)"),
    lr: Optional[float] = typer.Option(None, help=d(OS, "lr")),
    schedule: Optional[str] = typer.Option(None, help=d(OS, "schedule") + " (default: constant, as the paper's finetune script)"),
    warmup_ratio: Optional[float] = typer.Option(None, help=d(OS, "warmup_ratio")),
    gamma: Optional[float] = typer.Option(None, help=d(OS, "gamma")),
    batch_size: Optional[int] = typer.Option(None, help=d(OS, "batch_size")),
    grad_accum: Optional[int] = typer.Option(None, help=d(OS, "grad_accum")),
    epochs: Optional[float] = typer.Option(None, help=d(RS, "epochs")),
    max_steps: Optional[int] = typer.Option(None, help=d(RS, "max_steps")),
    seed: Optional[int] = typer.Option(None, help=d(RS, "seed")),
    precision: Optional[str] = typer.Option(None, help=d(RS, "precision") + " (default: the run's)"),
    save_every: Optional[int] = typer.Option(None, help=d(RS, "save_every")),
    keep_last: Optional[int] = typer.Option(None, help=d(RS, "keep_last")),
    eval_every: Optional[int] = typer.Option(None, help=d(RS, "eval_every")),
    log_every: Optional[int] = typer.Option(None, help=d(RS, "log_every")),
    distributed: Optional[str] = typer.Option(None, help=d(RS, "distributed") + " (default: the run's)"),
    resume: Optional[bool] = typer.Option(None, "--resume", help=d(RS, "resume")),
    dry_run: bool = typer.Option(False, "--dry-run", help=DRY_RUN_HELP),
) -> None:
    """Continue from a finished run's weights, by default on `rec` alone with a constant schedule."""
    import json

    from unimp_core.specs.train import finetune_spec

    overrides = {"data": {"path": data, "tasks": tasks},
                 "optim": {"lr": lr, "schedule": schedule, "warmup_ratio": warmup_ratio, "gamma": gamma,
                           "batch_size": batch_size, "grad_accum": grad_accum},
                 "run": {"out": out, "epochs": epochs, "max_steps": max_steps, "seed": seed, "precision": precision,
                         "save_every": save_every, "keep_last": keep_last, "eval_every": eval_every,
                         "log_every": log_every, "distributed": distributed, "resume": resume}}
    spec = finetune_spec(source, overrides)
    if dry_run:
        typer.echo(json.dumps(spec.model_dump(mode="json"), indent=2))
        raise typer.Exit(0)
    _run(spec)


def _run(spec) -> None:
    import os

    from rich.console import Console

    from unimp_core.progress import Progress
    from unimp_core.run_folder import FINAL, METRICS
    from unimp_core.training.train import run_train

    main = os.environ.get("RANK", "0") == "0"  # under `accelerate launch`, one process reports
    with (Progress.rich() if main else Progress()) as progress:
        out = run_train(spec, progress)
    if main:
        Console().print(f"run folder: [bold]{out}[/]  (final weights in {out / FINAL}, log in {out / METRICS})")
