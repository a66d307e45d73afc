"""`unimp train` and `unimp finetune`: multi-task (or single-task) training of the UniMP model."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from unimp_core.errors import UnimpError
from unimp_core.specs.base import describe as d
from unimp_core.specs.model import ModelSpec as MS, SASRecSpec as SS
from unimp_core.specs.train import DataSpec as DS, OptimSpec as OS, RunSpec as RS

from .common import CONFIG_HELP, DRY_RUN_HELP, fail, handle_errors, resolve


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


def _model(g) -> dict:
    """--model sasrec picks the SASRec family; any other name is an OpenFlamingo preset."""
    common = {"train_lm": g("train_lm"), "vision": g("vision"), "lm": g("lm"),
              "cross_attn_every_n_layers": g("cross_attn_every"), "checkpoint": g("flamingo_checkpoint")}
    if g("model") == "sasrec":
        if g("item_ids") == "semantic":
            raise UnimpError("--item-ids semantic: SASRec learns one embedding per item id (atomic ids only)")
        return {"family": "sasrec", "loss": g("loss"), **common}
    if g("loss") is not None:
        raise UnimpError("--loss is a SASRec setting (--model sasrec)")
    return {"preset": g("model"), "item_ids": g("item_ids"), **common}


def _overrides(**o) -> dict:
    """Flags -> the nested spec layout (None or absent means 'not given')."""
    o = {k: v for k, v in o.items() if v is not None}
    g = o.get
    return {
        "model": _model(g),
        "data": {"path": g("data"), "tasks": g("tasks"), "task_weights": _weights(g("task_weight")),
                 "history_len": g("history_len"), "max_tokens": g("max_tokens"), "curriculum": g("curriculum"),
                 "valid_users": g("valid_users")},
        "optim": {"lr": g("lr"), "schedule": g("schedule"), "warmup_ratio": g("warmup_ratio"), "gamma": g("gamma"),
                  "batch_size": g("batch_size"), "grad_accum": g("grad_accum"), "weight_decay": g("weight_decay")},
        "run": {"out": g("out"), "epochs": g("epochs"), "max_steps": g("max_steps"), "seed": g("seed"),
                "precision": g("precision"), "save_every": g("save_every"), "keep_last": g("keep_last"),
                "eval_every": g("eval_every"), "select_metric": g("select_metric"), "select_users": g("select_users"),
                "patience": g("patience"), "log_every": g("log_every"), "resume": g("resume"),
                "distributed": g("distributed"), "accelerate_config": g("accelerate_config"),
                "cache_vision_features": g("cache_vision_features"), "trackers": g("tracker"),
                "num_workers": g("num_workers")},
    }


# Options of both commands, declared once (typer reads them from each function's signature).
TASKS = typer.Option(None, "--tasks", help=d(DS, "tasks") + " Several: --tasks rec exp.")
# --data is checked by the core (one line: missing folder, unfinished or other schema version), not by typer.
DATA_HELP = d(DS, "path")
LR = typer.Option(None, help=d(OS, "lr"))
WARMUP_RATIO = typer.Option(None, help=d(OS, "warmup_ratio"))
GAMMA = typer.Option(None, help=d(OS, "gamma"))
BATCH_SIZE = typer.Option(None, help=d(OS, "batch_size"))
GRAD_ACCUM = typer.Option(None, help=d(OS, "grad_accum"))
EPOCHS = typer.Option(None, help=d(RS, "epochs"))
MAX_STEPS = typer.Option(None, help=d(RS, "max_steps"))
SEED = typer.Option(None, help=d(RS, "seed"))
SAVE_EVERY = typer.Option(None, help=d(RS, "save_every"))
KEEP_LAST = typer.Option(None, help=d(RS, "keep_last"))
EVAL_EVERY = typer.Option(None, help=d(RS, "eval_every"))
SELECT_METRIC = typer.Option(None, help=d(RS, "select_metric"))
SELECT_USERS = typer.Option(None, help=d(RS, "select_users"))
PATIENCE = typer.Option(None, help=d(RS, "patience"))
LOG_EVERY = typer.Option(None, help=d(RS, "log_every"))
RESUME = typer.Option(None, "--resume", help=d(RS, "resume"))
DRY_RUN = typer.Option(False, "--dry-run", help=DRY_RUN_HELP)


@handle_errors
def train(
    data: Optional[Path] = typer.Option(None, "--data", help=DATA_HELP),
    tasks: Optional[List[str]] = TASKS,
    out: Optional[Path] = typer.Option(None, "--out", "-o", help=d(RS, "out")),
    model: Optional[str] = typer.Option(None, "--model", help=d(MS, "preset") + " | sasrec (the built-in SASRec baseline: "
                                        "item ids only, task rec, its own defaults: lr 1e-3, batch 128; ce: at most 200 epochs, "
                                        "validation every epoch; bce: at most 250 epochs, validation every 2000 steps; both "
                                        "stop early after --patience validations without improvement)."),
    loss: Optional[str] = typer.Option(None, "--loss", help="SASRec: " + d(SS, "loss")),
    vision: Optional[str] = typer.Option(None, help=d(MS, "vision")),
    lm: Optional[str] = typer.Option(None, help=d(MS, "lm")),
    cross_attn_every: Optional[int] = typer.Option(None, help=d(MS, "cross_attn_every_n_layers")),
    flamingo_checkpoint: Optional[str] = typer.Option(None, help=d(MS, "checkpoint")),
    train_lm: Optional[bool] = typer.Option(None, "--train-lm/--freeze-lm", help=d(MS, "train_lm")),
    item_ids: Optional[str] = typer.Option(None, "--item-ids", help=d(MS, "item_ids")),
    task_weight: Optional[List[str]] = typer.Option(None, help="task=weight, repeatable. " + d(DS, "task_weights")),
    history_len: Optional[int] = typer.Option(None, help=d(DS, "history_len")),
    max_tokens: Optional[int] = typer.Option(None, help=d(DS, "max_tokens")),
    curriculum: Optional[bool] = typer.Option(None, "--curriculum/--no-curriculum", help=d(DS, "curriculum")),
    valid_users: Optional[int] = typer.Option(None, help=d(DS, "valid_users")),
    lr: Optional[float] = LR,
    schedule: Optional[str] = typer.Option(None, help=d(OS, "schedule")),
    warmup_ratio: Optional[float] = WARMUP_RATIO,
    weight_decay: Optional[float] = typer.Option(None, help=d(OS, "weight_decay")),
    gamma: Optional[float] = GAMMA,
    batch_size: Optional[int] = BATCH_SIZE,
    grad_accum: Optional[int] = GRAD_ACCUM,
    epochs: Optional[float] = EPOCHS,
    max_steps: Optional[int] = MAX_STEPS,
    seed: Optional[int] = SEED,
    precision: Optional[str] = typer.Option(None, help=d(RS, "precision")),
    save_every: Optional[int] = SAVE_EVERY,
    keep_last: Optional[int] = KEEP_LAST,
    eval_every: Optional[int] = EVAL_EVERY,
    select_metric: Optional[str] = SELECT_METRIC,
    select_users: Optional[int] = SELECT_USERS,
    patience: Optional[int] = PATIENCE,
    log_every: Optional[int] = LOG_EVERY,
    resume: Optional[bool] = RESUME,
    distributed: Optional[str] = typer.Option(None, help=d(RS, "distributed")),
    accelerate_config: Optional[Path] = typer.Option(None, exists=True, dir_okay=False, help=d(RS, "accelerate_config")),
    cache_vision_features: Optional[bool] = typer.Option(None, "--cache-vision-features/--no-cache-vision-features",
                                                         help=d(RS, "cache_vision_features")),
    tracker: Optional[List[str]] = typer.Option(None, help=d(RS, "trackers")),
    num_workers: Optional[int] = typer.Option(None, help=d(RS, "num_workers")),
    config: Optional[Path] = typer.Option(None, "--config", exists=True, dir_okay=False, help=CONFIG_HELP),
    dry_run: bool = DRY_RUN,
) -> None:
    """Train the UniMP model on one or several tasks of a dataset folder."""
    overrides = _overrides(**locals())
    from unimp_core.specs.train import TrainSpec

    spec = resolve(TrainSpec, config, overrides, dry_run)
    _run(spec)


@handle_errors
def finetune(
    source: Path = typer.Option(..., "--from", exists=True, file_okay=False, help="Finished run to start from."),
    tasks: Optional[List[str]] = typer.Option(None, "--tasks", help=d(DS, "tasks") + " (default: rec)"),
    out: Path = typer.Option(..., "--out", "-o", help=d(RS, "out")),
    data: Optional[Path] = typer.Option(None, "--data", help=DATA_HELP + " (default: the run's)"),
    lr: Optional[float] = LR,
    schedule: Optional[str] = typer.Option(None, help=d(OS, "schedule") + " (default: constant, as the paper's finetune script)"),
    warmup_ratio: Optional[float] = WARMUP_RATIO,
    gamma: Optional[float] = GAMMA,
    batch_size: Optional[int] = BATCH_SIZE,
    grad_accum: Optional[int] = GRAD_ACCUM,
    epochs: Optional[float] = EPOCHS,
    max_steps: Optional[int] = MAX_STEPS,
    seed: Optional[int] = SEED,
    precision: Optional[str] = typer.Option(None, help=d(RS, "precision") + " (default: the run's)"),
    save_every: Optional[int] = SAVE_EVERY,
    keep_last: Optional[int] = KEEP_LAST,
    eval_every: Optional[int] = EVAL_EVERY,
    select_metric: Optional[str] = SELECT_METRIC,
    select_users: Optional[int] = SELECT_USERS,
    patience: Optional[int] = PATIENCE,
    log_every: Optional[int] = LOG_EVERY,
    distributed: Optional[str] = typer.Option(None, help=d(RS, "distributed") + " (default: the run's)"),
    resume: Optional[bool] = RESUME,
    config: Optional[Path] = typer.Option(None, "--config", exists=True, dir_okay=False,
                                          help="Spec file (YAML, TOML or JSON) over the run's settings; "
                                          "command-line flags override it."),
    dry_run: bool = DRY_RUN,
) -> None:
    """Continue from a finished run's weights, by default on `rec` alone with a constant schedule."""
    overrides = _overrides(**{k: v for k, v in locals().items() if k != "config"})
    import json

    from unimp_core.training.finetune import finetune_spec

    spec = finetune_spec(source, overrides, config)
    if dry_run:
        typer.echo(json.dumps(spec.model_dump(mode="json"), indent=2))
        raise typer.Exit(0)
    _run(spec)


def _run(spec) -> None:
    import os

    from rich.console import Console

    from unimp_core.progress import Progress
    from unimp_core.run_folder import BEST, FINAL, METRICS, SPEC_FILE, best_record
    from unimp_core.training.train import run_train

    main = os.environ.get("RANK", "0") == "0"  # under `accelerate launch`, one process reports
    try:
        with (Progress.rich() if main else Progress()) as progress:
            out = run_train(spec, progress)
    except KeyboardInterrupt:
        saved = Path(spec.run.out) / SPEC_FILE
        if not saved.is_file():
            fail("interrupted before the run folder was written; nothing to resume")
        import shlex

        launcher = "accelerate launch -m unimp_cli" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else "unimp"
        fail(f"interrupted; resume with: {launcher} train --config {shlex.quote(str(saved))} --resume")
    if main:
        con = Console()
        con.print(f"run folder: [bold]{out}[/]  (final weights in {out / FINAL}, log in {out / METRICS})")
        best = best_record(out)
        if best:
            con.print(f"best checkpoint: {out / BEST} (valid {best['metric']} {best['value']:.4f} at step {best['step']}; "
                      "evaluate and generate use it by default)")
