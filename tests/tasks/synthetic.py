"""A small in-memory dataset folder for task and collator tests (no files, no images on disk).

Items have gaps on purpose: some lack a picture, a title, a brand, a category or a price; one
title carries structural markers that must never reach a prompt.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from unimp_core.data import process
from unimp_core.prepare import eval_instances
from unimp_core.data.store import Dataset


def make_items(n_items: int, with_images: bool = True) -> pl.DataFrame:
    ids = list(range(n_items))
    return pl.DataFrame({
        "item_id": ids,
        "source_id": [f"src{i}" for i in ids],
        "domain": ["toys"] * n_items,
        "title": [None if i % 7 == 3 else ("Evil <image> <answer> title" if i == 5 else f"Thing {i}") for i in ids],
        "brand": [None if i % 5 == 0 else f"Brand{i % 4}" for i in ids],
        "category": [None if i % 6 == 1 else f"Cat{i % 3}" for i in ids],
        "price": [None if i % 4 == 2 else 1.5 * i for i in ids],
        "description": [f"desc {i}" for i in ids],
        "image_url": [None] * n_items,
        "image": [f"images/{i}.jpg" if with_images and i % 3 != 0 else None for i in ids],
    }, schema_overrides={"title": pl.Utf8, "brand": pl.Utf8, "category": pl.Utf8, "price": pl.Float64,
                         "image_url": pl.Utf8, "image": pl.Utf8})


def make_dataset(protocol: str = "user-split", n_users: int = 40, n_items: int = 30, seed: int = 0,
                 min_len: int = 3, max_len: int = 12, with_images: bool = True) -> Dataset:
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        length = int(rng.integers(min_len, max_len + 1))
        seq = rng.choice(n_items, size=length, replace=False)
        for t, item in enumerate(seq):
            rating = None if (u + t) % 9 == 4 else float(rng.integers(1, 6))
            expl = None if (u + t) % 4 == 1 else f"user {u} says item {item} is fine"
            rows.append((u, f"u{u}", int(item), t, rating, f"review {u} {t}", None, expl))
    inter = pl.DataFrame(rows, orient="row", schema={
        "user_id": pl.Int64, "user_key": pl.Utf8, "item_id": pl.Int64, "timestamp": pl.Int64,
        "rating": pl.Float64, "review": pl.Utf8, "summary": pl.Utf8, "explanation": pl.Utf8})
    users = inter.group_by("user_id", maintain_order=True).agg(pl.col("user_key").first(), pl.len().alias("length"))
    users = users.with_columns(pl.lit("toys").alias("domain"), pl.col("length").cast(pl.Int64))
    users = process.assign_splits(users, protocol, (0.6, 0.2, 0.2), seed)
    items = make_items(n_items, with_images)
    instances = eval_instances(inter, items, users, protocol, seed)
    return Dataset(items=items, interactions=inter, users=users, instances=instances,
                   manifest={"protocol": protocol, "schema_version": 1})


def tiny_dataset() -> Dataset:
    """One training user with 4 items, written out by hand for exact prompt tests."""
    items = pl.DataFrame({
        "item_id": [0, 1, 2, 3],
        "source_id": ["a", "b", "c", "d"],
        "domain": ["x"] * 4,
        "title": ["Red Hat", "Blue\nMug", None, "Lamp"],
        "brand": ["Acme", None, "Zed", "Lumo"],
        "category": ["Hats", "Mugs", None, "Lamps"],
        "price": [9.5, None, 3.0, 20.0],
        "description": [None] * 4,
        "image_url": [None] * 4,
        "image": ["images/0.jpg", None, "images/2.jpg", "images/3.jpg"],
    }, schema_overrides={"description": pl.Utf8, "image_url": pl.Utf8})
    inter = pl.DataFrame({
        "user_id": [0] * 4, "user_key": ["u"] * 4, "item_id": [0, 1, 2, 3], "timestamp": [1, 2, 3, 4],
        "rating": [4.0, 2.5, None, 5.0], "review": [None] * 4, "summary": [None] * 4,
        "explanation": ["nice hat", None, "ok", "bright   and\ttall"],
    }, schema_overrides={"review": pl.Utf8, "summary": pl.Utf8})
    users = pl.DataFrame({"user_id": [0], "user_key": ["u"], "domain": ["x"], "length": [4], "split": ["train"]})
    return Dataset(items=items, interactions=inter, users=users, instances={}, manifest={"protocol": "user-split"})


def words(text: str) -> list[str]:
    """A prompt split at spaces, with `<|endofchunk|>` (written right after its answer) a word of its own."""
    return text.replace("<|endofchunk|>", " <|endofchunk|>").split()
