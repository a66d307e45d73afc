"""Amazon Review 2014 and 2018 (`--source amazon2014|amazon2018`): 5-core reviews plus item metadata.

This module also holds what every Amazon release shares: the download and the per-category rules
(`load`, `load_category`) and the block reader for gzip JSON lines. The 2023 line formats live in
amazon2023.py, which passes its own readers to `load`.

Each named category is read into its own RawData (user keys are `<domain>:<reviewerID>`, so the same
reviewer in two categories is two histories) and the parts are concatenated; items share one catalogue
keyed by asin.

File formats:
    2014 reviews  JSON lines: reviewerID, asin, reviewerName, helpful, reviewText, overall, summary,
                  unixReviewTime, reviewTime
    2014 meta     one Python dict literal per line, single-quoted (read with ast.literal_eval, never eval):
                  asin, title, price, imUrl, brand, categories (list of lists), description, salesRank, related
    2018 reviews  JSON lines: reviewerID, asin, overall, reviewText, summary, unixReviewTime, style, image
    2018 meta     JSON lines: asin, title, brand, category (list), price ("$12.99" or junk),
                  imageURL / imageURLHighRes (lists), description (list)

Malformed lines are skipped and counted per file and reason (or raise with file:line under --strict).
Files are read in blocks into column lists that become polars frames, so memory holds the parsed
columns, not Python objects per line.
"""

from __future__ import annotations

import ast
import gzip
import io
import math
import re
import zlib
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import polars as pl

from ...errors import UnimpError
from ...progress import Progress
from .. import catalog
from ..fetch import FetchJob, fetch_files, is_url
from ..raw import RawData

try:  # orjson parses review lines several times faster; the standard library is the fallback
    from orjson import loads as json_loads
except ImportError:  # pragma: no cover - exercised only where orjson is absent
    from json import loads as json_loads

CHUNK_ROWS = 200_000  # rows gathered in Python lists before they become a polars frame
BLOCK_BYTES = 8 << 20  # decompressed bytes read from a gzip file at a time

INTERACTION_SCHEMA = {
    "user_key": pl.Utf8, "source_id": pl.Utf8, "timestamp": pl.Int64, "rating": pl.Float64,
    "review": pl.Utf8, "summary": pl.Utf8,
}
ITEM_SCHEMA = {
    "source_id": pl.Utf8, "title": pl.Utf8, "brand": pl.Utf8, "category": pl.Utf8, "price": pl.Float64,
    "description": pl.Utf8, "image_url": pl.Utf8,
}


# (reviews path, domain, progress, skipped, strict) -> interactions with INTERACTION_SCHEMA's columns
ReviewReader = Callable[[Path, str, Progress, Counter, bool], pl.DataFrame]
# (meta path, release, wanted item ids, progress, skipped, strict) -> items with ITEM_SCHEMA's columns
MetaReader = Callable[[Path, str, "set[str]", Progress, Counter, bool], pl.DataFrame]


def load(spec, progress: Progress, readers: tuple[ReviewReader, MetaReader] | None = None) -> RawData:
    """Fetch and parse the categories named in `spec.datasets` of release `spec.source`.

    Args:
        spec: a PrepareSpec with an Amazon source (uses datasets, mirror, cache_dir, strict, and
            images.timeout / retries / backoff for the downloads).
        progress: bars for downloads and parsing.
        readers: the release's line formats (default: the 2014/2018 ones here).

    Returns one RawData for all categories, with the fetched files in `sources`.
    """
    release = spec.source
    names = list(dict.fromkeys(spec.datasets))
    base = catalog.release(release).base_url
    jobs = [FetchJob(base, rel) for name in names for rel in catalog.files(release, name)]  # checks names first
    fetched = fetch_files(
        jobs, Path(spec.cache_dir) / "raw" / release, spec.mirror, progress,
        timeout=spec.images.timeout, retries=spec.images.retries, backoff=spec.images.backoff,
    )
    parts = []
    for k, name in enumerate(names):
        reviews, meta = fetched[2 * k], fetched[2 * k + 1]
        try:
            part = load_category(release, name, reviews.path, meta.path, progress, strict=spec.strict,
                                 require_image_meta=not spec.keep_items_without_meta, readers=readers)
        except CorruptGzip as exc:
            if spec.mirror is not None and not is_url(spec.mirror):
                raise UnimpError(f"{exc}; it is your --mirror file, left as it is") from None
            raise UnimpError(f"{exc}; delete it to download again") from None
        part.sources = [reviews.record(), meta.record()]
        parts.append(part)
    return RawData.concat(parts)


def load_category(
    release: str, domain: str, reviews_path: Path, meta_path: Path, progress: Progress, strict: bool = False,
    require_image_meta: bool = True, readers: tuple[ReviewReader, MetaReader] | None = None,
) -> RawData:
    """Parse one category's local reviews and metadata files into a RawData.

    With `require_image_meta` (the paper's preprocessing) a review is kept only when its item has a
    metadata line with an image URL; the reviews dropped are counted in `skipped` by reason. Without it
    every reviewed item appears in the items table (with null text when its metadata line is missing).
    Either way this runs before the k-core.
    """
    reviews_of, meta_of = readers or (read_reviews, read_meta)
    skipped: Counter = Counter()  # metadata lines
    row_skips: Counter = Counter()  # review lines
    inter = reviews_of(reviews_path, domain, progress, row_skips, strict)
    before = inter.height
    # The 2018 and 2023 dumps repeat some reviews verbatim; a repeat would count twice towards the k-core.
    inter = inter.unique(subset=["user_key", "source_id", "timestamp"], keep="first", maintain_order=True)
    if inter.height < before:
        row_skips[f"{reviews_path.name}: duplicate review"] += before - inter.height
    reviewed = inter.select("source_id").unique(maintain_order=True)
    meta = meta_of(meta_path, release, set(reviewed["source_id"].to_list()), progress, skipped, strict)
    items = reviewed.join(meta.with_columns(pl.lit(True).alias("_meta")), on="source_id", how="left")
    if require_image_meta:
        no_meta = set(items.filter(pl.col("_meta").is_null())["source_id"].to_list())
        no_image = set(items.filter(pl.col("_meta") & pl.col("image_url").is_null())["source_id"].to_list())
        for ids, reason in ((no_meta, "item has no metadata line"), (no_image, "item's metadata has no image URL")):
            dropped = inter.filter(pl.col("source_id").is_in(list(ids))).height if ids else 0
            if dropped:
                row_skips[f"{reviews_path.name}: {reason}"] += dropped
        if no_meta or no_image:
            keep = ~pl.col("source_id").is_in(list(no_meta | no_image))
            inter, items = inter.filter(keep), items.filter(keep)
    items = items.drop("_meta").with_columns(pl.lit(domain).alias("domain"))
    return RawData(interactions=inter, items=items, skipped=skipped, row_skips=row_skips)


# --- reading -------------------------------------------------------------------------------------


class CorruptGzip(UnimpError):
    """A raw file that does not decompress; the caller says what to do about it (whose file it is)."""


def gzip_blocks(path: Path, progress: Progress, description: str) -> Iterator[tuple[int, bytes]]:
    """Yield (number of its first line, block) for consecutive blocks of whole lines of a gzip file.

    A corrupt or truncated file raises UnimpError rather than ending early.
    """
    raw = open(path, "rb")
    try:
        with raw, gzip.GzipFile(fileobj=raw) as gz, progress.task(description, total=path.stat().st_size) as advance:
            rest, lineno, reported = b"", 1, 0
            while block := gz.read(BLOCK_BYTES):
                data = rest + block
                cut = data.rfind(b"\n") + 1
                rest = data[cut:]
                position = raw.tell()
                advance(position - reported)
                reported = position
                if cut:
                    yield lineno, data[:cut]
                    lineno += data.count(b"\n", 0, cut)
            if rest:
                yield lineno, rest
    except (OSError, EOFError, zlib.error) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CorruptGzip(f"{path}: corrupt or truncated gzip ({detail})") from None


def split_lines(block: bytes) -> list[bytes]:
    lines = block.split(b"\n")
    if not lines[-1]:
        lines.pop()
    return lines


class Lines:
    """Skip-or-raise bookkeeping for one file."""

    def __init__(self, path: Path, skipped: Counter, strict: bool) -> None:
        self.name = path.name
        self.skipped = skipped
        self.strict = strict

    def bad(self, lineno: int, reason: str) -> None:
        if self.strict:
            raise UnimpError(f"{self.name}:{lineno}: {reason}")
        self.skipped[f"{self.name}: {reason}"] += 1

    def record(self, lineno: int, line: bytes, parse: Callable[[bytes], Any] | None = None,
               reason: str = "bad json") -> dict | None:
        """The line's object (`parse`: JSON by default), or None: a blank line silently, anything that is not
        an object counted (or raised) as `reason`."""
        try:
            r = (parse or json_loads)(line)
        except (ValueError, RecursionError):
            r = None
        if type(r) is not dict:
            if line.strip():
                self.bad(lineno, reason)
            return None
        return r


class Columns:
    """Rows gathered as column lists (slow path) or frames (fast path), in file order, and merged into
    polars chunks of about CHUNK_ROWS rows so neither Python objects nor tiny chunks pile up."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self.chunks: list[pl.DataFrame] = []
        self.pending: list[pl.DataFrame] = []
        self.pending_rows = 0
        self.cols: dict[str, list] = {name: [] for name in schema}

    def add_frame(self, df: pl.DataFrame) -> None:
        self._lists_to_pending()
        self.pending.append(df)
        self.pending_rows += df.height
        self._maybe_merge()

    def rows_added(self) -> None:
        """Call after appending to `cols`."""
        if len(self.cols["source_id"]) >= CHUNK_ROWS:
            self._lists_to_pending()
            self._maybe_merge()

    def frame(self) -> pl.DataFrame:
        self._lists_to_pending()
        self._maybe_merge(force=True)
        return pl.concat(self.chunks, rechunk=False) if self.chunks else pl.DataFrame(schema=self.schema)

    def _lists_to_pending(self) -> None:
        n = len(self.cols["source_id"])
        if n:
            self.pending.append(pl.DataFrame(self.cols, schema=self.schema))
            self.pending_rows += n
            self.cols = {name: [] for name in self.schema}

    def _maybe_merge(self, force: bool = False) -> None:
        if self.pending and (force or self.pending_rows >= CHUNK_ROWS):
            self.chunks.append(pl.concat(self.pending, rechunk=True))
            self.pending, self.pending_rows = [], 0


# Review fields the fast path reads; polars ignores the others (helpful, style, image, ...).
_REVIEW_JSON = {
    "reviewerID": pl.Utf8, "asin": pl.Utf8, "overall": pl.Float64, "unixReviewTime": pl.Int64,
    "reviewText": pl.Utf8, "summary": pl.Utf8,
}


def nonempty(name: str) -> pl.Expr:
    return pl.when(pl.col(name) != "").then(pl.col(name))


def _reviews_fast(block: bytes) -> pl.DataFrame | None:
    """A block of clean review lines parsed by polars' native reader (about 2x the per-line path);
    None when anything is unusual (bad JSON, text ratings, missing ids or times), and the per-line
    path then decides line by line. Blank lines yield no row on either path."""
    try:
        df = pl.read_ndjson(io.BytesIO(block), schema=_REVIEW_JSON)
    except Exception:  # polars raises ComputeError and friends on any malformed line
        return None
    ids = df.select(
        bad=(pl.col("reviewerID").is_null() | pl.col("asin").is_null() | pl.col("unixReviewTime").is_null()
             | (pl.col("reviewerID") == "") | (pl.col("asin") == "")
             # polars turns an object or list into its JSON text; such an id is malformed
             | pl.col("reviewerID").str.contains(r"^[\[{]") | pl.col("asin").str.contains(r"^[\[{]")).any()
    )
    if ids.item():
        return None
    return df.select(
        pl.col("reviewerID").alias("user_key"), pl.col("asin").alias("source_id"),
        pl.col("unixReviewTime").alias("timestamp"),
        pl.when(pl.col("overall").is_finite()).then(pl.col("overall")).alias("rating"),
        nonempty("reviewText").alias("review"), nonempty("summary").alias("summary"),
    )


def _reviews_slow(first: int, block: list[bytes], cols: dict[str, list], lines: Lines) -> None:
    """Parse review lines one by one into `cols`, skipping (or raising on) malformed ones."""
    users, asins, times = cols["user_key"], cols["source_id"], cols["timestamp"]
    ratings, reviews, summaries = cols["rating"], cols["review"], cols["summary"]
    for n, line in enumerate(block, first):
        r = lines.record(n, line)
        if r is None:
            continue
        user, asin = r.get("reviewerID"), r.get("asin")
        if not (user and asin and type(user) is str and type(asin) is str):
            lines.bad(n, "missing reviewerID or asin")
            continue
        rating = r.get("overall")
        if rating is not None:
            rating = to_number(rating)
            if rating is None:
                lines.bad(n, "non-numeric rating")
                continue
        ts = r.get("unixReviewTime")
        if type(ts) is not int:
            ts = _timestamp(ts, r.get("reviewTime"))
        review, summary = r.get("reviewText"), r.get("summary")
        users.append(user)
        asins.append(asin)
        times.append(ts)
        ratings.append(rating)
        reviews.append(review if review and type(review) is str else None)
        summaries.append(summary if summary and type(summary) is str else None)


def read_reviews(path: Path, domain: str, progress: Progress, skipped: Counter, strict: bool) -> pl.DataFrame:
    """Interactions (user_key, source_id, timestamp, rating, review, summary) from a reviews file."""
    lines = Lines(path, skipped, strict)
    out = Columns(INTERACTION_SCHEMA)
    for first, block in gzip_blocks(path, progress, f"read {path.name}"):
        fast = _reviews_fast(block)
        if fast is not None:
            out.add_frame(fast)
        else:
            _reviews_slow(first, split_lines(block), out.cols, lines)
            out.rows_added()
    inter = out.frame()
    return inter.with_columns((pl.lit(f"{domain}:") + pl.col("user_key")).alias("user_key"))


# A 2014 meta line starts with its asin; items no review mentions are skipped before the (slow)
# literal_eval: a category's meta file holds ~20x more items than its 5-core reviews touch.
_ASIN_2014 = re.compile(rb"\{'asin': '([A-Za-z0-9]+)'")
# The unused `related` dict (lists of asins) is most of a 2014 meta line; cutting it out before
# literal_eval makes parsing ~3x faster. The pattern only spans quotes, word characters, commas,
# colons, spaces and brackets, so it cannot reach into another field.
_RELATED_2014 = re.compile(rb", 'related': \{[\w',: \[\]]*\}")


def read_meta(
    path: Path, release: str, wanted: set[str], progress: Progress, skipped: Counter, strict: bool
) -> pl.DataFrame:
    """Items (source_id, title, brand, category, price, description, image_url) for the `wanted` asins.

    The first line of a repeated asin wins.
    """
    lines = Lines(path, skipped, strict)
    to_item = _item_2014 if release == "amazon2014" else _item_2018

    def parse_block(first: int, block: list[bytes], cols: dict[str, list]) -> None:
        for n, line in enumerate(block, first):
            if release == "amazon2014":
                m = _ASIN_2014.match(line)
                if m is not None and m.group(1).decode() not in wanted:
                    continue
                record = lines.record(n, _RELATED_2014.sub(b"", line, count=1), _literal, "bad literal")
            else:
                record = lines.record(n, line)
            if record is None:
                continue
            asin = record.get("asin")
            if not asin or type(asin) is not str:
                lines.bad(n, "missing asin")
                continue
            if asin not in wanted:
                continue
            item = to_item(record)
            for name, value in zip(ITEM_SCHEMA, (asin, *item)):
                cols[name].append(value)

    out = Columns(ITEM_SCHEMA)
    for first, block in gzip_blocks(path, progress, f"read {path.name}"):
        parse_block(first, split_lines(block), out.cols)
        out.rows_added()
    return out.frame().unique(subset="source_id", keep="first", maintain_order=True)


# --- field conversion ----------------------------------------------------------------------------


def _literal(line: bytes) -> Any:
    """A Python literal from a 2014 meta line, or None. Only literals are accepted: code is not run."""
    try:
        return ast.literal_eval(line.decode("utf-8").strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError, UnicodeDecodeError):
        return None


def _item_2014(r: dict) -> tuple:
    categories = r.get("categories")
    first = categories[0] if isinstance(categories, list) and categories else None
    return (
        clean_text(r.get("title")),
        clean_text(r.get("brand")),
        joined_text(first, " > "),
        to_number(r.get("price")),
        clean_text(r.get("description")),
        clean_text(r.get("imUrl")),
    )


def _item_2018(r: dict) -> tuple:
    high_res, low_res = r.get("imageURLHighRes"), r.get("imageURL")
    image = _first(high_res) or _first(low_res)
    return (
        clean_text(r.get("title")),
        clean_text(r.get("brand")),
        joined_text(r.get("category"), " > "),
        parse_price(r.get("price")),
        joined_text(r.get("description"), " "),
        image,
    )


_PRICE = re.compile(r"\s*\$\s*(\d[\d,]*(?:\.\d+)?)")


def parse_price(value: Any) -> float | None:
    """'$12.99' -> 12.99, '$1,299.00' -> 1299.0, '$5.99 - $9.99' -> 5.99 (the low end); junk -> None."""
    if isinstance(value, str):
        m = _PRICE.match(value)
        return float(m.group(1).replace(",", "")) if m else None
    return to_number(value)


def to_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _timestamp(unix: Any, review_time: Any) -> int | None:
    """Unix seconds from unixReviewTime, else from reviewTime ('MM DD, YYYY'); None when neither parses."""
    x = to_number(unix)
    if x is not None:
        return int(x)
    if isinstance(review_time, str):
        try:
            return int(datetime.strptime(review_time.strip(), "%m %d, %Y").replace(tzinfo=timezone.utc).timestamp())
        except ValueError:
            return None
    return None


def clean_text(value: Any) -> str | None:
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return None


def joined_text(value: Any, sep: str) -> str | None:
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, list):
        parts = [s for s in (clean_text(v) for v in value if isinstance(v, str)) if s]
        return sep.join(parts) or None
    return None


def _first(value: Any) -> str | None:
    if isinstance(value, list):
        for v in value:
            if (s := clean_text(v)) is not None:
                return s
    return clean_text(value) if isinstance(value, str) else None
