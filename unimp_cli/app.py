"""The `unimp` command. Each command lives in its own module and is imported lazily enough that
`unimp --help` stays instant (torch and friends are imported inside commands only)."""

from __future__ import annotations

import sys

import typer

from unimp_core.specs.data import FilterImagesSpec, PrepareSpec
from unimp_core.specs.evaluate import EvaluateSpec, GenerateSpec
from unimp_core.specs.images import TokenizeImagesSpec
from unimp_core.specs.items import TokenizeItemsSpec
from unimp_core.specs.serve import ServeSpec
from unimp_core.specs.train import TrainSpec

from .common import config_only_help, expand_multi
from .evaluate import evaluate
from .filter_images import filter_images
from .generate import generate
from .prepare import prepare
from .report import report
from .serve import serve
from .tokenize_images import tokenize_images
from .tokenize_items import tokenize_items
from .train import finetune, train

app = typer.Typer(
    name="unimp",
    help="Unified multi-modal personalization (UniMP): prepare data, train, evaluate, generate, serve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# command name, function, the spec its options fill (its other fields are listed under --help)
COMMANDS = [
    ("prepare", prepare, PrepareSpec), ("filter-images", filter_images, FilterImagesSpec),
    ("tokenize-images", tokenize_images, TokenizeImagesSpec), ("tokenize-items", tokenize_items, TokenizeItemsSpec),
    ("train", train, TrainSpec),
    ("finetune", finetune, TrainSpec), ("evaluate", evaluate, EvaluateSpec), ("generate", generate, GenerateSpec),
    ("serve", serve, ServeSpec),
]
for _name, _fn, _spec in COMMANDS:
    app.command(_name, epilog=config_only_help(_spec, _fn))(_fn)
# `report` reads run folders and takes three options: no spec, no --config
app.command("report")(report)


def main(argv: list[str] | None = None) -> None:
    args = expand_multi(sys.argv[1:] if argv is None else argv)
    app(args=args, prog_name="unimp")
