"""`unimp tokenize-images`: encode every item image of a dataset folder into discrete VQ codes."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from unimp_core.specs.base import describe as d
from unimp_core.specs.images import CodebookSpec as CS, TokenizeImagesSpec as TS

from .common import CONFIG_HELP, DRY_RUN_HELP, handle_errors, resolve


@handle_errors
def tokenize_images(
    data: Optional[Path] = typer.Option(None, "--data", exists=True, file_okay=False, help=d(TS, "data")),
    vq: Optional[str] = typer.Option(None, "--vq", help=d(TS, "vq")),
    train_codebook: Optional[bool] = typer.Option(None, "--train-codebook/--no-train-codebook",
                                                  help=d(TS, "train_codebook")),
    resolution: Optional[int] = typer.Option(None, help=d(TS, "resolution")),
    batch_size: Optional[int] = typer.Option(None, help=d(TS, "batch_size")),
    device: Optional[str] = typer.Option(None, help=d(TS, "device")),
    force: Optional[bool] = typer.Option(None, "--force", help=d(TS, "force")),
    codebook_size: Optional[int] = typer.Option(None, help=d(CS, "size")),
    codebook_dim: Optional[int] = typer.Option(None, help=d(CS, "dim")),
    factor: Optional[int] = typer.Option(None, help=d(CS, "factor")),
    width: Optional[int] = typer.Option(None, help=d(CS, "width")),
    steps: Optional[int] = typer.Option(None, help=d(CS, "steps")),
    lr: Optional[float] = typer.Option(None, help=d(CS, "lr")),
    holdout: Optional[float] = typer.Option(None, help=d(CS, "holdout")),
    save_every: Optional[int] = typer.Option(None, help=d(CS, "save_every")),
    seed: Optional[int] = typer.Option(None, help=d(CS, "seed")),
    config: Optional[Path] = typer.Option(None, "--config", exists=True, dir_okay=False, help=CONFIG_HELP),
    dry_run: bool = typer.Option(False, "--dry-run", help=DRY_RUN_HELP),
) -> None:
    """Encode every item image into a grid of discrete codes (trained codebook or a pretrained --vq)."""
    overrides = {
        "data": data, "vq": vq, "train_codebook": train_codebook, "resolution": resolution, "batch_size": batch_size,
        "device": device, "force": force,
        "codebook": {"size": codebook_size, "dim": codebook_dim, "factor": factor, "width": width, "steps": steps,
                     "lr": lr, "holdout": holdout, "save_every": save_every, "seed": seed},
    }
    spec = resolve(TS, config, overrides, dry_run)

    from unimp_core.imagegen.tokenize import run_tokenize_images
    from unimp_core.progress import Progress

    with Progress.rich() as progress:
        rec = run_tokenize_images(spec, progress)
    _summary(spec.data, rec)


def _summary(root: Path, rec: dict) -> None:
    tok = rec["tokenizer"]
    who = f"trained here (config {tok['config_hash']})" if tok["kind"] == "trained" else f"pretrained {tok['source']}"
    items = rec["items"]
    typer.echo(f"{root}: {items['encoded']}/{items['total']} item images -> {rec['grid']}x{rec['grid']} codes "
               f"from a {rec['codebook_size']}-entry codebook at {rec['resolution']} px; tokenizer {who}")
    if items["missing"]:
        typer.echo(f"without codes: {items['no_image']} items without an image, {items['unreadable']} unreadable")
    q, u = rec.get("quality"), rec["codebook_usage"]
    if q:
        where = "held-out" if q["held_out"] else "sampled"
        typer.echo(f"reconstruction on {q['images']} {where} images: PSNR {q['psnr']:.2f} dB, SSIM {q['ssim']:.3f} "
                   f"(pairs in {root / rec['vq'] / 'reconstructions.png'})")
    typer.echo(f"codebook usage: {u['used']}/{rec['codebook_size']} codes, perplexity {u['perplexity']}")
