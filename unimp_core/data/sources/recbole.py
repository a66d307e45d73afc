"""`--source recbole`: RecBole atomic files NAME.inter and NAME.item from the --input folder.

An atomic file is tab-separated text whose first line names each field with its type,
`name:type`, type one of token, token_seq, float, float_seq (e.g. `user_id:token`,
`movie_title:token_seq`, `rating:float`); an empty value is missing. NAME is --datasets NAME or
the folder's name (RecBole's own layout: data_path/NAME/NAME.inter).

Fields are found by role: `--column ROLE=FIELD`, else the first of RecBole's usual names in
DEFAULT_FIELDS. From NAME.inter: user, item, timestamp (required), rating, review, summary; from
NAME.item (optional): title, brand, category, price, description, image_url, keyed by the item
field. Float timestamps are Unix seconds (token ones may also be ISO dates); a token_seq category
(`class:token_seq` = "Action Adventure") becomes "Action, Adventure". Other files of the dataset
(.user, .kg, .link, .net) are not read: unimp keeps no user attributes or graphs; the manifest's
notes name them. Every data line is kept or counted in `skipped` by file and reason (or, with
--strict, named as file:line).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from ...errors import UnimpError
from ...progress import Progress
from ...specs.data import INTERACTION_COLUMNS, PrepareSpec
from ..raw import RawData
from ..tables import as_text, epoch_seconds, file_record
from .files import check_ratings

FIELD_TYPES = ("token", "token_seq", "float", "float_seq")

# role -> RecBole field names tried in order when --column does not map the role
DEFAULT_FIELDS: dict[str, tuple[str, ...]] = {
    "user": ("user_id",),
    "item": ("item_id",),
    "timestamp": ("timestamp",),
    "rating": ("rating",),
    "review": ("review", "text"),
    "summary": ("summary",),
    "title": ("title", "movie_title", "item_name", "book_title", "app_name", "name"),
    "brand": ("brand",),
    "category": ("categories", "class", "genre", "genres"),
    "price": ("price",),
    "description": ("description",),
    "image_url": ("image_url",),
}
INTER_ROLES = INTERACTION_COLUMNS  # read from NAME.inter
ITEM_ROLES = ("title", "brand", "category", "price", "description", "image_url")  # read from NAME.item


@dataclass
class AtomicFile:
    """One atomic file: its fields (name -> type, in header order) and its well-formed data lines
    as text columns named after the fields, plus `_line` (the line number in the file)."""

    path: Path
    fields: dict[str, str]
    rows: pl.DataFrame

    def field(self, role: str, mapping: dict[str, str], required: bool) -> str | None:
        """The field holding `role`: the mapped one (which must exist), else a usual name, else None
        (or a one-line error naming the file and its fields when the role is required)."""
        if role in mapping:
            name = _strip_type(mapping[role])
            if name not in self.fields:
                raise UnimpError(f"{self.path}: no field {name!r} (--column {role}={mapping[role]}); "
                                 f"fields are: {self._listing()}")
            return name
        name = next((n for n in DEFAULT_FIELDS[role] if n in self.fields), None)
        if name is None and required:
            raise UnimpError(f"{self.path}: no {role} field (looked for {', '.join(DEFAULT_FIELDS[role])}); "
                             f"fields are: {self._listing()}; map one with --column {role}=FIELD")
        return name

    def _listing(self) -> str:
        return ", ".join(f"{n}:{t}" for n, t in self.fields.items())


def _strip_type(name: str) -> str:
    """`movie_title:token_seq` -> `movie_title`; a plain name is returned as it is."""
    base, sep, ftype = name.rpartition(":")
    return base if sep and ftype in FIELD_TYPES else name


def _decode(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UnimpError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:  # RecBole's default encoding is UTF-8; older conversions are Latin-1
        return data.decode("latin-1")


def read_atomic(path: Path, strict: bool, skipped: Counter) -> AtomicFile:
    """Parse an atomic file. Its header must be `name:type` fields; a data line with another number
    of fields than the header is skipped and counted (or raises file:line under `strict`)."""
    lines = _decode(path).split("\n")
    header = lines[0].rstrip("\r")
    fields: dict[str, str] = {}
    for entry in header.split("\t"):
        name, sep, ftype = entry.rpartition(":")
        if not (sep and name and ftype in FIELD_TYPES):
            raise UnimpError(f"{path}:1: header field {entry!r} is not name:type with type one of "
                             f"{', '.join(FIELD_TYPES)}")
        if name in fields:
            raise UnimpError(f"{path}:1: field {name!r} appears twice in the header")
        fields[name] = ftype
    body = pl.DataFrame({"_line": range(2, len(lines) + 1), "_text": lines[1:]}, schema={
        "_line": pl.Int64, "_text": pl.Utf8})
    body = body.with_columns(pl.col("_text").str.strip_suffix("\r")).filter(pl.col("_text") != "")  # blank: no row
    body = body.with_columns(pl.col("_text").str.split("\t").alias("_parts"))
    wrong = pl.col("_parts").list.len() != len(fields)
    n_wrong = body.select(wrong.sum()).item()
    if n_wrong:
        if strict:
            line, n = body.filter(wrong).select("_line", pl.col("_parts").list.len()).row(0)
            raise UnimpError(f"{path.name}:{line}: {n} tab-separated fields, the header has {len(fields)}")
        skipped[f"{path.name}: wrong number of fields"] += n_wrong
        body = body.filter(~wrong)
    rows = body.select("_line", *[as_text(pl.col("_parts").list.get(i)).alias(n) for i, n in enumerate(fields)])
    return AtomicFile(path, fields, rows)


def _drop_unparsed(df: pl.DataFrame, checks: list[tuple[str, pl.Expr, str]], file: AtomicFile, strict: bool,
                   skipped: Counter) -> pl.DataFrame:
    """Skip rows where a (field, converted value, what it should be) check finds text that did not
    convert (null), counting each row once under its first failing field; under `strict` raise
    file:line for the earliest such line. Rows where the field is empty are kept (missing, not malformed)."""
    bad = {field: pl.col(field).is_not_null() & value.is_null() for field, value, _ in checks}
    if strict:
        firsts = [(df.filter(bad[f]).select("_line", f).row(0), f, what) for f, _, what in checks
                  if df.select(bad[f].any()).item()]
        if firsts:
            (line, text), field, what = min(firsts, key=lambda x: x[0][0])
            raise UnimpError(f"{file.path.name}:{line}: {field} {text!r} is not {what}")
    for field, _, what in checks:
        n_bad = df.select(bad[field].sum()).item()
        if n_bad:
            skipped[f"{file.path.name}: {field} not {what}"] += n_bad
            df = df.filter(~bad[field])
    return df


def _interactions(inter: AtomicFile, domain: str, spec: PrepareSpec, skipped: Counter) -> pl.DataFrame:
    mapping = spec.recbole.columns
    f = {role: inter.field(role, mapping, required=role in ("user", "item", "timestamp")) for role in INTER_ROLES}
    ts = f["timestamp"]
    if inter.fields[ts] == "float":
        seconds = pl.col(ts).cast(pl.Float64, strict=False).floor().cast(pl.Int64, strict=False)
    else:
        seconds = epoch_seconds(ts, pl.Utf8, None)
    rating = pl.col(f["rating"]).cast(pl.Float64, strict=False) if f["rating"] else None
    checks = [(ts, seconds, "a Unix time or ISO date")] + ([(f["rating"], rating, "a number")] if f["rating"] else [])
    rows = _drop_unparsed(inter.rows, checks, inter, spec.strict, skipped)
    out = rows.select(
        (pl.lit(f"{domain}:") + pl.col(f["user"])).alias("user_key"),
        pl.col(f["item"]).alias("source_id"),
        seconds.alias("timestamp"),
        *([rating.alias("rating")] if rating is not None else []),
        *[pl.col(f[r]).alias(r) for r in ("review", "summary") if f[r]],
    )
    if rating is not None:
        out = check_ratings(out, rows[f["rating"]], inter.path, spec, skipped)
    return out


def _items(file: AtomicFile, item_ids: pl.DataFrame, spec: PrepareSpec, skipped: Counter) -> pl.DataFrame:
    """One row per interacted item with the item roles NAME.item has (first row per item wins);
    lines without an item, repeats and items nobody interacted with are counted."""
    mapping = spec.recbole.columns
    key = file.field("item", mapping, required=True)
    roles = {r: name for r in ITEM_ROLES if (name := file.field(r, mapping, required=False))}
    rows = file.rows
    if price := roles.get("price"):
        rows = _drop_unparsed(rows, [(price, pl.col(price).cast(pl.Float64, strict=False), "a number")], file,
                              spec.strict, skipped)
    exprs = [pl.col(key).alias("source_id")]
    for role, name in roles.items():
        value = pl.col(name)
        if role == "price":
            value = value.cast(pl.Float64, strict=False)
        elif role == "category" and file.fields[name] == "token_seq":
            value = value.str.split(" ").list.eval(pl.element().filter(pl.element() != "")).list.join(", ")
        exprs.append(value.alias(role))
    table = rows.select(exprs)
    name = file.path.name
    counts = {
        f"{name}: missing item id": table["source_id"].null_count(),
        f"{name}: repeated item (first line kept)": table.drop_nulls("source_id").height
        - table["source_id"].drop_nulls().n_unique(),
    }
    table = table.drop_nulls("source_id").unique(subset="source_id", keep="first", maintain_order=True)
    counts[f"{name}: item has no interactions"] = table.join(item_ids, on="source_id", how="anti").height
    skipped.update({reason: n for reason, n in counts.items() if n})
    return item_ids.join(table, on="source_id", how="left")


def load(spec: PrepareSpec, progress: Progress) -> RawData:
    """Read NAME.inter (and NAME.item) from `spec.input` into RawData (user_key = "NAME:<user>")."""
    folder, name = Path(spec.input), spec.datasets[0]
    inter_path = folder / f"{name}.inter"
    if not inter_path.is_file():
        found = sorted(p.stem for p in folder.glob("*.inter"))
        hint = f"; this folder has {', '.join(found)} (pass --datasets NAME)" if found else ""
        raise UnimpError(f"--input {folder}: no {name}.inter (RecBole atomic files NAME.inter){hint}")
    skipped: Counter = Counter()
    with progress.task(f"reading {inter_path.name}"):
        inter = read_atomic(inter_path, spec.strict, skipped)
    interactions = _interactions(inter, name, spec, skipped)
    item_ids = interactions.select("source_id").drop_nulls().unique(maintain_order=True)
    sources = [file_record(inter_path)]
    item_path = folder / f"{name}.item"
    if item_path.is_file():
        with progress.task(f"reading {item_path.name}"):
            items = _items(read_atomic(item_path, spec.strict, skipped), item_ids, spec, skipped)
        sources.append(file_record(item_path))
    else:
        items = item_ids
    notes = {}
    unread = sorted(p.name for p in folder.glob(f"{name}.*") if p.suffix not in (".inter", ".item"))
    if unread:
        notes["recbole_files_not_read"] = unread  # user attributes, knowledge graphs: unimp keeps none
    return RawData(interactions=interactions, items=items.with_columns(pl.lit(name).alias("domain")),
                   sources=sources, skipped=skipped, notes=notes)
