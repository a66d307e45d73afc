"""The dataset folder: the one contract between `prepare` and everything that reads data.

Layout (names other steps rely on):
    manifest.json          schema version, sources, parameters, counts, image counts, skips
    prepare_spec.json      the resolved spec that produced the folder
    items.parquet          item_id, source_id, domain, title, brand, category, price, description, image_url, image
    interactions.parquet   user_id, user_key, item_id, timestamp, rating, review, summary, explanation (time order per user)
    users.parquet          user_id, user_key, domain, length, split
    eval/<task>.parquet    evaluation instances drawn once (rec, search, exp, img_sel)
    images/<item_id>.jpg

A folder is complete only when manifest.json exists; it is written last, into a staging folder
that is renamed into place, so an interrupted run never leaves a folder that looks finished.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import polars as pl

from .. import __version__
from ..errors import UnimpError
from ..io import atomic_path, write_json_atomic

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"

ITEMS_SCHEMA = {
    "item_id": pl.Int64, "source_id": pl.Utf8, "domain": pl.Utf8, "title": pl.Utf8, "brand": pl.Utf8,
    "category": pl.Utf8, "price": pl.Float64, "description": pl.Utf8, "image_url": pl.Utf8, "image": pl.Utf8,
}
INTERACTIONS_SCHEMA = {
    "user_id": pl.Int64, "user_key": pl.Utf8, "item_id": pl.Int64, "timestamp": pl.Int64, "rating": pl.Float64,
    "review": pl.Utf8, "summary": pl.Utf8, "explanation": pl.Utf8,
}
USERS_SCHEMA = {"user_id": pl.Int64, "user_key": pl.Utf8, "domain": pl.Utf8, "length": pl.Int64, "split": pl.Utf8}


@dataclass
class Dataset:
    """A dataset folder in memory."""

    items: pl.DataFrame
    interactions: pl.DataFrame
    users: pl.DataFrame
    instances: dict[str, pl.DataFrame]
    manifest: dict[str, Any] = field(default_factory=dict)
    root: Path | None = None

    def sequences(self) -> dict[int, list[int]]:
        """user_id -> item ids in time order."""
        g = self.interactions.group_by("user_id", maintain_order=True).agg(pl.col("item_id"))
        return dict(zip(g["user_id"].to_list(), g["item_id"].to_list()))


def _select(df: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    return df.select([pl.col(c).cast(t) if c in df.columns else pl.lit(None, dtype=t).alias(c) for c, t in schema.items()])


def _write_parquet(df: pl.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.write_parquet(tmp)


def write_tables(root: Path, ds: Dataset) -> None:
    """Write the tables of `ds` under `root` (no manifest: the caller writes it last)."""
    root.mkdir(parents=True, exist_ok=True)
    _write_parquet(_select(ds.items, ITEMS_SCHEMA), root / "items.parquet")
    _write_parquet(_select(ds.interactions, INTERACTIONS_SCHEMA), root / "interactions.parquet")
    _write_parquet(_select(ds.users, USERS_SCHEMA), root / "users.parquet")
    (root / "eval").mkdir(exist_ok=True)
    for task, df in ds.instances.items():
        _write_parquet(df, root / "eval" / f"{task}.parquet")


def new_manifest(**fields: Any) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "unimp_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **fields,
    }


def staging_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.staging"


def publish(staging: Path, out: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest last, then move the staging folder onto `out` (replacing an old one)."""
    write_json_atomic(staging / MANIFEST, manifest)
    if out.exists():
        old = out.parent / f".{out.name}.old"
        if old.exists():
            shutil.rmtree(old)
        os.replace(out, old)
        os.replace(staging, out)
        shutil.rmtree(old)
    else:
        os.replace(staging, out)


def is_complete(path: Path) -> bool:
    return (path / MANIFEST).is_file()


def read_manifest(root: str | os.PathLike) -> dict[str, Any]:
    root = Path(root)
    if not root.is_dir():
        raise UnimpError(f"{root}: dataset folder not found (run `unimp prepare` first)")
    path = root / MANIFEST
    if not path.is_file():
        raise UnimpError(f"{root}: not a complete dataset folder (no {MANIFEST}; rerun `unimp prepare`)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UnimpError(f"{path}: unreadable manifest: {exc}") from exc
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise UnimpError(
            f"{path}: dataset schema version {version}, this unimp reads {SCHEMA_VERSION}; rerun `unimp prepare`"
        )
    return manifest


def load_dataset(root: str | os.PathLike) -> Dataset:
    """Read a complete dataset folder (checks the schema version)."""
    root = Path(root)
    manifest = read_manifest(root)
    instances = {p.stem: pl.read_parquet(p) for p in sorted((root / "eval").glob("*.parquet"))}
    return Dataset(
        items=pl.read_parquet(root / "items.parquet"),
        interactions=pl.read_parquet(root / "interactions.parquet"),
        users=pl.read_parquet(root / "users.parquet"),
        instances=instances,
        manifest=manifest,
        root=root,
    )
