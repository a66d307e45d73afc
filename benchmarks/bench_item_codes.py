"""Benchmark (not a test): `unimp tokenize-items` on a synthetic catalogue of 1,000,000 items.

Writes a dataset folder with `--items` items and a --source FILE of dim-`--dim` embeddings (2,000 Gaussian
topic centres plus within-topic noise of `--spread` times their scale: 1.0 lets topics overlap, smaller values
make tight topics of near-duplicates, which collide more), or synthetic histories for `--source collab`,
then tokenizes it in a child process and prints that process's wall time and peak RSS
(resource.getrusage(RUSAGE_CHILDREN)), the vocabulary the ids add (levels * codes + collision_codes; the
target is under 1,100) and the collisions. The data generation is not measured. Outputs go to a temporary
folder unless --keep names one.

    .venv/bin/python benchmarks/bench_item_codes.py [--items 1000000] [--dim 64] [--spread 1.0] [--source file|collab]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]


def make_dataset(folder: Path, n_items: int, dim: int, spread: float, source: str, seed: int = 0) -> str:
    """The dataset folder (and the embeddings file for --source file); returns the --source value."""
    from unimp_core.data.store import MANIFEST, Dataset, new_manifest, write_tables
    from unimp_core.io import write_json_atomic

    rng = np.random.default_rng(seed)
    topics = rng.integers(0, 2000, n_items)  # each item belongs to one of 2,000 topics
    if source == "collab":  # users browse within a few topics: 200,000 users x 20 items, leave-one-out
        n_users, length = 200_000, 20
        by_topic = np.argsort(topics, kind="stable")
        starts = np.searchsorted(topics[by_topic], np.arange(2000))
        sizes = np.bincount(topics, minlength=2000)
        user_topic = rng.integers(0, 2000, (n_users, 1)).repeat(length, axis=1)
        user_topic[:, length // 2:] = rng.integers(0, 2000, (n_users, 1))  # a second topic later on
        pick = starts[user_topic] + (rng.random((n_users, length)) * sizes[user_topic]).astype(np.int64)
        seq = by_topic[pick].reshape(-1)
        users = np.repeat(np.arange(n_users), length)
    else:
        seq, users = np.arange(10), np.zeros(10, dtype=np.int64)
    inter = pl.DataFrame({"user_id": users, "user_key": pl.Series(users).cast(pl.Utf8), "item_id": seq,
                          "timestamp": np.tile(np.arange(len(seq) // len(np.unique(users))), len(np.unique(users)))})
    user_ids = np.unique(users)
    users_df = pl.DataFrame({"user_id": user_ids, "user_key": pl.Series(user_ids).cast(pl.Utf8),
                             "length": np.bincount(users), "split": ["all"] * len(user_ids)})
    items = pl.DataFrame({"item_id": np.arange(n_items), "source_id": pl.Series(np.arange(n_items)).cast(pl.Utf8)})
    write_tables(folder, Dataset(items=items, interactions=inter, users=users_df, instances={}))
    write_json_atomic(folder / MANIFEST, new_manifest(protocol="leave-one-out"))
    if source == "collab":
        return "collab"
    centres = rng.normal(size=(2000, dim)).astype(np.float32)
    vectors = centres[topics] + spread * rng.standard_normal((n_items, dim), dtype=np.float32)  # (N, dim)
    path = folder.parent / "embeddings.parquet"
    pl.DataFrame({"item_id": np.arange(n_items), "vector": vectors}).write_parquet(path)
    return str(path)


def child(folder: str, source: str) -> None:
    """The measured part, in its own process: tokenize, then print the record as JSON."""
    from unimp_core.itemcodes.tokenize import run_tokenize_items
    from unimp_core.specs.items import TokenizeItemsSpec

    rec = run_tokenize_items(TokenizeItemsSpec(data=folder, source=[source]))
    print(json.dumps(rec))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--spread", type=float, default=1.0, help="within-topic noise / topic-centre scale")
    ap.add_argument("--source", choices=["file", "collab"], default="file")
    ap.add_argument("--keep", type=Path, default=None, help="write the data here and keep it")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(*args.child)

    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        t = time.perf_counter()
        source = make_dataset(base / "ds", args.items, args.dim, args.spread, args.source)
        print(f"synthetic catalogue: {args.items:,} items, source {args.source} (dim {args.dim}, "
              f"spread {args.spread}), written in {time.perf_counter() - t:.1f} s (not measured)")
        print(f"cpus: {os.cpu_count()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
              f"load average before: {os.getloadavg()[0]:.2f}")
        t = time.perf_counter()
        out = subprocess.run([sys.executable, __file__, "--child", str(base / "ds"), source], check=True,
                             capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        wall = time.perf_counter() - t
        peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB on Linux
        rec = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"tokenize-items: {wall:.1f} s wall (process start included; quantiser {rec['quantize_seconds']:.1f} s), "
          f"peak RSS {peak_gib:.2f} GiB")
    print(f"ids: {rec['levels']} levels x {rec['codes']} codes + collision level {rec['collision_codes']} "
          f"-> {rec['tokens']} tokens added to the vocabulary")
    print(f"collisions: {rec['colliding_items']:,} of {rec['items']:,} items share their quantiser codes; "
          f"largest group {rec['collision_codes']}")
    print(f"unexplained energy per level: {rec['unexplained_energy']}; codes used per level: "
          f"{[u['used'] for u in rec['level_usage']]}; last-level balancing: {rec['balance']}")


if __name__ == "__main__":
    main()
