"""Specs for `unimp prepare` and `unimp filter-images`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from .base import Spec


# Column roles a user's own files can map; user/item/timestamp are required.
INTERACTION_COLUMNS = ("user", "item", "timestamp", "rating", "review", "summary")
ITEM_COLUMNS = ("title", "brand", "category", "price", "description", "image_url", "image_path", "attributes")


class FilesSpec(Spec):
    """A user's own tables (`--source files`)."""

    interactions: Path = Field(description="Interactions table: CSV, TSV, JSON lines or Parquet (by extension).")
    items: Path | None = Field(
        default=None,
        description="Optional items table (same formats), keyed by the item column; its attributes column holds a "
        "list of attribute ids or words per item (in CSV/TSV: separated by '|' when the text holds one, else by "
        "spaces). Or a JSON file that is one object of item id -> list of attributes.")
    images: Path | None = Field(default=None, description="Folder that relative image_path values are read from (default: the folder of the table that names them).")
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="Column mapping role=column; roles: user item timestamp rating review summary "
        "(interactions) and item title brand category price description image_url image_path attributes (items). "
        "Unmapped roles default to a column of the same name when present.",
    )
    domain: str = Field(default="files", description="Domain name recorded for these items and user keys.")
    timestamp_format: str | None = Field(
        default=None, description="strptime format when timestamps are text; numbers are taken as Unix seconds."
    )

    @model_validator(mode="after")
    def _roles(self) -> "FilesSpec":
        unknown = set(self.columns) - set(INTERACTION_COLUMNS) - set(ITEM_COLUMNS)
        if unknown:
            raise ValueError(f"unknown column role(s) {sorted(unknown)}; valid: "
                             f"{', '.join(INTERACTION_COLUMNS + ITEM_COLUMNS)}")
        return self


# Roles RecBole atomic fields can map (no image_path: atomic files carry no local picture folder).
RECBOLE_ROLES = INTERACTION_COLUMNS + tuple(r for r in ITEM_COLUMNS if r != "image_path")


class RecboleSpec(Spec):
    """RecBole atomic files (`--source recbole`): NAME.inter and NAME.item in the --input folder."""

    columns: dict[str, str] = Field(
        default_factory=dict,
        description="Field mapping role=field for RecBole atomic files; roles: user item timestamp rating review "
        "summary (.inter) and title brand category price description image_url (.item). Unmapped roles use "
        "RecBole's usual field names (user_id, item_id, rating, timestamp, title/movie_title, categories/class, ...).",
    )

    @model_validator(mode="after")
    def _roles(self) -> "RecboleSpec":
        unknown = set(self.columns) - set(RECBOLE_ROLES)
        if unknown:
            raise ValueError(f"unknown column role(s) {sorted(unknown)}; valid: {', '.join(RECBOLE_ROLES)}")
        return self


class ImageDownloadSpec(Spec):
    """How item images are fetched."""

    enabled: bool = Field(default=True, description="Download item images (--no-images skips them).")
    concurrency: int = Field(default=32, ge=1, le=1024, description="Simultaneous image downloads.")
    per_host: int = Field(default=32, ge=1, le=1024, description="Simultaneous connections to one host.")
    timeout: float = Field(default=30.0, gt=0, description="Seconds per request before it counts as a timeout.")
    retries: int = Field(default=3, ge=0, le=20, description="Retries on timeouts, connection errors and 5xx (never on 4xx).")
    backoff: float = Field(default=0.5, ge=0, description="First retry delay in seconds; doubles each retry.")
    max_bytes: int = Field(default=20_000_000, gt=0, description="Largest image accepted, in bytes.")


class PrepareSpec(Spec):
    """Everything `unimp prepare` needs; saved as prepare_spec.json in the dataset folder."""

    source: Literal["amazon2014", "amazon2018", "amazon2023", "hm", "netflix", "files", "recbole", "sample"] = Field(
        default="amazon2014", description="Where the data comes from."
    )
    datasets: list[str] = Field(
        default_factory=list,
        description="Amazon categories by short name (beauty sports ...), 'sample' for the bundled synthetic shop, "
        "or the NAME of RecBole atomic files NAME.inter (default: the --input folder's name).",
    )
    out: Path | None = Field(default=None, description="Dataset folder to write (default data/<datasets joined by '-'>).")
    mirror: str | None = Field(
        default=None, description="Base URL or local folder that replaces the official download location."
    )
    input: Path | None = Field(
        default=None, description="Local folder of an H&M or Netflix dump or of RecBole atomic files (--source hm|netflix|recbole)."
    )
    files: FilesSpec | None = Field(default=None, description="Tables and column mapping for --source files.")
    recbole: RecboleSpec = Field(default_factory=RecboleSpec, description="Field mapping for --source recbole.")
    cache_dir: Path = Field(
        default=Path.home() / ".cache" / "unimp",
        description="Where raw dumps and downloaded images are kept between runs (resumable).",
    )
    user_core: int = Field(default=8, ge=1, description="Keep users with at least this many interactions (iterated k-core).")
    item_core: int = Field(default=5, ge=1, description="Keep items with at least this many interactions (iterated k-core).")
    protocol: Literal["user-split", "leave-one-out"] = Field(
        default="user-split", description="user-split: 80/10/10 of shuffled users; leave-one-out: last item test, previous valid."
    )
    split: tuple[float, float, float] = Field(default=(0.8, 0.1, 0.1), description="Train/valid/test user shares for user-split.")
    seed: int = Field(default=42, ge=0, description="Seed for tie-breaks, re-indexing, user split and evaluation instances.")
    explanations: Path | None = Field(
        default=None, description="P5/Sentires explanation file (pickle or JSON lines); default: review summary."
    )
    images: ImageDownloadSpec = Field(default_factory=ImageDownloadSpec, description="Image download settings.")
    keep_items_without_meta: bool = Field(
        default=False,
        description="Amazon: keep reviews of items with no metadata line or no image URL (by default they are "
        "dropped before the k-core, as the paper's preprocessing does, and counted in the manifest).",
    )
    strict: bool = Field(default=False, description="Fail on the first malformed line instead of skipping and counting it.")
    rating_scale: tuple[float, float] = Field(
        default=(1.0, 5.0),
        description="Lowest and highest rating in --source files tables and RecBole atomic files; other ratings (and non-finite ones) "
        "are skipped and counted, or rejected with --strict. Ratings are stored mapped onto 1..5.",
    )
    overwrite: bool = Field(default=False, description="Replace an existing complete dataset folder.")
    sample_users: int = Field(default=400, ge=10, description="Users in the synthetic sample shop.")
    sample_items: int = Field(default=240, ge=10, description="Items in the synthetic sample shop.")

    @model_validator(mode="after")
    def _check(self) -> "PrepareSpec":
        if "sample" in self.datasets:
            if len(self.datasets) > 1:
                raise ValueError("datasets: 'sample' cannot be mixed with other datasets")
            self.__dict__["source"] = "sample"
        if self.source in ("amazon2014", "amazon2018", "amazon2023") and not self.datasets:
            raise ValueError("datasets: name at least one category (see --list-datasets)")
        if self.source in ("hm", "netflix", "recbole") and self.input is None:
            raise ValueError(f"input: --source {self.source} needs --input FOLDER")
        if self.source == "recbole":
            if len(self.datasets) > 1:
                raise ValueError("datasets: --source recbole reads one dataset NAME (NAME.inter)")
            if not self.datasets:  # RecBole's own layout: data_path/NAME/NAME.inter
                self.__dict__["datasets"] = [self.input.resolve().name]
        if self.source == "files" and self.files is None:
            raise ValueError("files: --source files needs --interactions FILE")
        lo, hi = self.rating_scale
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError("rating_scale: two finite numbers, lowest first")
        if abs(sum(self.split) - 1.0) > 1e-6 or min(self.split) < 0:
            raise ValueError("split: three non-negative shares that sum to 1")
        return self

    def output_dir(self) -> Path:
        if self.out is not None:
            return self.out
        name = "-".join(self.datasets) if self.datasets else self.source
        return Path("data") / name


class FilterImagesSpec(Spec):
    """`unimp filter-images`: verify images, drop items without a valid one, re-filter, re-index."""

    data: Path = Field(description="Dataset folder written by `unimp prepare`.")
    missing: Literal["drop", "keep"] = Field(default="drop", description="Drop items without a valid image, or keep them without one.")
    min_side: int = Field(default=16, ge=1, description="Images smaller than this many pixels on a side are placeholders.")
    user_core: int | None = Field(default=None, ge=1, description="k-core for users after dropping (default: the dataset's own).")
    item_core: int | None = Field(default=None, ge=1, description="k-core for items after dropping (default: the dataset's own).")
