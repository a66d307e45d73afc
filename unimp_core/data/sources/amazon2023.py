"""Amazon Reviews 2023 (`--source amazon2023`, or `--amazon-version 2023`): reviews plus item metadata.

The download, the per-category rules (duplicates, the paper's image rule) and the block reader are
the 2014/2018 ones in amazon.py; this module holds only the 2023 line formats, both JSON lines:

    reviews  rating, title, text, images (list of dicts), asin, parent_asin, user_id,
             timestamp (Unix milliseconds), helpful_vote, verified_purchase
    meta     main_category, title, average_rating, rating_number, features (list), description (list),
             price (number or null), images (list of {thumb, large, variant, hi_res}), videos, store,
             categories (list: one path), details (object), parent_asin, bought_together

Items are keyed by `parent_asin` (a review's `asin` is the variant bought, e.g. a colour), so all
variants of a product are one item, as the 2023 benchmark files do. Timestamps become Unix seconds.
A review's title is its summary (the default explanation target) and its text its review.
"""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path
from typing import Any

import polars as pl

from ...progress import Progress
from ..raw import RawData
from . import amazon
from .amazon import (INTERACTION_SCHEMA, ITEM_SCHEMA, Columns, Lines, clean_text, gzip_blocks, joined_text,
                     nonempty, parse_price, split_lines, to_number)

# Review fields the fast path reads; polars ignores the others (images, asin, helpful_vote, ...).
_REVIEW_JSON = {"user_id": pl.Utf8, "parent_asin": pl.Utf8, "rating": pl.Float64, "timestamp": pl.Int64,
                "text": pl.Utf8, "title": pl.Utf8}


def load(spec, progress: Progress) -> RawData:
    """Fetch and parse the 2023 categories named in `spec.datasets` (see amazon.load)."""
    return amazon.load(spec, progress, readers=(read_reviews, read_meta))


def _reviews_fast(block: bytes) -> pl.DataFrame | None:
    """A block of clean review lines parsed by polars' native reader; None when anything is unusual
    (bad JSON, text ratings, missing ids or times), and the per-line path then decides line by line."""
    try:
        df = pl.read_ndjson(io.BytesIO(block), schema=_REVIEW_JSON)
    except Exception:  # polars raises ComputeError and friends on any malformed line
        return None
    ids = df.select(
        bad=(pl.col("user_id").is_null() | pl.col("parent_asin").is_null() | pl.col("timestamp").is_null()
             | (pl.col("user_id") == "") | (pl.col("parent_asin") == "")
             # polars turns an object or list into its JSON text; such an id is malformed
             | pl.col("user_id").str.contains(r"^[\[{]") | pl.col("parent_asin").str.contains(r"^[\[{]")).any()
    )
    if ids.item():
        return None
    return df.select(
        pl.col("user_id").alias("user_key"), pl.col("parent_asin").alias("source_id"),
        pl.col("timestamp").floordiv(1000).alias("timestamp"),
        pl.when(pl.col("rating").is_finite()).then(pl.col("rating")).alias("rating"),
        nonempty("text").alias("review"), nonempty("title").alias("summary"),
    )


def _reviews_slow(first: int, block: list[bytes], cols: dict[str, list], lines: Lines) -> None:
    """Parse review lines one by one into `cols`, skipping (or raising on) malformed ones."""
    for n, line in enumerate(block, first):
        r = lines.record(n, line)
        if r is None:
            continue
        user, item = r.get("user_id"), r.get("parent_asin")
        if not (user and item and type(user) is str and type(item) is str):
            lines.bad(n, "missing user_id or parent_asin")
            continue
        rating = r.get("rating")
        if rating is not None:
            rating = to_number(rating)
            if rating is None:
                lines.bad(n, "non-numeric rating")
                continue
        ms = to_number(r.get("timestamp"))
        cols["user_key"].append(user)
        cols["source_id"].append(item)
        cols["timestamp"].append(None if ms is None else int(ms // 1000))  # no time: dropped and counted later
        cols["rating"].append(rating)
        cols["review"].append(clean_text(r.get("text")))
        cols["summary"].append(clean_text(r.get("title")))


def read_reviews(path: Path, domain: str, progress: Progress, skipped: Counter, strict: bool) -> pl.DataFrame:
    """Interactions (user_key, source_id = parent_asin, timestamp in seconds, rating, review, summary)."""
    lines = Lines(path, skipped, strict)
    out = Columns(INTERACTION_SCHEMA)
    for first, block in gzip_blocks(path, progress, f"read {path.name}"):
        fast = _reviews_fast(block)
        if fast is not None:
            out.add_frame(fast)
        else:
            _reviews_slow(first, split_lines(block), out.cols, lines)
            out.rows_added()
    return out.frame().with_columns((pl.lit(f"{domain}:") + pl.col("user_key")).alias("user_key"))


def read_meta(
    path: Path, release: str, wanted: set[str], progress: Progress, skipped: Counter, strict: bool
) -> pl.DataFrame:
    """Items (source_id, title, brand, category, price, description, image_url) for the `wanted`
    parent_asins; the first line of a repeated parent_asin wins. `release` is amazon.MetaReader's."""
    lines = Lines(path, skipped, strict)
    out = Columns(ITEM_SCHEMA)
    for first, block in gzip_blocks(path, progress, f"read {path.name}"):
        for n, line in enumerate(split_lines(block), first):
            record = lines.record(n, line)
            if record is None:
                continue
            key = record.get("parent_asin")
            if not key or type(key) is not str:
                lines.bad(n, "missing parent_asin")
                continue
            if key in wanted:
                for name, value in zip(ITEM_SCHEMA, (key, *item_fields(record))):
                    out.cols[name].append(value)
        out.rows_added()
    return out.frame().unique(subset="source_id", keep="first", maintain_order=True)


def item_fields(r: dict) -> tuple:
    """(title, brand, category, price, description, image_url) of a 2023 meta record.

    brand is the `store`; category the `categories` path joined with " > " (`main_category` when the
    path is empty, as it is for most of All_Beauty); description the `features` then the
    `description` sentences; the image the MAIN image's `large` URL, else the first `large` one.
    """
    categories = joined_text(r.get("categories"), " > ") or clean_text(r.get("main_category"))
    text = [s for s in (joined_text(r.get(k), " ") for k in ("features", "description")) if s]
    price = to_number(r.get("price"))
    if price is None:  # a text price such as "$12.99"
        price = parse_price(r.get("price"))
    return (clean_text(r.get("title")), clean_text(r.get("store")), categories, price,
            " ".join(text) or None, _large_image(r.get("images")))


def _large_image(images: Any) -> str | None:
    if not isinstance(images, list):
        return None
    shots = [im for im in images if isinstance(im, dict) and clean_text(im.get("large"))]
    main = [im for im in shots if im.get("variant") == "MAIN"]
    return clean_text((main or shots)[0]["large"]) if shots else None
