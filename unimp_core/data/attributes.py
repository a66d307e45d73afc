"""Item attributes: a list of ids or words per item (brand, sub-categories, tags), the items table's
`attributes` column (list[str]), and the one function models read them through (`item_attributes`).

What `--items` may give (`--source files`):
- a JSON object of item id -> list, the whole file one object (the S3-Rec `*_item2attributes.json` files):
  `{"4": [1, 2, 3], "83": [4, 5, 6]}`; every key read is kept or counted;
- a table with an `attributes` column (or `--column attributes=FIELD`): a list per row (JSON lines, Parquet),
  or text (CSV, TSV): a JSON array (`[1, 2]`), else values separated by `|` when the text holds one
  (`Hair Care|Skin Care`), else by spaces (`a17 a4 a21`).

Each attribute becomes one token: an id (an integer, or a float with no fraction) its decimal string; a
word is NFKC-normalised, case-folded, `<` and `>` dropped (they spell prompt markers) and its inner spaces
joined by `_` (`Hair Care` -> `hair_care`). Repeats within an item are dropped, the first order kept;
null or blank entries are ignored; an item without any attribute holds null.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from ..errors import UnimpError, first_line

if TYPE_CHECKING:
    from .store import Dataset

COLUMN = "attributes"
DTYPE = pl.List(pl.Utf8)
# a table column of these types can hold attributes; anything else (a number column) is refused whole
_LIST_LIKE = (pl.List, pl.Array, pl.Utf8, pl.Null)


def token(value: Any) -> str:
    """One attribute as its token ("" when blank). Raises ValueError for anything but an id or a word."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not an id or a word")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer():
            return str(int(value))
        raise ValueError(f"{value!r} is not a whole-number id")
    if isinstance(value, str):
        text = unicodedata.normalize("NFKC", value).casefold().replace("<", " ").replace(">", " ")
        return "_".join(text.split())
    raise ValueError(f"{_short(value)} is not an id or a word")


def parse(value: Any) -> list[str] | None:
    """One item's attributes (a list, or text as described in the module docstring) as tokens, or None
    when there are none. Raises ValueError saying what is wrong."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.startswith(("[", "{")):  # JSON (a JSON lines column of mixed types arrives as its text)
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{_short(text)} is not a JSON array ({first_line(exc)})") from None
        else:
            value = text.split("|") if "|" in text else text.split()
    if not isinstance(value, list):
        raise ValueError(f"{_short(value)} is not a list of ids or words")
    tokens = dict.fromkeys(t for t in (token(v) for v in value if v is not None) if t)
    return list(tokens) or None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _accept(path: Path, where: str, value: Any, strict: bool, skipped: Counter) -> list[str] | None:
    """`parse(value)`; a bad value raises "<file>: <where>: ..." when `strict`, else it is counted and
    the item keeps no attributes."""
    try:
        return parse(value)
    except ValueError as exc:
        if strict:
            raise UnimpError(f"{path}: {where}: attributes: {exc}") from None
        skipped[f"{path.name}: attributes not a list of ids or words (attributes left empty)"] += 1
        return None


def read_attribute_map(data: bytes, path: Path, item_column: str, item_ids: pl.DataFrame, strict: bool,
                       skipped: Counter) -> pl.DataFrame | None:
    """The items of `item_ids` (a `source_id` column) with their attributes, when `data` (the --items file's
    text) is one JSON object of item id -> list; None when it is anything else (a table).

    A one-object file that holds the item column (`item_column`) is a one-row JSON lines table, never a
    map. Every key is kept or counted in `skipped`: repeated, matching no interacted item, or (kept, its
    attributes left empty) a value that is not a list of ids or words (`strict`: that one raises).
    """
    if data.lstrip()[:1] != b"{":
        return None
    try:
        pairs = json.loads(data, object_pairs_hook=list)  # every object as its (key, value) pairs: repeats stay
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None  # JSON lines (or broken JSON): the table reader takes it and names what is wrong
    if any(key == item_column for key, _ in pairs):
        return None
    wanted = set(item_ids["source_id"].to_list())
    found: dict[str, list[str] | None] = {}
    for key, value in pairs:
        key = key.strip()
        if key in found:
            skipped[f"{path.name}: repeated key (the first kept)"] += 1
        elif key not in wanted:
            skipped[f"{path.name}: key matches no interacted item"] += 1
        else:
            found[key] = _accept(path, f"key {key!r}", value, strict, skipped)
    attrs = pl.DataFrame({"source_id": list(found), COLUMN: list(found.values())},
                         schema={"source_id": pl.Utf8, COLUMN: DTYPE})
    return item_ids.join(attrs, on="source_id", how="left")


def attribute_column(table: pl.DataFrame, path: Path, column: str, rows: pl.Series, item_ids: pl.Series,
                     strict: bool, skipped: Counter) -> pl.Series:
    """The `attributes` series of a table's kept rows: `rows` are their 1-based row numbers in `table`
    and `item_ids` their items (for the messages). A bad value raises "<file>: row N (item X): ..." when
    `strict`, else it is counted and that item keeps no attributes."""
    dtype = table.schema[column]
    if not isinstance(dtype, _LIST_LIKE):
        raise UnimpError(f"{path}: column {column!r} (role attributes) holds {dtype}, not lists; give a list "
                         "per item, or text of values separated by spaces or '|'")
    values = table[column].gather(rows - 1).to_list()
    out = [_accept(path, f"row {row} (item {item})", value, strict, skipped)
           for row, item, value in zip(rows.to_list(), item_ids.to_list(), values)]
    return pl.Series(COLUMN, out, dtype=DTYPE)


def attribute_counts(items: pl.DataFrame) -> dict[str, Any]:
    """What the manifest records of a dataset's attributes: items that have any, distinct attributes and
    the mean number per item that has any."""
    lists = [a for a in (items[COLUMN].to_list() if COLUMN in items.columns else []) if a]
    distinct = {a for attrs in lists for a in attrs}
    return {"items_with_attributes": len(lists), "distinct_attributes": len(distinct),
            "mean_per_item": round(sum(map(len, lists)) / len(lists), 3) if lists else 0.0}


CATEGORY_SEPARATORS = re.compile(r">|,|\|")  # `Beauty > Skin Care`, `Drama, Mystery`, `Hair|Skin`


def described_attributes(brand: str | None, category: str | None) -> list[str]:
    """An item's brand and the parts of its category as attributes (`brand:nivea`, `category:skin_care`):
    what every shop's items table holds, read as content without spending prompt tokens on it."""
    fields = [("brand", brand)] + [("category", part) for part in CATEGORY_SEPARATORS.split(category or "")]
    return [f"{kind}:{t}" for kind, value in fields if value and (t := token(value))]


def item_attributes(ds: "Dataset") -> tuple[list[str], list[list[int]]]:
    """Every item's attributes as indices into one vocabulary, for models (attribute embeddings): its
    `attributes` (`prepare --items`), then its brand and category parts (`described_attributes`).

    Returns:
        vocab: the distinct attribute tokens, sorted.
        per_item: for item_id 0..N-1, the indices into `vocab` of its attributes in that order, repeats
            dropped ([] for an item without any).
    """
    items = ds.items.sort("item_id")
    given = items[COLUMN].to_list() if COLUMN in items.columns else [None] * items.height
    lists = [list(dict.fromkeys((attrs or []) + described_attributes(brand, category)))
             for attrs, brand, category in zip(given, items["brand"].to_list(), items["category"].to_list())]
    vocab = sorted({a for attrs in lists for a in attrs})
    index = {a: i for i, a in enumerate(vocab)}
    return vocab, [[index[a] for a in attrs] for attrs in lists]
