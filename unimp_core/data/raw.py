"""What every source hands to the shared pipeline: two tables and some bookkeeping."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import polars as pl

# Columns every source produces (missing text is null). `image_path` is an absolute local file
# (H&M, Netflix, files); `image_url` is downloaded; `attributes` are tokens (see `attributes.py`).
RAW_INTERACTIONS = {
    "user_key": pl.Utf8,
    "source_id": pl.Utf8,
    "timestamp": pl.Int64,
    "rating": pl.Float64,
    "review": pl.Utf8,
    "summary": pl.Utf8,
    "explanation": pl.Utf8,
}
RAW_ITEMS = {
    "source_id": pl.Utf8,
    "domain": pl.Utf8,
    "title": pl.Utf8,
    "brand": pl.Utf8,
    "category": pl.Utf8,
    "price": pl.Float64,
    "description": pl.Utf8,
    "image_url": pl.Utf8,
    "image_path": pl.Utf8,
    "attributes": pl.List(pl.Utf8),
}


def conform(df: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """Add missing columns as nulls, cast, and order columns as `schema`."""
    exprs = []
    for name, dtype in schema.items():
        if name in df.columns:
            exprs.append(pl.col(name).cast(dtype, strict=False))
        else:
            exprs.append(pl.lit(None, dtype=dtype).alias(name))
    return df.select(exprs)


@dataclass
class RawData:
    """A source's output before k-core and re-indexing."""

    interactions: pl.DataFrame
    items: pl.DataFrame
    sources: list[dict[str, Any]] = field(default_factory=list)  # file, url, bytes, sha256
    skipped: Counter = field(default_factory=Counter)  # reason -> lines skipped that are not interaction rows
    synthetic: bool = False
    notes: dict[str, Any] = field(default_factory=dict)
    # The accounting of interaction rows: read = interactions.height + sum(row_skips.values()).
    read: int | None = None  # interaction rows read; None: every row read is in `interactions`
    row_skips: Counter = field(default_factory=Counter)  # reason -> interaction rows skipped

    def __post_init__(self) -> None:
        self.interactions = conform(self.interactions, RAW_INTERACTIONS)
        self.items = conform(self.items, RAW_ITEMS)
        if self.read is None:
            self.read = self.interactions.height + sum(self.row_skips.values())

    @staticmethod
    def concat(parts: list["RawData"]) -> "RawData":
        """Several domains at once: histories stay per domain, items share one catalogue."""
        skipped: Counter = Counter()
        row_skips: Counter = Counter()
        for p in parts:
            skipped.update(p.skipped)
            row_skips.update(p.row_skips)
        items = pl.concat([p.items for p in parts]).unique(subset="source_id", keep="first", maintain_order=True)
        return RawData(
            interactions=pl.concat([p.interactions for p in parts]),
            items=items,
            sources=[s for p in parts for s in p.sources],
            skipped=skipped,
            synthetic=any(p.synthetic for p in parts),
            notes={k: v for p in parts for k, v in p.notes.items()},
            read=sum(p.read for p in parts),
            row_skips=row_skips,
        )
