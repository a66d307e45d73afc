"""Semantic item ids for tests: `item_codes.parquet` and its manifest record written into a dataset folder the
way `unimp tokenize-items` writes them (the contract of unimp_core/itemcodes/codes.py), with codes derived
from the item ids instead of a quantiser."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def id_codes(n_items: int, levels: int = 2, codes: int = 4) -> list[tuple[int, ...]]:
    """Item i's code tuple: its base-`codes` digits (most significant first) for `levels` levels, then a
    collision index numbering the items whose digits coincide (they do beyond codes ** levels items)."""
    out, seen = [], {}
    for i in range(n_items):
        digits = tuple((i // codes ** (levels - 1 - k)) % codes for k in range(levels))
        collision = seen.get(digits, 0)
        seen[digits] = collision + 1
        out.append(digits + (collision,))
    return out


def write_item_codes(root: Path, levels: int = 2, codes: int = 4,
                     tuples: list[tuple[int, ...]] | None = None) -> list[tuple[int, ...]]:
    """Give the dataset folder `root` item codes (default: `id_codes`); returns the tuples."""
    import polars as pl

    root = Path(root)
    n_items = pl.read_parquet(root / "items.parquet", columns=["item_id"]).height
    tuples = tuples or id_codes(n_items, levels, codes)
    pl.DataFrame({"item_id": list(range(n_items)), "codes": [list(t) for t in tuples]},
                 schema={"item_id": pl.Int64, "codes": pl.List(pl.Int32)}).write_parquet(root / "item_codes.parquet")
    manifest = json.loads((root / "manifest.json").read_text())
    collision = max(t[-1] for t in tuples) + 1
    manifest["item_codes"] = {
        "file": "item_codes.parquet", "levels": levels, "codes": codes, "collision_codes": collision,
        "colliding_items": sum(t[-1] > 0 for t in tuples), "source": ["item ids (tests)"], "quantizer": "digits",
        "seed": 0, "sha256": hashlib.sha256((root / "item_codes.parquet").read_bytes()).hexdigest(),
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return tuples
