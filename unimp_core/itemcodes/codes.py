"""The semantic item ids of a dataset folder, as tasks, training and evaluation read them (no torch import).

`unimp tokenize-items` writes `<dataset>/item_codes.parquet` with one row per catalogue item:

    item_id  int64       every item 0..n_items-1, exactly once
    codes    list[int32] `levels` quantiser codes (each in 0..codes-1) followed by one collision index
                         (0..collision_codes-1): items whose quantiser codes coincide are numbered 0, 1, ...
                         in item order, so every full tuple names exactly one item

and the manifest's "item_codes" record:

    {"file": "item_codes.parquet", "levels": 3, "codes": 256, "collision_codes": 4,
     "colliding_items": 123, "source": [...], "quantizer": "rkmeans", "seed": 0, "sha256": "<file hash>", ...}

An item's tokens are `levels` + 1 tokens (tokens.semantic_tokens), the vocabulary grows by
levels * codes + collision_codes tokens, never by the catalogue size.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..data.store import ITEM_CODES_KEY
from ..errors import UnimpError

if TYPE_CHECKING:
    from ..data.store import Dataset

CODES_FILE = "item_codes.parquet"
MANIFEST_KEY = ITEM_CODES_KEY  # its record in the dataset manifest


@dataclass(frozen=True)
class ItemCodes:
    """Every item's code tuple (levels quantiser codes + one collision index)."""

    levels: int
    codes: int  # codes per level
    collision_codes: int  # size of the collision level (>= 1)
    tuples: tuple[tuple[int, ...], ...]  # indexed by item_id; each of length levels + 1

    @property
    def n_items(self) -> int:
        return len(self.tuples)

    @property
    def n_tokens(self) -> int:
        """Tokens these ids add to the vocabulary."""
        return self.levels * self.codes + self.collision_codes


def has_item_codes(ds: "Dataset") -> bool:
    """`unimp tokenize-items` has run on the folder."""
    return ds.root is not None and MANIFEST_KEY in ds.manifest


def load_item_codes(root: str | os.PathLike) -> ItemCodes:
    """The folder's item codes, checked against its manifest record and catalogue size."""
    import polars as pl

    from ..data.store import read_manifest

    root = Path(root)
    manifest = read_manifest(root)
    record = manifest.get(MANIFEST_KEY)
    path = root / CODES_FILE
    if not record or not path.is_file():
        raise UnimpError(f"{root}: no semantic item ids (run `unimp tokenize-items --data {root}` first)")
    try:
        levels, codes, collision = int(record["levels"]), int(record["codes"]), int(record["collision_codes"])
        df = pl.read_parquet(path, columns=["item_id", "codes"]).sort("item_id")
    except (KeyError, TypeError, ValueError, OSError, pl.exceptions.PolarsError) as err:
        raise UnimpError(f"{path}: unreadable item codes ({err}); rerun `unimp tokenize-items --data {root}`") from None
    ids = df["item_id"].to_list()
    if ids != list(range(len(ids))):
        raise UnimpError(f"{path}: item_id must be 0..n-1, each once; rerun `unimp tokenize-items --data {root}`")
    tuples = tuple(tuple(int(c) for c in row) for row in df["codes"].to_list())
    for item, t in enumerate(tuples):
        if len(t) != levels + 1 or any(not 0 <= c < codes for c in t[:-1]) or not 0 <= t[-1] < collision:
            raise UnimpError(f"{path}: item {item} has codes {list(t)}, outside {levels} levels of {codes} codes "
                             f"+ a collision index below {collision}")
    if len(set(tuples)) != len(tuples):
        raise UnimpError(f"{path}: two items share a code tuple; rerun `unimp tokenize-items --data {root}`")
    return ItemCodes(levels, codes, collision, tuples)
