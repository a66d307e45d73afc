"""`--source netflix`: the Netflix subset as distributed with LLMRec, in a local folder.

Expected files:
- `train.json`, and optionally `val.json` / `test.json`: {user index: [item index, ...]};
- item attributes, the first found of `item_attribute.csv` (LLMRec's headerless `id,year,title`
  rows; a header row naming id/year/title is also understood) or `item_attribute.pkl` /
  `.pickle` / no extension: a pickle of {item: {"year", "title"}}, {item: (year, title)},
  {"id": [...], "year": [...], "title": [...]}, or a list of rows (dicts, (id, year, title) or
  (year, title) tuples where the position is the id). Pickles load only through `safe_pickle`;
- optionally posters in `images/` (or `posters/`), one file per item named `<item id>.<jpg|png|...>`.

There are no timestamps: a user's history is their train items in listed order, then val, then
test, and the position is used as the timestamp.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any

import polars as pl

from ...errors import UnimpError
from ...progress import Progress
from ...specs.data import PrepareSpec
from .. import safe_pickle
from ..raw import RawData
from ..tables import file_record, resolve_images

DOMAIN = "netflix"
SPLIT_FILES = ("train.json", "val.json", "test.json")
ATTRIBUTE_FILES = ("item_attribute.csv", "item_attribute.pkl", "item_attribute.pickle", "item_attribute")
IMAGE_FOLDERS = ("images", "posters", "image", "poster")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")
ID_HEADERS = ("id", "item", "item_id", "movie_id")
ATTR_SCHEMA = {"source_id": pl.Utf8, "year": pl.Utf8, "title": pl.Utf8}


def _clean(value: Any) -> str | None:
    """Text for an id / year / title: None, NaN, 'NULL' and '' are missing; 2003.0 -> '2003'."""
    if value is None:
        return None
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if value.is_integer():
            return str(int(value))
    text = str(value).strip()
    if text.lower() in ("", "null", "nan", "none"):
        return None
    if text.endswith(".0") and text[:-2].isdigit():
        return text[:-2]
    return text


def _histories(root: Path) -> tuple[pl.DataFrame, list[Path]]:
    """user_key, source_id, timestamp (position in train + val + test) from the split files."""
    users: list[str] = []
    items: list[str] = []
    stamps: list[int] = []
    position: Counter = Counter()
    used: list[Path] = []
    for name in SPLIT_FILES:
        path = root / name
        if not path.is_file():
            if name == "train.json":
                raise UnimpError(f"{path}: not found (expected LLMRec's train.json / val.json / test.json)")
            continue
        used.append(path)
        try:
            data = json.loads(path.read_bytes())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UnimpError(f"{path}: not JSON: {str(exc).splitlines()[0]}") from exc
        if not isinstance(data, dict):
            raise UnimpError(f"{path}: expected an object {{user: [items]}}, got {type(data).__name__}")
        for user, seq in data.items():
            if not isinstance(seq, list):
                raise UnimpError(f"{path}: user {user!r}: expected a list of item ids, got {type(seq).__name__}")
            for item in seq:
                if isinstance(item, bool) or not isinstance(item, (int, str)):
                    raise UnimpError(f"{path}: user {user!r}: item ids must be integers, got {item!r}")
                users.append(f"{DOMAIN}:{user}")
                items.append(str(item))
                stamps.append(position[user])
                position[user] += 1
    inter = pl.DataFrame({"user_key": users, "source_id": items, "timestamp": stamps},
                         schema={"user_key": pl.Utf8, "source_id": pl.Utf8, "timestamp": pl.Int64})
    return inter, used


def _csv_rows(path: Path) -> list[tuple[Any, Any, Any]]:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")  # the original Netflix titles file is Latin-1
    reader = csv.reader(io.StringIO(text))
    rows = [r for r in reader if any(c.strip() for c in r)]
    if not rows:
        return []
    head = [c.strip().lower() for c in rows[0]]
    if "title" in head and not head[0].isdigit():
        ids = next((head.index(h) for h in ID_HEADERS if h in head), None)
        year = head.index("year") if "year" in head else None
        title = head.index("title")
        pick = lambda r, i: r[i] if i is not None and i < len(r) else None  # noqa: E731
        return [(pick(r, ids) if ids is not None else n, pick(r, year), pick(r, title))
                for n, r in enumerate(rows[1:])]
    out = []
    for n, row in enumerate(rows, 1):
        if len(row) < 3:
            raise UnimpError(f"{path}: row {n}: expected id,year,title, got {','.join(row)!r}")
        # Titles in the original dump are unquoted and may contain commas: everything after year.
        out.append((row[0], row[1], ",".join(row[2:])))
    return out


def _pickle_rows(path: Path) -> list[tuple[Any, Any, Any]]:
    data = safe_pickle.load(path)
    if isinstance(data, dict) and isinstance(data.get("title"), (list, tuple, dict)):
        titles = data["title"]
        if isinstance(titles, dict):  # pandas' to_dict(): {column: {row id: value}}
            years = data.get("year") or {}
            return [(k, years.get(k), v) for k, v in titles.items()]
        ids = data.get("id", range(len(titles)))
        years = data.get("year", [None] * len(titles))
        if not (len(ids) == len(years) == len(titles)):
            raise UnimpError(f"{path}: columns id/year/title have different lengths")
        return list(zip(ids, years, titles))
    if isinstance(data, dict):
        return [(key,) + _row_fields(path, key, row) for key, row in data.items()]
    if isinstance(data, (list, tuple)):
        out = []
        for n, row in enumerate(data):
            if isinstance(row, dict):
                out.append((row.get("id", n), row.get("year"), row.get("title")))
            elif isinstance(row, (list, tuple)) and len(row) >= 3:
                out.append((row[0], row[1], row[2]))
            else:
                out.append((n,) + _row_fields(path, n, row))
        return out
    raise UnimpError(f"{path}: expected item attributes as a dict or a list of rows, got {type(data).__name__}")


def _row_fields(path: Path, key: Any, row: Any) -> tuple[Any, Any]:
    """(year, title) of one item's attribute value in a keyed pickle."""
    if isinstance(row, dict):
        return row.get("year"), row.get("title")
    if isinstance(row, (list, tuple)) and len(row) >= 2:
        return row[-2], row[-1]  # (year, title) or (id, year, title)
    if isinstance(row, str):
        return None, row
    raise UnimpError(f"{path}: item {key!r}: expected {{year, title}} or (year, title), got {type(row).__name__}")


def _attributes(root: Path) -> tuple[pl.DataFrame, Path]:
    path = next((root / n for n in ATTRIBUTE_FILES if (root / n).is_file()), None)
    if path is None:
        raise UnimpError(f"{root}: no item attribute file ({' / '.join(ATTRIBUTE_FILES)})")
    rows = _csv_rows(path) if path.suffix.lower() == ".csv" else _pickle_rows(path)
    cleaned = [(_clean(i), _clean(y), _clean(t)) for i, y, t in rows]
    df = pl.DataFrame(cleaned, schema=ATTR_SCHEMA, orient="row")
    return df.drop_nulls("source_id").unique(subset="source_id", keep="first", maintain_order=True), path


def _poster_names(root: Path) -> tuple[Path | None, dict[str, str]]:
    """The poster folder and {file stem: file name} for the image files in it."""
    folder = next((root / n for n in IMAGE_FOLDERS if (root / n).is_dir()), None)
    if folder is None:
        return None, {}
    names: dict[str, str] = {}
    with os.scandir(folder) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            stem, ext = os.path.splitext(entry.name)
            if ext.lower() in IMAGE_EXTS and entry.is_file() and stem not in names:
                names[stem] = entry.name
    return folder, names


def load(spec: PrepareSpec, progress: Progress) -> RawData:
    """Read the LLMRec Netflix folder `spec.input` into RawData (user_key = "netflix:<user>")."""
    root = Path(spec.input)
    if not root.is_dir():
        raise UnimpError(f"{root}: Netflix folder not found")
    skipped: Counter = Counter()
    notes: dict = {}
    with progress.task("reading Netflix histories"):
        inter, split_files = _histories(root)
    attrs, attr_path = _attributes(root)
    items = inter.select("source_id").unique(maintain_order=True).join(attrs, on="source_id", how="left")
    items = items.with_columns(
        pl.lit(DOMAIN).alias("domain"),
        pl.when(pl.col("year").is_not_null()).then(pl.format("Released in {}.", pl.col("year"))).alias("description"),
    ).drop("year")
    folder, names = _poster_names(root)
    if folder is not None:
        rels = [names.get(s) for s in items["source_id"].to_list()]
        # Names come from the folder listing; safe_join still guards against links leading out.
        paths = resolve_images(folder, rels, skipped, must_exist=True, progress=progress)
        items = items.with_columns(pl.Series("image_path", paths, dtype=pl.Utf8))
    else:
        notes["netflix_images"] = f"no poster folder ({' / '.join(IMAGE_FOLDERS)}) in {root}"
    sources = [file_record(p) for p in split_files + [attr_path]]
    return RawData(interactions=inter, items=items, sources=sources, skipped=skipped, notes=notes)
