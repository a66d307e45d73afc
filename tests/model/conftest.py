"""Shared fixtures: a small in-memory dataset and one tiny model built from it (once for tests/model)."""

from __future__ import annotations

import copy

import polars as pl
import pytest

from unimp_core.data.store import Dataset

N_ITEMS = 30
CATEGORIES = ["Sneakers", "Handbags", "Hats"]
COLOURS = ["red", "blue", "green", "black", "white"]


def make_dataset(n_items: int = N_ITEMS) -> Dataset:
    """Items with titles/brands/categories/descriptions and a few reviewed interactions."""
    items = pl.DataFrame({
        "item_id": list(range(n_items)),
        "title": [f"{COLOURS[i % 5]} {CATEGORIES[i % 3].lower()} model {i}" for i in range(n_items)],
        "brand": [f"Brand{i % 4}" for i in range(n_items)],
        "category": [CATEGORIES[i % 3] for i in range(n_items)],
        "price": [9.99 + i for i in range(n_items)],
        "description": [f"A {COLOURS[i % 5]} item that is comfortable and stylish" for i in range(n_items)],
        "image": [None] * n_items,
    })
    n = 4 * n_items
    interactions = pl.DataFrame({
        "user_id": [k // 8 for k in range(n)],
        "item_id": [(k * 7) % n_items for k in range(n)],
        "timestamp": list(range(n)),
        "rating": [float(1 + k % 5) for k in range(n)],
        "review": [f"I really liked the {COLOURS[k % 5]} colour, great quality" for k in range(n)],
        "summary": ["great product" if k % 2 else "not for me" for k in range(n)],
        "explanation": ["fits well and looks good" if k % 3 else None for k in range(n)],
    })
    users = pl.DataFrame({"user_id": list(range(n // 8)), "split": ["train"] * (n // 8)})
    return Dataset(items=items, interactions=interactions, users=users, instances={})


@pytest.fixture(scope="package")
def dataset() -> Dataset:
    return make_dataset()


@pytest.fixture(scope="package")
def tiny_bundle(dataset):
    """The tiny model, built once; tests that change it work on `fresh_model`."""
    from unimp_core.model.openflamingo.factory import build_model
    from unimp_core.model.openflamingo.spec import ModelSpec

    return build_model(ModelSpec(), items_text=dataset, n_items=N_ITEMS)


@pytest.fixture
def fresh_model(tiny_bundle):
    """A private copy of the tiny model (cheap: under a million parameters)."""
    return copy.deepcopy(tiny_bundle.model)


def open_gates(model, value: float = 1.0) -> None:
    """Cross-attention gates start at 0 (images have no effect); open them."""
    for layer in model.lang_encoder.gated_cross_attn_layers:
        if layer is not None:
            layer.attn_gate.data.fill_(value)
            layer.ff_gate.data.fill_(value)
