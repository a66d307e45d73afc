"""`unimp tokenize-images`: encode every item image of a dataset folder into discrete VQ codes."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from unimp_core.specs.images import TokenizeImagesSpec as TS

from .common import CONFIG_HELP, DRY_RUN_HELP, handle_errors, resolve
from .options import Flag, spec_options, spec_overrides


# The flags of `unimp tokenize-images`, each a field of TokenizeImagesSpec (its --help is the field's description).
TOKENIZE_IMAGES: list[Flag | str] = [
    Flag("data", "--data", exists=True, file_okay=False),
    Flag("vq", "--vq"),
    Flag("train_codebook", "--train-codebook/--no-train-codebook"),
    Flag("resolution"),
    Flag("batch_size"),
    Flag("device"),
    Flag("force", "--force"),
    Flag("codebook.size", name="codebook_size"),
    Flag("codebook.dim", name="codebook_dim"),
    Flag("codebook.factor"),
    Flag("codebook.width"),
    Flag("codebook.steps"),
    Flag("codebook.lr"),
    Flag("codebook.holdout"),
    Flag("codebook.save_every"),
    Flag("codebook.seed"),
]


@handle_errors
@spec_options(TOKENIZE_IMAGES, TS)
def tokenize_images(
    config: Optional[Path] = typer.Option(None, "--config", exists=True, dir_okay=False, help=CONFIG_HELP),
    dry_run: bool = typer.Option(False, "--dry-run", help=DRY_RUN_HELP),
    **given,
) -> None:
    """Encode every item image into a grid of discrete codes (trained codebook or a pretrained --vq)."""
    overrides = spec_overrides(TOKENIZE_IMAGES, given)
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
