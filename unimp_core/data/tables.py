"""Reading local tables for the file-based sources: format by extension, columns by role.

Shared by `--source files`, `--source hm` and `--source netflix`. Everything is columnar (polars);
the only per-row Python loops are over item images, which are few compared with interactions.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
from collections import Counter
from pathlib import Path
from typing import Iterable

import polars as pl

from ..errors import UnimpError, first_line
from ..io import safe_join, sha256_file
from ..progress import Progress

# Suffix (after an optional compression suffix) -> reader kind.
FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
           ".parquet": "parquet", ".pq": "parquet"}
COMPRESSED = {".gz": "gzip"}


def table_kind(path: str | os.PathLike) -> tuple[str, str | None]:
    """(format, compression) from the file name, e.g. `x.csv.gz` -> ("csv", "gzip")."""
    path = Path(path)
    suffixes = [s.lower() for s in path.suffixes]
    compression = None
    if suffixes and suffixes[-1] in COMPRESSED:
        compression = COMPRESSED[suffixes.pop()]
    kind = FORMATS.get(suffixes[-1]) if suffixes else None
    if kind is None or (compression and kind == "parquet"):
        raise UnimpError(f"{path}: unknown table format; use .csv, .tsv, .jsonl (.json) or .parquet "
                         "(text formats may end in .gz)")
    return kind, compression


def file_record(path: str | os.PathLike) -> dict:
    """Provenance of one input file for the manifest: name, size and checksum."""
    path = Path(path)
    return {"file": str(path.resolve()), "url": None, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def text_bytes(path: Path, compression: str | None) -> bytes:
    """The file's text as UTF-8 bytes; Latin-1 files (common in old dumps) are re-encoded."""
    opener = gzip.open if compression == "gzip" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise UnimpError(f"{path}: cannot read: {first_line(exc)}") from exc
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        data = data.decode("latin-1").encode("utf-8")
    return data


def read_table(path: str | os.PathLike, *, strict: bool = True, skipped: Counter | None = None) -> pl.DataFrame:
    """Read a CSV / TSV / JSON lines / Parquet table (text formats may be gzipped).

    CSV and TSV columns are read as text so ids keep their leading zeros; callers cast by role.
    A `.json` file may also hold one JSON array of records. A JSON line that is not an object, or a
    CSV line whose number of fields differs from the header's, raises "<file>:<line>: ..." when
    `strict`, else it is skipped and counted in `skipped`.
    """
    path = Path(path)
    if not path.is_file():
        raise UnimpError(f"{path}: file not found")
    kind, compression = table_kind(path)
    try:
        if kind == "parquet":
            return pl.read_parquet(path)
        if kind in ("csv", "tsv"):
            data = text_bytes(path, compression)
            return _delimited(data, "," if kind == "csv" else "\t", path, strict,
                              Counter() if skipped is None else skipped)
        data = text_bytes(path, compression)
        if data.lstrip()[:1] == b"[":
            return pl.DataFrame(json.loads(data))
        try:
            return pl.read_ndjson(data, infer_schema_length=None)  # mixed types later in a file must not fail
        except Exception:
            return _json_lines(data, path, strict, Counter() if skipped is None else skipped)
    except UnimpError:
        raise
    except Exception as exc:  # polars/json errors carry the position; keep the message to one line
        raise UnimpError(f"{path}: cannot read as {kind}: {first_line(exc)}") from exc


def _delimited(data: bytes, sep: str, path: Path, strict: bool, skipped: Counter) -> pl.DataFrame:
    """A CSV/TSV table as text columns. Polars would pad a short line with nulls (and refuse a long one
    outright), so the field count of every line is checked first: a ragged line is named (strict) or
    skipped and counted under a reason that names its first line numbers."""
    def lines():
        return csv.reader(io.StringIO(data.decode("utf-8-sig"), newline=""), delimiter=sep)

    rows = lines()
    header = next(rows, None)
    if header is None:
        return pl.DataFrame()
    ragged = []
    for row in rows:
        if row and len(row) != len(header):
            if strict:
                raise UnimpError(f"{path}:{rows.line_num}: {len(row)} fields where the header has {len(header)}")
            ragged.append(rows.line_num)
    if not ragged:
        return pl.read_csv(data, separator=sep, infer_schema=False)
    named = ", ".join(map(str, ragged[:5])) + (", ..." if len(ragged) > 5 else "")
    skipped[f"{path.name}: not {len(header)} fields like the header (lines {named})"] += len(ragged)
    kept = [row for row in lines() if row and len(row) == len(header)][1:]
    return pl.DataFrame([list(col) for col in zip(*kept)] if kept else [[] for _ in header],
                        schema={name: pl.Utf8 for name in header}, orient="col")


def _json_lines(data: bytes, path: Path, strict: bool, skipped: Counter) -> pl.DataFrame:
    """JSON lines one by one (the slow path, taken when the fast reader fails): malformed lines are
    named (strict) or skipped and counted."""
    import orjson

    records = []
    for lineno, line in enumerate(data.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
            reason = None if isinstance(record, dict) else "not a JSON object"
        except orjson.JSONDecodeError as exc:
            reason = f"invalid JSON ({first_line(exc)})"
        if reason is None:
            records.append(record)
        elif strict:
            raise UnimpError(f"{path}:{lineno}: {reason}")
        else:
            skipped[f"{path.name}: malformed JSON line"] += 1
    return pl.from_dicts(records, infer_schema_length=None)


def pick_columns(
    df: pl.DataFrame, path: str | os.PathLike, roles: Iterable[str], mapping: dict[str, str], required: Iterable[str]
) -> dict[str, str]:
    """Role -> column name for the roles this table has.

    A mapped role must exist; an unmapped role uses a same-named column when there is one. Required
    roles that are absent raise "<file>: column 'x' (role r) not found; columns are: ...".
    """
    required = set(required)
    found: dict[str, str] = {}
    for role in roles:
        column = mapping.get(role, role)
        if column in df.columns:
            found[role] = column
        elif role in mapping or role in required:
            raise UnimpError(f"{path}: column {column!r} (role {role}) not found; "
                             f"columns are: {', '.join(df.columns) or '(none)'}")
    return found


def as_text(expr: pl.Expr) -> pl.Expr:
    """Ids and text as trimmed strings; empty strings become null."""
    text = expr.cast(pl.Utf8).str.strip_chars()
    return pl.when(text == "").then(None).otherwise(text)


_ISO_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M")


def epoch_seconds(column: str, dtype: pl.DataType, fmt: str | None) -> pl.Expr:
    """Unix seconds (Int64) from a timestamp column of any type; unparseable values become null.

    Numbers are Unix seconds; dates/datetimes are converted; text is parsed with `fmt` when given,
    else as integer seconds or an ISO 8601 date / date-time (with optional fraction and offset).
    """
    col = pl.col(column)
    if dtype.is_integer():
        return col.cast(pl.Int64)
    if dtype.is_float():
        return col.floor().cast(pl.Int64, strict=False)
    if dtype == pl.Date:
        return col.cast(pl.Int64) * 86_400
    if isinstance(dtype, pl.Datetime):
        return col.dt.epoch("s")
    text = col.cast(pl.Utf8).str.strip_chars()
    if fmt is not None:
        return text.str.to_datetime(fmt, strict=False, time_unit="us").dt.epoch("s")
    # One spelling of the date/time separator keeps the format list short.
    iso = text.str.replace(r"^(\d{4}-\d{2}-\d{2}) ", "${1}T")
    attempts = [pl.when(text.str.contains(r"^-?\d+$")).then(text.cast(pl.Int64, strict=False))]
    attempts += [iso.str.to_datetime(f, strict=False, time_unit="us").dt.epoch("s") for f in _ISO_FORMATS]
    attempts.append(text.str.to_date("%Y-%m-%d", strict=False).cast(pl.Int64) * 86_400)
    return pl.coalesce(attempts)


def first_bad_row(df: pl.DataFrame, bad: pl.Expr) -> int | None:
    """1-based data row of the first row where `bad` holds, or None."""
    idx = df.select(bad.arg_true().first()).item()
    return None if idx is None else int(idx) + 1


def resolve_images(
    root: str | os.PathLike, relative: list[str | None], skipped: Counter, *, must_exist: bool,
    strict: bool = False, progress: Progress | None = None,
) -> list[str | None]:
    """Absolute image paths for paths relative to `root`, each checked with `safe_join`.

    A path that would leave `root` (`../x`, `/etc/passwd`) is dropped and counted in `skipped`
    (or raises when `strict`); with `must_exist`, files that are not there are dropped silently.
    """
    out: list[str | None] = []
    for rel in progress.track(relative, "checking item images") if progress else relative:
        if rel is None or rel == "":
            out.append(None)
            continue
        try:
            path = safe_join(root, rel)
        except UnimpError:
            if strict:
                raise
            skipped["image path outside the images folder (image ignored)"] += 1
            out.append(None)
            continue
        out.append(str(path) if not must_exist or path.is_file() else None)
    return out
