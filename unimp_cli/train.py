"""`unimp train` and `unimp finetune`: multi-task (or single-task) training of the UniMP model."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from unimp_core.errors import UnimpError
from unimp_core.model.families import DEFAULT_FAMILY, FAMILIES, spec_class
from unimp_core.specs.base import describe as d
from unimp_core.specs.train import TrainSpec

from .common import CONFIG_HELP, DRY_RUN_HELP, fail, handle_errors, resolve
from .options import Flag, spec_options, spec_overrides


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
    """--model names a model family, or else a preset of the default family; the family's spec takes the flags."""
    named = g("model") in FAMILIES
    flags = spec_class(g("model") if named else DEFAULT_FAMILY).from_flags({
        "preset": None if named else g("model"), "item_ids": g("item_ids"), "loss": g("loss"), "train_lm": g("train_lm"),
        "vision": g("vision"), "lm": g("lm"), "cross_attn_every_n_layers": g("cross_attn_every"),
        "checkpoint": g("flamingo_checkpoint")})
    return {"family": g("model"), **flags} if named else flags  # else a --config file's family stands


def _family_help() -> str:
    """--model's help beyond the presets: the other families, each with what it is."""
    return "".join(f" | {name} ({spec_class(name).CLI_HELP})." for name in FAMILIES if name != DEFAULT_FAMILY)


def _flag_help(flag: str) -> str:
    """A family's own flag: its family's title and the field's description."""
    owner = next(spec_class(name) for name in FAMILIES if flag in spec_class(name).FLAGS)
    return f"{owner.TITLE}: {d(owner, flag)}"


MS = spec_class(DEFAULT_FAMILY)  # the flags below are the default family's settings

# The flags of `unimp train`, each a spec field (its --help is the field's description); "model" and "loss" are
# the command's own parameters. `_model` builds the model section from the flags marked to_spec=False.
TRAIN: list[Flag | str] = [
    Flag("data.path", "--data", name="data"),  # checked by the core (one line: missing folder, unfinished or other schema version)
    Flag("data.tasks", "--tasks", after=" Several: --tasks rec exp."),
    Flag("run.out", "--out", "-o"),
    "model",
    "loss",
    Flag("model.vision", spec=MS, to_spec=False),
    Flag("model.lm", spec=MS, to_spec=False),
    Flag("model.cross_attn_every_n_layers", name="cross_attn_every", spec=MS, to_spec=False),
    Flag("model.checkpoint", name="flamingo_checkpoint", spec=MS, to_spec=False),
    Flag("model.train_lm", "--train-lm/--freeze-lm", spec=MS, to_spec=False),
    Flag("model.item_ids", "--item-ids", spec=MS, to_spec=False),
    Flag("data.task_weights", name="task_weight", type=List[str], convert=_weights, before="task=weight, repeatable. "),
    Flag("data.history_len"),
    Flag("data.max_tokens"),
    Flag("data.curriculum", "--curriculum/--no-curriculum"),
    Flag("data.valid_users"),
    Flag("optim.lr"),
    Flag("optim.schedule"),
    Flag("optim.warmup_ratio"),
    Flag("optim.weight_decay"),
    Flag("optim.decay_scope"),
    Flag("optim.gamma"),
    Flag("optim.batch_size"),
    Flag("optim.grad_accum"),
    Flag("run.epochs"),
    Flag("run.max_steps"),
    Flag("run.seed"),
    Flag("run.precision"),
    Flag("run.save_every"),
    Flag("run.keep_last"),
    Flag("run.eval_every"),
    Flag("run.select_metric"),
    Flag("run.select_users"),
    Flag("run.patience"),
    Flag("run.log_every"),
    Flag("run.resume", "--resume"),
    Flag("run.distributed"),
    Flag("run.accelerate_config", exists=True, dir_okay=False),
    Flag("run.cache_vision_features", "--cache-vision-features/--no-cache-vision-features"),
    Flag("run.trackers", name="tracker"),
    Flag("run.num_workers"),
]
_TRAIN = {f.param: f for f in TRAIN if isinstance(f, Flag)}
_RUNS = " (default: the run's)"
# `unimp finetune`: the run's model and most settings stay, so fewer flags, some saying what the default is.
FINETUNE: list[Flag | str] = [
    "source",
    _TRAIN["tasks"].but(after=" (default: rec)"),
    _TRAIN["out"].but(required=True),
    _TRAIN["data"].but(after=_RUNS),
    *[_TRAIN[n] for n in ("lr",)],
    _TRAIN["schedule"].but(after=" (default: constant, as the paper's finetune script)"),
    *[_TRAIN[n] for n in ("warmup_ratio", "gamma", "batch_size", "grad_accum", "epochs", "max_steps", "seed")],
    _TRAIN["precision"].but(after=_RUNS),
    *[_TRAIN[n] for n in ("save_every", "keep_last", "eval_every", "select_metric", "select_users", "patience",
                          "log_every")],
    _TRAIN["distributed"].but(after=_RUNS),
    _TRAIN["resume"],
]


def _overrides(table: list[Flag | str], **o) -> dict:
    """Flags -> the nested spec layout (None or absent means 'not given')."""
    o = {k: v for k, v in o.items() if v is not None}
    return {"model": _model(o.get), **spec_overrides(table, o)}


DRY_RUN = typer.Option(False, "--dry-run", help=DRY_RUN_HELP)


@handle_errors
@spec_options(TRAIN, TrainSpec)
def train(
    model: Optional[str] = typer.Option(None, "--model", help=d(MS, "preset") + _family_help()),
    loss: Optional[str] = typer.Option(None, "--loss", help=_flag_help("loss")),
    config: Optional[Path] = typer.Option(None, "--config", exists=True, dir_okay=False, help=CONFIG_HELP),
    dry_run: bool = DRY_RUN,
    **given,
) -> None:
    """Train the UniMP model on one or several tasks of a dataset folder."""
    overrides = _overrides(TRAIN, model=model, loss=loss, **given)
    spec = resolve(TrainSpec, config, overrides, dry_run)
    _run(spec)


@handle_errors
@spec_options(FINETUNE, TrainSpec)
def finetune(
    source: Path = typer.Option(..., "--from", exists=True, file_okay=False, help="Finished run to start from."),
    config: Optional[Path] = typer.Option(None, "--config", exists=True, dir_okay=False,
                                          help="Spec file (YAML, TOML or JSON) over the run's settings; "
                                          "command-line flags override it."),
    dry_run: bool = DRY_RUN,
    **given,
) -> None:
    """Continue from a finished run's weights, by default on `rec` alone with a constant schedule."""
    overrides = _overrides(FINETUNE, **given)
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
