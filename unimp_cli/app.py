"""The `unimp` command. Each command lives in its own module and is imported lazily enough that
`unimp --help` stays instant (torch and friends are imported inside commands only)."""

from __future__ import annotations

import sys

import typer

from .common import expand_multi
from .evaluate import evaluate
from .filter_images import filter_images
from .generate import generate
from .prepare import prepare
from .tokenize_images import tokenize_images
from .train import finetune, train

app = typer.Typer(
    name="unimp",
    help="Unified multi-modal personalization (UniMP): prepare data, train, evaluate, generate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("prepare")(prepare)
app.command("filter-images")(filter_images)
app.command("tokenize-images")(tokenize_images)
app.command("train")(train)
app.command("finetune")(finetune)
app.command("evaluate")(evaluate)
app.command("generate")(generate)


def main(argv: list[str] | None = None) -> None:
    args = expand_multi(sys.argv[1:] if argv is None else argv)
    app(args=args, prog_name="unimp")
