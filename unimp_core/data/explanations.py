"""Explanation targets from a P5 / Sentires extraction file, keyed by raw user id and item id.

Accepted inputs:
- the Sentires/PETER `reviews.pickle`: a list of dicts with `user`, `item`, `rating` and
  `template = (feature, adjective, sentence, score)`; the explanation is the sentence;
- P5's `exp_splits.pkl`: {"train": [...], "val": [...], "test": [...]} of dicts with `reviewerID`,
  `asin` and `explanation`;
- JSON lines (`.json`, `.jsonl`, `.ndjson`, optionally `.gz`), one record per line with the same keys.

Pickles are read only through `safe_pickle`. `prepare` joins the result onto interactions by
(user key after the first ':', source_id).
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

import polars as pl

from ..errors import UnimpError
from . import safe_pickle

USER_KEYS = ("user", "reviewerID", "user_id")
ITEM_KEYS = ("item", "asin", "item_id")
SCHEMA = {"raw_user": pl.Utf8, "source_id": pl.Utf8, "explanation": pl.Utf8}
_JSON_SUFFIXES = {".json", ".jsonl", ".ndjson"}


def _first(record: dict, keys: Iterable[str]) -> Any:
    for key in keys:
        value = record.get(key)
        if value is not None and value != "":
            return value
    return None


def _explanation(record: dict) -> str | None:
    """`explanation` if present, else the sentence of the (first) Sentires template."""
    text = record.get("explanation")
    if text is None:
        template = record.get("template")
        if template is None and record.get("templates"):  # some extractions keep a list of them
            template = record["templates"][0]
        if isinstance(template, str):
            text = template
        elif isinstance(template, (list, tuple)) and len(template) >= 3:
            text = template[2]
    if text is None:
        return None
    text = str(text).strip()
    return text or None


def _pickle_records(path: Path) -> Iterator[tuple[str, Any]]:
    data = safe_pickle.load(path)
    if isinstance(data, dict) and all(isinstance(v, (list, tuple)) for v in data.values()):
        # P5 splits: every split contributes; the split itself is not an explanation's property.
        for split, records in data.items():
            for i, record in enumerate(records):
                yield f"{split} record {i}", record
    elif isinstance(data, (list, tuple)):
        for i, record in enumerate(data):
            yield f"record {i}", record
    else:
        raise UnimpError(f"{path}: expected a list of records or a dict of split lists, got {type(data).__name__}")


def _json_records(path: Path) -> Iterator[tuple[str, Any]]:
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            head = f.read(64).lstrip()
            f.seek(0)
            if head.startswith("["):  # one JSON array rather than JSON lines
                try:
                    records = json.load(f)
                except json.JSONDecodeError as exc:
                    raise UnimpError(f"{path}: line {exc.lineno}: not JSON: {exc.msg}") from exc
                for i, record in enumerate(records):
                    yield f"record {i}", record
                return
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    yield f"line {lineno}", json.loads(line)
                except json.JSONDecodeError as exc:
                    raise UnimpError(f"{path}: line {lineno}: not JSON: {exc.msg}") from exc
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise UnimpError(f"{path}: cannot read: {exc}".splitlines()[0]) from exc


def _is_json(path: Path) -> bool:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    return bool(suffixes) and suffixes[-1] in _JSON_SUFFIXES


def load_explanations(path: str | os.PathLike) -> pl.DataFrame:
    """Read an explanation file into a table with columns raw_user, source_id, explanation (text).

    Records without an explanation sentence are left out; a record without a user or item id, or
    one that is not a mapping, raises UnimpError naming the file and record/line.
    """
    path = Path(path)
    if not path.is_file():
        raise UnimpError(f"{path}: explanation file not found")
    records = _json_records(path) if _is_json(path) else _pickle_records(path)
    users: list[str] = []
    items: list[str] = []
    texts: list[str] = []
    for where, record in records:
        if not isinstance(record, dict):
            raise UnimpError(f"{path}: {where}: expected a mapping, got {type(record).__name__}")
        user, item = _first(record, USER_KEYS), _first(record, ITEM_KEYS)
        if user is None or item is None:
            role, keys = ("user", USER_KEYS) if user is None else ("item", ITEM_KEYS)
            raise UnimpError(f"{path}: {where}: no {role} id (looked for {', '.join(keys)}; "
                             f"keys are: {', '.join(map(str, record))})")
        text = _explanation(record)
        if text is None:
            continue
        users.append(str(user).strip())
        items.append(str(item).strip())
        texts.append(text)
    return pl.DataFrame({"raw_user": users, "source_id": items, "explanation": texts}, schema=SCHEMA)
