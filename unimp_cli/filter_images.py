"""`unimp filter-images`: drop items whose image is broken, missing or a placeholder."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from unimp_core.specs.data import FilterImagesSpec as FS

from .common import CONFIG_HELP, DRY_RUN_HELP, handle_errors, resolve
from .options import Flag, spec_options, spec_overrides


# The flags of `unimp filter-images`, each a field of FilterImagesSpec (its --help is the field's description).
FILTER_IMAGES: list[Flag | str] = [
    Flag("data", "--data", exists=True, file_okay=False),
    Flag("missing"),
    Flag("min_side"),
    Flag("user_core"),
    Flag("item_core"),
]


@handle_errors
@spec_options(FILTER_IMAGES, FS)
def filter_images(
    config: Optional[Path] = typer.Option(None, "--config", exists=True, dir_okay=False, help=CONFIG_HELP),
    dry_run: bool = typer.Option(False, "--dry-run", help=DRY_RUN_HELP),
    **given,
) -> None:
    """Verify every item image, drop or keep items without a valid one, re-filter and re-index."""
    overrides = spec_overrides(FILTER_IMAGES, given)
    spec = resolve(FS, config, overrides, dry_run)

    from rich.console import Console
    from rich.table import Table

    from unimp_core.filter_images import run_filter_images
    from unimp_core.progress import Progress

    with Progress.rich() as progress:
        report = run_filter_images(spec, progress)
    t = Table("", "before", "after", title=f"{spec.data}: filter-images (--missing {spec.missing})")
    for key in ("items", "users", "interactions"):
        t.add_row(key, str(report["before"][key]), str(report["after"][key]))
    Console().print(t)
    reasons = ", ".join(f"{k}: {v}" for k, v in report["invalid_images"].items()) or "none"
    Console().print(f"invalid images: {reasons}")
    if report["image_codes_dropped"]:
        Console().print(f"image codes dropped (item ids changed): run `unimp tokenize-images --data {spec.data}` again")
    if report["item_codes_dropped"]:
        Console().print(f"item codes dropped (item ids changed): run `unimp tokenize-items --data {spec.data}` again")
