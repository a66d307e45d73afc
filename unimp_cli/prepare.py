"""`unimp prepare`: build a dataset folder from Amazon, H&M, Netflix, RecBole atomic files, your own files or the
sample shop."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import typer

from unimp_core.specs.base import describe as d
from unimp_core.specs.data import FilesSpec as FS, PrepareSpec as PS, RecboleSpec as RS

from .common import CONFIG_HELP, DRY_RUN_HELP, handle_errors, resolve
from .options import Flag, spec_options, spec_overrides


# The flags of `unimp prepare`, each a spec field (its --help is the field's description); the strings are the
# command's own parameters, and the flags marked to_spec=False make the `files` section below.
PREPARE: list[Flag | str] = [
    Flag("datasets", "--datasets", after=" Several: --datasets beauty sports."),
    Flag("source", after=" One of amazon2014, amazon2018, amazon2023, hm, netflix, files, recbole, sample."),
    "amazon_version",
    Flag("out", "--out", "-o"),
    Flag("mirror"),
    Flag("input", "--input", exists=True, file_okay=False),
    Flag("files.interactions", to_spec=False, exists=True, dir_okay=False),
    Flag("files.items", to_spec=False, exists=True, dir_okay=False),
    Flag("files.images", "--images-dir", name="images_dir", to_spec=False, exists=True, file_okay=False),
    "column",
    Flag("files.domain", to_spec=False),
    Flag("files.timestamp_format", to_spec=False),
    Flag("rating_scale", "--rating-scale", type=Tuple[float, float], after=" Two numbers: --rating-scale 0 10."),
    Flag("cache_dir"),
    Flag("user_core"),
    Flag("item_core"),
    Flag("protocol"),
    Flag("seed"),
    Flag("explanations", exists=True, dir_okay=False),
    Flag("images.enabled", "--images/--no-images", name="images"),
    Flag("images.concurrency"),
    Flag("images.per_host"),
    Flag("images.timeout"),
    Flag("images.retries"),
    Flag("images.max_bytes", name="max_image_bytes"),
    Flag("keep_items_without_meta", "--keep-items-without-meta"),
    Flag("strict", "--strict/--lenient"),
    Flag("overwrite", "--overwrite"),
    Flag("sample_users"),
    Flag("sample_items"),
]


@handle_errors
@spec_options(PREPARE, PS)
def prepare(
    amazon_version: Optional[str] = typer.Option(None, "--amazon-version", help="Amazon Reviews release: 2014, 2018 "
                                                 "or 2023 (the same as --source amazon2014|amazon2018|amazon2023)."),
    column: Optional[List[str]] = typer.Option(None, "--column", help="role=column, repeatable. " + d(FS, "columns")
                                               + " With --source recbole: role=field. " + d(RS, "columns")),
    list_datasets: bool = typer.Option(False, "--list-datasets", help="List the Amazon short names and exit."),
    config: Optional[Path] = typer.Option(None, "--config", exists=True, dir_okay=False, help=CONFIG_HELP),
    dry_run: bool = typer.Option(False, "--dry-run", help=DRY_RUN_HELP),
    **given,
) -> None:
    """Download/read, k-core filter, re-index, split and write a self-describing dataset folder."""
    source = given["source"]
    if amazon_version is not None:
        if amazon_version not in ("2014", "2018", "2023"):
            raise typer.BadParameter(f"{amazon_version!r}: one of 2014, 2018, 2023", param_hint="--amazon-version")
        if source is not None and source != f"amazon{amazon_version}":
            raise typer.BadParameter(f"--source {source} names another source", param_hint="--amazon-version")
        source = given["source"] = f"amazon{amazon_version}"
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
    files = {"interactions": given["interactions"], "items": given["items"], "images": given["images_dir"],
             "columns": {} if recbole else columns, "domain": given["domain"],
             "timestamp_format": given["timestamp_format"]}
    overrides = {**spec_overrides(PREPARE, given),
                 "files": files if files["interactions"] or files["columns"] or files["items"] else None,
                 "recbole": {"columns": columns} if recbole and columns else None}
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
    from unimp_core.tasks import DATA_NEEDS, skipped_line

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
    if DATA_NEEDS["reviews"][0] not in skipped.values():  # the data has reviews to explain with
        t.add_row("explanations from", m["explanation_source"])
    con.print(t)
    if skipped:
        con.print(f"[yellow]{skipped_line(skipped)}[/]", soft_wrap=True)
