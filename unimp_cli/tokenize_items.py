"""`unimp tokenize-items`: give every catalogue item a semantic id (residual-quantised item embeddings)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from unimp_core.specs.base import describe as d
from unimp_core.specs.items import RQVAESpec as RS, TokenizeItemsSpec as TS

from .common import CONFIG_HELP, DRY_RUN_HELP, handle_errors, resolve


@handle_errors
def tokenize_items(
    data: Optional[Path] = typer.Option(None, "--data", exists=True, file_okay=False, help=d(TS, "data")),
    source: Optional[list[str]] = typer.Option(None, "--source", help=d(TS, "source")),
    text_encoder: Optional[str] = typer.Option(None, help=d(TS, "text_encoder")),
    dims: Optional[int] = typer.Option(None, help=d(TS, "dims")),
    window: Optional[int] = typer.Option(None, help=d(TS, "window")),
    quantizer: Optional[str] = typer.Option(None, help=d(TS, "quantizer")),
    levels: Optional[int] = typer.Option(None, help=d(TS, "levels")),
    codes: Optional[int] = typer.Option(None, help=d(TS, "codes")),
    balance: Optional[bool] = typer.Option(None, "--balance/--no-balance", help=d(TS, "balance")),
    fit_items: Optional[int] = typer.Option(None, help=d(TS, "fit_items")),
    seed: Optional[int] = typer.Option(None, help=d(TS, "seed")),
    device: Optional[str] = typer.Option(None, help=d(TS, "device")),
    force: Optional[bool] = typer.Option(None, "--force", help=d(TS, "force")),
    rqvae_steps: Optional[int] = typer.Option(None, help=d(RS, "steps")),
    rqvae_lr: Optional[float] = typer.Option(None, help=d(RS, "lr")),
    config: Optional[Path] = typer.Option(None, "--config", exists=True, dir_okay=False, help=CONFIG_HELP),
    dry_run: bool = typer.Option(False, "--dry-run", help=DRY_RUN_HELP),
) -> None:
    """Give every item a semantic id: a few residual-quantiser codes of its embeddings + a collision index."""
    overrides = {
        "data": data, "source": source, "text_encoder": text_encoder, "dims": dims, "window": window,
        "quantizer": quantizer, "levels": levels, "codes": codes, "balance": balance, "fit_items": fit_items, "seed": seed,
        "device": device, "force": force, "rqvae": {"steps": rqvae_steps, "lr": rqvae_lr},
    }
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
