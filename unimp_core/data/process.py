"""Source-independent processing: order, iterated k-core, re-index, split, evaluation positions.

All table work is columnar (polars); nothing here loops over interactions in Python.
"""

from __future__ import annotations

from collections import Counter
from typing import Literal

import numpy as np
import polars as pl

def order_interactions(
    inter: pl.DataFrame, seed: int, skipped: Counter | None = None, tie_break: bool = True
) -> pl.DataFrame:
    """Drop rows without user/item/timestamp and exact repeats, and sort each user's history by time.

    Equal timestamps are broken by a seeded random key, never by item id (that would leak order).
    With `tie_break=False` rows that are already ordered keep their order (a stable sort).
    """
    before = inter.height
    inter = inter.drop_nulls(["user_key", "source_id", "timestamp"])
    if skipped is not None and inter.height < before:
        skipped["missing user, item or timestamp"] += before - inter.height
    # An exact repeat (same user, item and time) would count twice towards the k-core.
    before = inter.height
    inter = inter.unique(subset=["user_key", "source_id", "timestamp"], keep="first", maintain_order=True)
    if skipped is not None and inter.height < before:
        skipped["duplicate interaction (same user, item and time)"] += before - inter.height
    if not tie_break:
        return inter.sort(["user_key", "timestamp"], maintain_order=True)
    rng = np.random.default_rng(seed)
    inter = inter.with_columns(pl.Series("_tie", rng.random(inter.height)))
    return inter.sort(["user_key", "timestamp", "_tie"]).drop("_tie")


def kcore(inter: pl.DataFrame, user_core: int, item_core: int) -> pl.DataFrame:
    """Iterate user/item minimum-count filters until neither removes anything (a fixed point)."""
    # Integer codes make the repeated group counts cheap.
    inter = inter.with_columns(
        pl.col("user_key").rank("dense").cast(pl.UInt32).alias("_u"),
        pl.col("source_id").rank("dense").cast(pl.UInt32).alias("_i"),
    )
    u = inter["_u"].to_numpy()
    i = inter["_i"].to_numpy()
    keep = np.ones(len(u), dtype=bool)
    while True:
        n = int(keep.sum())
        ucount = np.bincount(u[keep], minlength=int(u.max(initial=0)) + 1)
        keep &= ucount[u] >= user_core
        icount = np.bincount(i[keep], minlength=int(i.max(initial=0)) + 1)
        keep &= icount[i] >= item_core
        if int(keep.sum()) == n:
            break
    return inter.filter(pl.Series(keep)).drop(["_u", "_i"])


def reindex(inter: pl.DataFrame, items: pl.DataFrame, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Items get ids 0..N-1 in a seeded random order; users get 0..U-1 in key order.

    Returns (interactions with user_id/item_id, items restricted to the kept ones with item_id).
    Items missing from the items table are kept with empty text.
    """
    kept = inter.select("source_id").unique().sort("source_id")
    rng = np.random.default_rng(seed)
    kept = kept.with_columns(pl.Series("item_id", rng.permutation(kept.height), dtype=pl.Int64))
    users = inter.select("user_key").unique().sort("user_key")
    users = users.with_columns(pl.int_range(0, users.height, dtype=pl.Int64).alias("user_id"))
    inter = inter.join(kept, on="source_id", how="left").join(users, on="user_key", how="left")
    items = kept.join(items, on="source_id", how="left").sort("item_id")
    return inter, items


def assign_splits(
    users: pl.DataFrame,
    protocol: Literal["user-split", "leave-one-out"],
    ratios: tuple[float, float, float],
    seed: int,
    keep: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """user-split: shuffle user ids with `seed`, cut 80/10/10; leave-one-out: every user is 'all'.

    `keep` (user_key, split) carries an earlier assignment over (filter-images keeps each user's split).
    """
    if keep is not None:
        return users.join(keep.select("user_key", "split"), on="user_key", how="left")
    if protocol == "leave-one-out":
        return users.with_columns(pl.lit("all").alias("split"))
    n = users.height
    order = np.random.default_rng(seed).permutation(n)
    n_train = int(round(ratios[0] * n))
    n_valid = int(round(ratios[1] * n))
    labels = np.empty(n, dtype=object)
    labels[order[:n_train]] = "train"
    labels[order[n_train : n_train + n_valid]] = "valid"
    labels[order[n_train + n_valid :]] = "test"
    return users.with_columns(pl.Series("split", labels.tolist(), dtype=pl.Utf8))


def target_positions(users: pl.DataFrame, protocol: str) -> pl.DataFrame:
    """One row per (user, eval split): `position` indexes the target; the history is everything before it."""
    if protocol == "leave-one-out":
        return pl.concat([
            users.select("user_id", pl.lit("test").alias("split"), (pl.col("length") - 1).alias("position")),
            users.select("user_id", pl.lit("valid").alias("split"), (pl.col("length") - 2).alias("position")),
        ]).filter(pl.col("position") >= 1)
    return users.filter(pl.col("split").is_in(["valid", "test"])).select(
        "user_id", "split", (pl.col("length") - 1).alias("position")
    )


def split_counts(users: pl.DataFrame, instances: dict[str, pl.DataFrame]) -> dict[str, dict[str, int]]:
    counts = {"users": dict(Counter(users["split"].to_list()))}
    for task, df in instances.items():
        counts[task] = dict(Counter(df["split"].to_list()))
    return counts
