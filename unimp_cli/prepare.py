"""`unimp prepare`: build a dataset folder from Amazon, H&M, Netflix, RecBole atomic files, your own files or the
sample shop."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import typer

from unimp_core.specs.base import describe as d
from unimp_core.specs.data import FilesSpec as FS, ImageDownloadSpec as IS, PrepareSpec as PS, RecboleSpec as RS

from .common import CONFIG_HELP, DRY_RUN_HELP, handle_errors, resolve


@handle_errors
def prepare(
    datasets: Optional[List[str]] = typer.Option(None, "--datasets", help=d(PS, "datasets") + " Several: --datasets beauty sports."),
    source: Optional[str] = typer.Option(None, help=d(PS, "source") + " One of amazon2014, amazon2018, amazon2023, hm, "
                                         "netflix, files, recbole, sample."),
    amazon_version: Optional[str] = typer.Option(None, "--amazon-version", help="Amazon Reviews release: 2014, 2018 "
                                                 "or 2023 (the same as --source amazon2014|amazon2018|amazon2023)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help=d(PS, "out")),
    mirror: Optional[str] = typer.Option(None, help=d(PS, "mirror")),
    input: Optional[Path] = typer.Option(None, "--input", exists=True, file_okay=False, help=d(PS, "input")),
    interactions: Optional[Path] = typer.Option(None, exists=True, dir_okay=False, help=d(FS, "interactions")),
    items: Optional[Path] = typer.Option(None, exists=True, dir_okay=False, help=d(FS, "items")),
    images_dir: Optional[Path] = typer.Option(None, "--images-dir", exists=True, file_okay=False, help=d(FS, "images")),
    column: Optional[List[str]] = typer.Option(None, "--column", help="role=column, repeatable. " + d(FS, "columns")
                                               + " With --source recbole: role=field. " + d(RS, "columns")),
    domain: Optional[str] = typer.Option(None, help=d(FS, "domain")),
    timestamp_format: Optional[str] = typer.Option(None, help=d(FS, "timestamp_format")),
    rating_scale: Optional[Tuple[float, float]] = typer.Option(None, "--rating-scale", help=d(PS, "rating_scale")
                                                               + " Two numbers: --rating-scale 0 10."),
    cache_dir: Optional[Path] = typer.Option(None, help=d(PS, "cache_dir")),
    user_core: Optional[int] = typer.Option(None, help=d(PS, "user_core")),
    item_core: Optional[int] = typer.Option(None, help=d(PS, "item_core")),
    protocol: Optional[str] = typer.Option(None, help=d(PS, "protocol")),
    seed: Optional[int] = typer.Option(None, help=d(PS, "seed")),
    explanations: Optional[Path] = typer.Option(None, exists=True, dir_okay=False, help=d(PS, "explanations")),
    images: Optional[bool] = typer.Option(None, "--images/--no-images", help=d(IS, "enabled")),
    concurrency: Optional[int] = typer.Option(None, help=d(IS, "concurrency")),
    per_host: Optional[int] = typer.Option(None, help=d(IS, "per_host")),
    timeout: Optional[float] = typer.Option(None, help=d(IS, "timeout")),
    retries: Optional[int] = typer.Option(None, help=d(IS, "retries")),
    max_image_bytes: Optional[int] = typer.Option(None, help=d(IS, "max_bytes")),
    keep_items_without_meta: Optional[bool] = typer.Option(
        None, "--keep-items-without-meta", help=d(PS, "keep_items_without_meta")),
    strict: Optional[bool] = typer.Option(None, "--strict/--lenient", help=d(PS, "strict")),
    overwrite: Optional[bool] = typer.Option(None, "--overwrite", help=d(PS, "overwrite")),
    sample_users: Optional[int] = typer.Option(None, help=d(PS, "sample_users")),
    sample_items: Optional[int] = typer.Option(None, help=d(PS, "sample_items")),
    list_datasets: bool = typer.Option(False, "--list-datasets", help="List the Amazon short names and exit."),
    config: Optional[Path] = typer.Option(None, "--config", exists=True, dir_okay=False, help=CONFIG_HELP),
    dry_run: bool = typer.Option(False, "--dry-run", help=DRY_RUN_HELP),
) -> None:
    """Download/read, k-core filter, re-index, split and write a self-describing dataset folder."""
    if amazon_version is not None:
        if amazon_version not in ("2014", "2018", "2023"):
            raise typer.BadParameter(f"{amazon_version!r}: one of 2014, 2018, 2023", param_hint="--amazon-version")
        if source is not None and source != f"amazon{amazon_version}":
            raise typer.BadParameter(f"--source {source} names another source", param_hint="--amazon-version")
        source = f"amazon{amazon_version}"
    if list_datasets:
        _list_datasets(source or "amazon2014")
        return
    columns = {}
    for pair in column or []:
        role, sep, name = pair.partition("=")
        if not sep or not role or not name:
            raise typer.BadParameter(f"--column {pair!r}: expected role=column")
        columns[role] = name
    recbole = source == "recbole"  # --column maps RecBole fields, not table columns
    files = {"interactions": interactions, "items": items, "images": images_dir, "columns": {} if recbole else columns,
             "domain": domain, "timestamp_format": timestamp_format}
    overrides = {
        "source": source, "datasets": datasets, "out": out, "mirror": mirror, "input": input,
        "files": files if interactions or files["columns"] or items else None, "cache_dir": cache_dir,
        "recbole": {"columns": columns} if recbole and columns else None,
        "user_core": user_core, "item_core": item_core, "protocol": protocol, "seed": seed,
        "explanations": explanations, "keep_items_without_meta": keep_items_without_meta, "strict": strict,
        "overwrite": overwrite, "rating_scale": rating_scale,
        "sample_users": sample_users, "sample_items": sample_items,
        "images": {"enabled": images, "concurrency": concurrency, "per_host": per_host, "timeout": timeout,
                   "retries": retries, "max_bytes": max_image_bytes},
    }
    spec = resolve(PS, config, overrides, dry_run)

    from rich.console import Console

    from unimp_core.prepare import run_prepare
    from unimp_core.data.store import read_manifest
    from unimp_core.progress import Progress

    with Progress.rich() as progress:
        path = run_prepare(spec, progress)
    _summary(Console(), path, read_manifest(path))


def _list_datasets(release: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from unimp_core.data.catalog import list_datasets

    table = Table("short name", "category", title=f"Amazon datasets ({release}); also: sample (synthetic)")
    for short, stem in list_datasets(release):
        table.add_row(short, stem)
    Console().print(table)


def _summary(con, path: Path, m: dict) -> None:
    """The folder's counts; images and explanations only where there are some, and one line naming the
    tasks prepare drew no instances for (the data cannot support them)."""
    from rich.table import Table

    from unimp_core.prepare import KCORE
    from unimp_core.tasks import skipped_line

    c = m["counts"]
    skipped = m.get("tasks_skipped") or {}
    title = f"{path}" + ("  [bold yellow](SYNTHETIC sample data)[/]" if m.get("synthetic") else "")
    t = Table("", "value", title=title)
    t.add_row("users / items / interactions", f"{c['users']} / {c['items']} / {c['interactions']}")
    for key, per in c["per_split"].items():
        t.add_row(f"{key} per split", ", ".join(f"{k} {v}" for k, v in sorted(per.items())))
    attrs = c.get("attributes") or {}
    if attrs.get("items_with_attributes"):
        t.add_row("items with attributes", f"{attrs['items_with_attributes']} ({attrs['distinct_attributes']} distinct, "
                  f"{attrs['mean_per_item']:.1f} per item)")
    img = m["images"]
    if img["ok"] or img["failed"]:
        t.add_row("images ok / missing", f"{img['ok']} / {img['missing']}")
    if img["failed"]:
        t.add_row("images failed", ", ".join(f"{k}: {v}" for k, v in img["failed"].items()))
    if m["skipped"]:
        t.add_row("lines skipped", ", ".join(f"{k}: {v}" for k, v in m["skipped"].items()))
    rows = m["rows"]
    kcore = rows["skipped"].get(KCORE)
    t.add_row("interaction rows", f"{rows['read']} read = {rows['kept']} kept + {sum(rows['skipped'].values())} "
              "skipped" + (f" ({kcore} below the k-core)" if kcore else ""))
    if "exp" not in skipped:
        t.add_row("explanations from", m["explanation_source"])
    con.print(t)
    if skipped:
        con.print(f"[yellow]{skipped_line(skipped)}[/]", soft_wrap=True)
