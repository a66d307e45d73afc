"""`unimp tokenize-items`: give every catalogue item a semantic id (residual-quantised item embeddings)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from unimp_core.specs.items import TokenizeItemsSpec as TS

from .common import CONFIG_HELP, DRY_RUN_HELP, handle_errors, resolve
from .options import Flag, spec_options, spec_overrides


# The flags of `unimp tokenize-items`, each a field of TokenizeItemsSpec (its --help is the field's description).
TOKENIZE_ITEMS: list[Flag | str] = [
    Flag("data", "--data", exists=True, file_okay=False),
    Flag("source", "--source"),
    Flag("text_encoder"),
    Flag("dims"),
    Flag("window"),
    Flag("quantizer"),
    Flag("levels"),
    Flag("codes"),
    Flag("balance", "--balance/--no-balance"),
    Flag("fit_items"),
    Flag("seed"),
    Flag("device"),
    Flag("force", "--force"),
    Flag("rqvae.steps", name="rqvae_steps"),
    Flag("rqvae.lr", name="rqvae_lr"),
]


@handle_errors
@spec_options(TOKENIZE_ITEMS, TS)
def tokenize_items(
    config: Optional[Path] = typer.Option(None, "--config", exists=True, dir_okay=False, help=CONFIG_HELP),
    dry_run: bool = typer.Option(False, "--dry-run", help=DRY_RUN_HELP),
    **given,
) -> None:
    """Give every item a semantic id: a few residual-quantiser codes of its embeddings + a collision index."""
    overrides = spec_overrides(TOKENIZE_ITEMS, given)
    spec = resolve(TS, config, overrides, dry_run)

    from unimp_core.itemcodes.tokenize import run_tokenize_items
    from unimp_core.progress import Progress

    with Progress.rich() as progress:
        rec = run_tokenize_items(spec, progress)
    _summary(spec.data, rec)


def _summary(root: Path, rec: dict) -> None:
    capped = f" (capped from {rec['codes_requested']})" if rec["codes"] < rec["codes_requested"] else ""
    typer.echo(f"{root}: {rec['items']} items -> {rec['levels']} levels x {rec['codes']} codes{capped} "
               f"+ a collision index below {rec['collision_codes']} ({rec['quantizer']}, "
               f"sources {', '.join(rec['source'])}); {rec['tokens']} new tokens")
    typer.echo(f"collisions: {rec['colliding_items']} items share their quantiser codes with another; "
               f"largest group {rec['collision_codes']}")
    for block in rec["blocks"]:
        if block["zero_rows"]:
            typer.echo(f"{block['source']}: {block['zero_rows']} items without a vector ({block['kind']})")
