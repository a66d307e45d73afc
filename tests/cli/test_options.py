"""Flags made from spec fields (unimp_cli/options.py): one table line gives the option, its --help text (the field's
description) and its place in the spec."""

from __future__ import annotations

import json
from typing import Optional

import typer
from typer.testing import CliRunner

from unimp_cli.options import Flag, spec_options, spec_overrides
from unimp_core.specs.base import describe
from unimp_core.specs.train import OptimSpec, TrainSpec

TABLE = [Flag("optim.grad_clip"), "note", Flag("run.trackers", name="tracker"), Flag("run.resume", "--resume")]


def test_a_table_line_is_a_flag_with_the_field_help_and_its_spec_path():
    app = typer.Typer()

    @app.command()
    @spec_options(TABLE, TrainSpec)
    def cmd(note: Optional[str] = typer.Option(None, help="The command's own option."), **given) -> None:
        typer.echo(json.dumps({"note": note, "spec": spec_overrides(TABLE, given)}))

    runner = CliRunner()
    res = runner.invoke(app, ["--grad-clip", "0.5", "--note", "hi", "--tracker", "wandb", "--tracker", "tensorboard"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output) == {"note": "hi", "spec": {"optim": {"grad_clip": 0.5},
                                                             "run": {"trackers": ["wandb", "tensorboard"], "resume": None}}}
    assert runner.invoke(app, ["--resume"]).exit_code == 0
    help_text = " ".join(runner.invoke(app, ["--help"], env={"COLUMNS": "300"}).output.split())
    assert describe(OptimSpec, "grad_clip") in help_text and "The command's own option." in help_text
    # table order, the command's own parameter where the table names it
    assert help_text.index("--grad-clip") < help_text.index("--note") < help_text.index("--tracker")
    assert runner.invoke(app, ["--grad-clip", "lots"]).exit_code == 2  # typed from the field: a float
