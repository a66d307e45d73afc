"""Dataset folders for the item-code tests: the bundled sample (30 items with text, images and histories)
and hand-written folders whose histories a test controls exactly (`sample_ds`, the sample, is in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from unimp_core.data.store import MANIFEST, Dataset, new_manifest, write_tables
from unimp_core.io import write_json_atomic


def write_folder(root: Path, n_items: int, histories: dict[int, list[int]], protocol: str = "leave-one-out",
                 splits: dict[int, str] | None = None, titles: list[str | None] | None = None) -> Path:
    """A dataset folder with `n_items` items (titles given or "Item i") and exactly these histories (user ->
    items in time order). Under user-split, `splits` names each user's split."""
    titles = titles if titles is not None else [f"Item {i}" for i in range(n_items)]
    items = pl.DataFrame({"item_id": range(n_items), "source_id": [f"s{i}" for i in range(n_items)],
                          "title": titles}, schema_overrides={"title": pl.Utf8})
    rows = [(u, f"u{u}", item, t) for u, seq in histories.items() for t, item in enumerate(seq)]
    inter = pl.DataFrame(rows, orient="row", schema={"user_id": pl.Int64, "user_key": pl.Utf8,
                                                     "item_id": pl.Int64, "timestamp": pl.Int64})
    users = pl.DataFrame({
        "user_id": list(histories), "user_key": [f"u{u}" for u in histories],
        "length": [len(s) for s in histories.values()],
        "split": [(splits or {}).get(u, "all" if protocol == "leave-one-out" else "train") for u in histories],
    })
    write_tables(root, Dataset(items=items, interactions=inter, users=users, instances={}))
    write_json_atomic(root / MANIFEST, new_manifest(protocol=protocol))
    return root


def write_vectors(path: Path, vectors: np.ndarray, ids=None) -> Path:
    """A --source FILE: item_id + a list column `vector`."""
    ids = np.arange(len(vectors)) if ids is None else np.asarray(ids)
    pl.DataFrame({"item_id": ids, "vector": [list(map(float, v)) for v in vectors]}).write_parquet(path)
    return path
