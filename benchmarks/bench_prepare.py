"""Benchmark (not a test): order + k-core + re-index + split + eval instances of 1,000,000 synthetic
interactions. Prints seconds and peak memory (RSS high-water mark of this process).

    .venv/bin/python benchmarks/bench_prepare.py [--interactions 1000000]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import polars as pl

from unimp_core.prepare import build_dataset
from unimp_core.data.raw import RawData
from unimp_core.specs.data import PrepareSpec


def synthetic(n: int, seed: int = 0) -> RawData:
    rng = np.random.default_rng(seed)
    n_users, n_items = n // 12, n // 20
    # Zipf-like popularity so the k-core actually removes things.
    users = rng.integers(0, n_users, n)
    items = np.minimum(rng.zipf(1.3, n) - 1, n_items - 1)
    inter = pl.DataFrame({
        "user_key": "bench:" + pl.Series(users).cast(pl.Utf8).str.pad_start(8, "0"),
        "source_id": pl.Series(items).cast(pl.Utf8).str.pad_start(10, "B"),
        "timestamp": rng.integers(1_300_000_000, 1_400_000_000, n),
        "rating": rng.integers(1, 6, n).astype(float),
        "summary": pl.Series(["good"] * n),
    })
    item_ids = inter.select("source_id").unique()
    items_df = item_ids.with_columns(pl.lit("bench").alias("domain"), pl.col("source_id").alias("title"),
                                     pl.lit("Bench > Things").alias("category"))
    return RawData(interactions=inter, items=items_df)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--interactions", type=int, default=1_000_000)
    args = ap.parse_args()
    raw = synthetic(args.interactions)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    spec = PrepareSpec(datasets=["sample"])  # defaults: 8/5 k-core, user-split, seed 42
    t = time.perf_counter()
    ds, info = build_dataset(raw, spec)
    dt = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    c = info["counts"]
    print(f"input: {args.interactions:,} interactions -> kept {c['interactions']:,} "
          f"({c['users']:,} users, {c['items']:,} items)")
    print(f"order + k-core + re-index + split + eval instances: {dt:.2f} s")
    print(f"peak RSS: {peak:.0f} MiB (after building the input: {rss0:.0f} MiB)")


if __name__ == "__main__":
    main()
