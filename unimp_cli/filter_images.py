"""`unimp filter-images`: drop items whose image is broken, missing or a placeholder."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from unimp_core.specs.base import describe as d
from unimp_core.specs.data import FilterImagesSpec as FS

from .common import CONFIG_HELP, DRY_RUN_HELP, handle_errors, resolve


@handle_errors
def filter_images(
    data: Optional[Path] = typer.Option(None, "--data", exists=True, file_okay=False, help=d(FS, "data")),
    missing: Optional[str] = typer.Option(None, help=d(FS, "missing")),
    min_side: Optional[int] = typer.Option(None, help=d(FS, "min_side")),
    user_core: Optional[int] = typer.Option(None, help=d(FS, "user_core")),
    item_core: Optional[int] = typer.Option(None, help=d(FS, "item_core")),
    config: Optional[Path] = typer.Option(None, "--config", exists=True, dir_okay=False, help=CONFIG_HELP),
    dry_run: bool = typer.Option(False, "--dry-run", help=DRY_RUN_HELP),
) -> None:
    """Verify every item image, drop or keep items without a valid one, re-filter and re-index."""
    overrides = {"data": data, "missing": missing, "min_side": min_side, "user_core": user_core, "item_core": item_core}
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
