"""`--source files`: a user's own interactions table and optional items table.

Tables are CSV / TSV / JSON lines / Parquet by extension (`.gz` for the text ones). Columns are
found by role (`spec.files.columns`, else a column of the role's name); user, item and timestamp
are required. Timestamps: numbers are Unix seconds, text is parsed with `timestamp_format` or as
ISO dates. A relative `image_path` is read from `spec.files.images` (default: the folder of the
table that names it) and can never point outside that folder.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import polars as pl

from ...errors import UnimpError
from ...progress import Progress
from ...specs.data import INTERACTION_COLUMNS, ITEM_COLUMNS, FilesSpec, PrepareSpec
from ..raw import RawData
from ..attributes import attribute_column, read_attribute_map
from ..tables import (as_text, epoch_seconds, file_record, first_bad_row, pick_columns, read_table, resolve_images,
                      table_kind, text_bytes)

REQUIRED = ("user", "item", "timestamp")


def _number(column: str, dtype: pl.DataType) -> pl.Expr:
    """Float64 from a numeric or text column; currency signs and spaces are ignored, junk is null."""
    if dtype.is_numeric():
        return pl.col(column).cast(pl.Float64)
    text = pl.col(column).cast(pl.Utf8).str.replace_all(r"[\s$€£¥]", "")
    return text.cast(pl.Float64, strict=False)


def _interactions(
    df: pl.DataFrame, path: Path, fs: FilesSpec, spec: PrepareSpec, skipped: Counter, notes: dict
) -> pl.DataFrame:
    strict = spec.strict
    roles = pick_columns(df, path, INTERACTION_COLUMNS, fs.columns, REQUIRED)
    ts_col = roles["timestamp"]
    out = df.select(
        (pl.lit(f"{fs.domain}:") + as_text(pl.col(roles["user"]))).alias("user_key"),
        as_text(pl.col(roles["item"])).alias("source_id"),
        epoch_seconds(ts_col, df.schema[ts_col], fs.timestamp_format).alias("timestamp"),
        as_text(pl.col(ts_col)).is_not_null().alias("_has_ts"),
        *[as_text(pl.col(roles[r])).alias(r) for r in ("review", "summary") if r in roles],
        *([_number(roles["rating"], df.schema[roles["rating"]]).alias("rating"),
           as_text(pl.col(roles["rating"])).is_not_null().alias("_has_rating")] if "rating" in roles else []),
    )
    bad_ts = pl.col("_has_ts") & pl.col("timestamp").is_null()
    n_bad = out.select(bad_ts.sum()).item()
    if n_bad:
        row = first_bad_row(out, bad_ts)
        value = df[ts_col][row - 1]
        hint = (f"format {fs.timestamp_format!r}" if fs.timestamp_format
                else "Unix seconds or ISO 8601 (set timestamp_format)")
        if n_bad == out.select(pl.col("_has_ts").sum()).item():
            raise UnimpError(f"{path}: no timestamp in column {ts_col!r} could be parsed as {hint}; "
                             f"e.g. row {row}: {value!r}")
        if strict:
            raise UnimpError(f"{path}: row {row}: cannot parse timestamp {value!r} as {hint}")
        skipped[f"timestamp not parseable as {hint}"] += n_bad
        out = out.filter(~bad_ts)
    if "rating" in roles:
        junk = out.select((pl.col("_has_rating") & pl.col("rating").is_null()).sum()).item()
        if junk:
            notes["ratings_not_numeric"] = junk  # rows kept, rating left empty
        out = check_ratings(out.drop("_has_rating"), df[roles["rating"]], path, spec, skipped)
    return out.drop("_has_ts")


def check_ratings(out: pl.DataFrame, given: pl.Series, path: Path, spec: PrepareSpec,
                   skipped: Counter) -> pl.DataFrame:
    """Ratings must be finite and within `spec.rating_scale`; other rows are skipped and counted by reason
    (or rejected under --strict). Kept ratings are mapped linearly onto 1..5, the model's scale."""
    lo, hi = spec.rating_scale
    r = pl.col("rating")
    # A missing rating is no reason to drop a row: null must read as "not bad" (`~null` is null, and
    # filtering on null drops the row).
    reasons = {"rating not a finite number": r.is_not_null() & ~r.is_finite(),
               f"rating outside {lo:g}..{hi:g} (see --rating-scale)": r.is_finite() & ((r < lo) | (r > hi))}
    for reason, bad in reasons.items():
        bad = bad.fill_null(False)  # a missing rating is not a bad one (and must not be filtered away)
        n_bad = out.select(bad.sum()).item()
        if not n_bad:
            continue
        if spec.strict:
            row = first_bad_row(out, bad)
            raise UnimpError(f"{path}: row {row}: {reason}: {out['rating'][row - 1]!r} "
                             f"(as written: {given[row - 1]!r})")
        skipped[reason] += n_bad
        out = out.filter(~bad)
    if (lo, hi) != (1.0, 5.0):
        out = out.with_columns((1.0 + 4.0 * (r - lo) / (hi - lo)).alias("rating"))
    return out


def _items(
    table: pl.DataFrame, path: Path, fs: FilesSpec, item_ids: pl.DataFrame, strict: bool, skipped: Counter,
    progress: Progress, own_table: bool,
) -> pl.DataFrame:
    """One row per interacted item with whatever item roles `table` has (first row per item wins).

    `own_table` is False when the item roles are looked for in the interactions table itself; in an items
    table of its own every row is kept or counted (no item id, a repeated item, an item never interacted).
    """
    roles = pick_columns(table, path, ("item",) + ITEM_COLUMNS, fs.columns, ("item",) if own_table else ())
    attrs = [r for r in ITEM_COLUMNS if r in roles]
    if not attrs and not own_table:
        return item_ids.with_columns(pl.lit(fs.domain).alias("domain"))
    exprs = [as_text(pl.col(roles["item"])).alias("source_id"), pl.int_range(1, pl.len() + 1).alias("_row")]
    for role in attrs:
        if role == "attributes":
            continue  # lists: read below, for the kept rows only
        col = roles[role]
        value = _number(col, table.schema[col]) if role == "price" else as_text(pl.col(col))
        exprs.append(value.alias(role))
    rows = table.select(exprs)
    found = rows.drop_nulls("source_id").unique(subset="source_id", keep="first", maintain_order=True)
    kept = found.filter(pl.col("source_id").is_in(item_ids["source_id"].implode()))
    if own_table:
        missing = rows["source_id"].null_count()
        _count(skipped, path, {"no item id (row ignored)": missing,
                               "repeated item (the first row kept)": rows.height - missing - found.height,
                               "item never in the interactions (row ignored)": found.height - kept.height})
    if "attributes" in attrs:
        kept = kept.with_columns(attribute_column(table, path, roles["attributes"], kept["_row"], kept["source_id"],
                                                  strict, skipped))
    items = item_ids.join(kept.drop("_row"), on="source_id", how="left").with_columns(
        pl.lit(fs.domain).alias("domain"))
    if "image_path" in attrs:
        root = fs.images if fs.images is not None else path.parent
        rels = items["image_path"].to_list()
        try:
            resolved = resolve_images(root, rels, skipped, must_exist=False, strict=strict, progress=progress)
        except UnimpError as exc:
            raise UnimpError(f"{path}: {exc}") from exc
        items = items.with_columns(pl.Series("image_path", resolved, dtype=pl.Utf8))
    return items


def _count(skipped: Counter, path: Path, reasons: dict[str, int]) -> None:
    for reason, n in reasons.items():
        if n:
            skipped[f"{path.name}: {reason}"] += n


def _item_table(fs: FilesSpec, item_ids: pl.DataFrame, spec: PrepareSpec, skipped: Counter,
                progress: Progress) -> pl.DataFrame:
    """The --items file: an item id -> attributes JSON object, or a table of item roles."""
    path = fs.items
    kind, compression = table_kind(path)
    if kind == "jsonl":
        item_column = fs.columns.get("item", "item")
        with progress.task(f"reading {path.name}"):
            items = read_attribute_map(text_bytes(path, compression), path, item_column, item_ids, spec.strict,
                                       skipped)
        if items is not None:
            return items.with_columns(pl.lit(fs.domain).alias("domain"))
    with progress.task(f"reading {path.name}"):
        table = read_table(path, strict=spec.strict, skipped=skipped)
    return _items(table, path, fs, item_ids, spec.strict, skipped, progress, own_table=True)


def load(spec: PrepareSpec, progress: Progress) -> RawData:
    """Read the user's tables into RawData (user_key = "<domain>:<user>")."""
    fs = spec.files
    if fs is None:
        raise UnimpError("files: --source files needs --interactions FILE")
    skipped: Counter = Counter()
    row_skips: Counter = Counter()
    notes: dict = {}
    with progress.task(f"reading {fs.interactions.name}"):
        table = read_table(fs.interactions, strict=spec.strict, skipped=row_skips)
    read = table.height + sum(row_skips.values())
    inter = _interactions(table, fs.interactions, fs, spec, row_skips, notes)
    item_ids = inter.select("source_id").drop_nulls().unique(maintain_order=True)
    sources = [file_record(fs.interactions)]
    if fs.items is not None:
        items = _item_table(fs, item_ids, spec, skipped, progress)
        sources.append(file_record(fs.items))
    else:
        items = _items(table, fs.interactions, fs, item_ids, spec.strict, skipped, progress, own_table=False)
    return RawData(interactions=inter, items=items, sources=sources, skipped=skipped, notes=notes,
                   read=read, row_skips=row_skips)
