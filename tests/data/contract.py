"""The dataset-folder contract every source's output must meet (what training and evaluation rely on),
checked on a folder written by `unimp prepare`."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from unimp_core.data.store import load_dataset


def assert_dataset_contract(path: Path, *, user_core: int, item_core: int):
    """Tables, ids, time order, k-core, counts and the saved spec of the dataset folder at `path`;
    returns the loaded Dataset for further checks."""
    ds = load_dataset(path)
    m = ds.manifest
    assert m["schema_version"] == 1 and m["synthetic"] is False
    assert ds.items["item_id"].to_list() == list(range(ds.items.height))
    assert set(ds.items.columns) >= {"item_id", "source_id", "domain", "title", "brand", "category", "price",
                                     "description", "image_url", "image"}
    assert set(ds.interactions.columns) == {"user_id", "user_key", "item_id", "timestamp", "rating", "review",
                                            "summary", "explanation"}
    assert ds.items["source_id"].n_unique() == ds.items.height
    assert set(ds.interactions["item_id"].unique()) <= set(ds.items["item_id"])
    assert ds.interactions.group_by("user_id").agg(
        (pl.col("timestamp").diff().drop_nulls() >= 0).all().alias("ok"))["ok"].all()
    assert ds.interactions.group_by("user_id").len()["len"].min() >= user_core
    assert ds.interactions.group_by("item_id").len()["len"].min() >= item_core
    c = m["counts"]
    assert (c["users"], c["items"], c["interactions"]) == (ds.users.height, ds.items.height, ds.interactions.height)
    assert set(ds.users["split"]) <= {"train", "valid", "test", "all"}  # "all": leave-one-out
    assert "rec" in ds.instances and ds.instances["rec"].height > 0
    assert json.loads((path / "prepare_spec.json").read_text())["source"] == m["source"]
    assert not [p.name for p in path.parent.iterdir() if p.name.startswith(".")]  # no staging litter
    return ds
