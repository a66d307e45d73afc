"""`--source hm`: the Kaggle "H&M Personalized Fashion Recommendations" dump in a local folder.

Expected files: `transactions_train.csv` (t_dat, customer_id, article_id, price, ...), `articles.csv`
(article_id, prod_name, product_type_name, section_name, detail_desc, ...) and
`images/<first 3 digits>/<article_id>.jpg`. Article ids keep their leading zero (10 digits).

The transactions file has ~31M rows, so it is scanned lazily and reduced in one columnar pass:
a user's repeated purchases of an article collapse to the first (earliest day), and an article's
price is the mean over all its purchases. Days become Unix seconds at midnight UTC; same-day
purchases are ordered later by the shared pipeline's seeded tie-break.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import polars as pl

from ...errors import UnimpError
from ...progress import Progress
from ...specs.data import PrepareSpec
from ..raw import RawData
from ..tables import as_text, file_record, resolve_images

DOMAIN = "hm"
TRANSACTIONS = "transactions_train.csv"
ARTICLES = "articles.csv"
IMAGES = "images"
TX_REQUIRED = ("t_dat", "customer_id", "article_id")
# Placeholder values in articles.csv that carry no information.
UNKNOWN = ["Unknown", "unknown", "undefined", "Undefined", "N/A"]
DESCRIPTION_ATTRS = ("graphical_appearance_name", "perceived_colour_value_name", "section_name")
CATEGORY_PATH = ("index_group_name", "section_name", "product_type_name")


def article_id(expr: pl.Expr) -> pl.Expr:
    """Canonical 10-digit article id; tools that read the CSV as numbers drop the leading zero."""
    text = as_text(expr)
    return pl.when(text.str.contains(r"^\d+$")).then(text.str.zfill(10)).otherwise(text)


def _require(columns: list[str], path: Path, wanted: tuple[str, ...]) -> None:
    for name in wanted:
        if name not in columns:
            raise UnimpError(f"{path}: column {name!r} not found; columns are: {', '.join(columns)}")


def _transactions(path: Path, strict: bool, row_skips: Counter) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(first purchase per user and article, mean price per article) from one lazy scan; the other
    transactions are counted in `row_skips` by reason."""
    lf = pl.scan_csv(path, infer_schema=False)  # all text: ids keep their zeros, bad values stay visible
    try:
        columns = lf.collect_schema().names()
    except Exception as exc:
        raise UnimpError(f"{path}: cannot read the CSV header: {str(exc).splitlines()[0]}") from exc
    _require(columns, path, TX_REQUIRED)
    price = pl.col("price").cast(pl.Float64, strict=False) if "price" in columns else pl.lit(None, pl.Float64)
    parsed = lf.with_row_index("_row").select(
        "_row",
        # Categorical codes keep the 31M-row group-by small (customer ids are 64-char hex strings).
        as_text(pl.col("customer_id")).cast(pl.Categorical).alias("customer"),
        article_id(pl.col("article_id")).cast(pl.Categorical).alias("article"),
        pl.col("t_dat").str.strip_chars().str.to_date("%Y-%m-%d", strict=False).alias("date"),
        price.alias("price"),
    )
    ok = pl.col("customer").is_not_null() & pl.col("article").is_not_null() & pl.col("date").is_not_null()
    first = parsed.filter(ok).group_by("customer", "article").agg(pl.col("date").min())
    prices = parsed.filter(ok).group_by("article").agg(pl.col("price").mean())
    bad = parsed.filter(~ok).select(pl.len().alias("n"), pl.col("_row").first().alias("row"))
    n_ok = parsed.filter(ok).select(pl.len())
    try:
        first, prices, bad, n_ok = pl.collect_all([first, prices, bad, n_ok])
    except pl.exceptions.PolarsError as exc:
        raise UnimpError(f"{path}: cannot read: {str(exc).strip().splitlines()[0]}") from exc
    n_bad, row = bad.row(0)
    if n_bad:
        if strict:
            raise UnimpError(f"{path}: line {row + 2}: missing or malformed t_dat (YYYY-MM-DD), "
                             "customer_id or article_id")
        row_skips["hm transaction with missing or malformed t_dat, customer_id or article_id"] += n_bad
    if n_ok.item() > first.height:
        row_skips["hm transaction repeating a purchase (the first is kept)"] += n_ok.item() - first.height
    inter = first.select(
        (pl.lit(f"{DOMAIN}:") + pl.col("customer").cast(pl.Utf8)).alias("user_key"),
        pl.col("article").cast(pl.Utf8).alias("source_id"),
        (pl.col("date").cast(pl.Int64) * 86_400).alias("timestamp"),  # days since 1970 -> seconds
    )
    prices = prices.select(pl.col("article").cast(pl.Utf8).alias("source_id"), "price")
    return inter, prices


def _text(columns: list[str], name: str) -> pl.Expr:
    if name not in columns:
        return pl.lit(None, pl.Utf8)
    text = as_text(pl.col(name))
    return pl.when(text.is_in(UNKNOWN)).then(None).otherwise(text)


def _articles(path: Path) -> pl.DataFrame:
    """source_id, title, category, description per article (first row per id)."""
    try:
        df = pl.read_csv(path, infer_schema=False)
    except Exception as exc:
        raise UnimpError(f"{path}: cannot read as CSV: {str(exc).strip().splitlines()[0]}") from exc
    _require(df.columns, path, ("article_id", "prod_name"))
    cols = df.columns
    attrs = pl.concat_str([_text(cols, c) for c in DESCRIPTION_ATTRS], separator=", ", ignore_nulls=True)
    attrs = pl.when(attrs == "").then(None).otherwise(attrs + ".")
    description = pl.concat_str([attrs, _text(cols, "detail_desc")], separator=" ", ignore_nulls=True)
    category = pl.concat_str([_text(cols, c) for c in CATEGORY_PATH], separator=" > ", ignore_nulls=True)
    out = df.select(
        article_id(pl.col("article_id")).alias("source_id"),
        _text(cols, "prod_name").alias("title"),
        pl.lit("H&M").alias("brand"),
        pl.when(category == "").then(None).otherwise(category).alias("category"),
        pl.when(description == "").then(None).otherwise(description).alias("description"),
    )
    return out.drop_nulls("source_id").unique(subset="source_id", keep="first", maintain_order=True)


def _image_relpath(source_id: str) -> str | None:
    """images/0xx/<id>.jpg; only well-formed ids get a path."""
    if len(source_id) != 10 or not source_id.isdigit():
        return None
    return f"{source_id[:3]}/{source_id}.jpg"


def load(spec: PrepareSpec, progress: Progress) -> RawData:
    """Read the H&M folder `spec.input` into RawData (user_key = "hm:<customer_id>")."""
    root = Path(spec.input)
    if not root.is_dir():
        raise UnimpError(f"{root}: H&M folder not found")
    tx_path, art_path = root / TRANSACTIONS, root / ARTICLES
    for path in (tx_path, art_path):
        if not path.is_file():
            raise UnimpError(f"{path}: not found (expected the Kaggle H&M files {TRANSACTIONS} and {ARTICLES})")
    skipped: Counter = Counter()
    row_skips: Counter = Counter()
    notes: dict = {}
    with progress.task(f"reading {TRANSACTIONS}"):
        inter, prices = _transactions(tx_path, spec.strict, row_skips)
    with progress.task(f"reading {ARTICLES}"):
        articles = _articles(art_path)
    # Every purchased article is an item, described when articles.csv knows it.
    items = prices.join(articles, on="source_id", how="left").with_columns(pl.lit(DOMAIN).alias("domain"))
    image_root = root / IMAGES
    if image_root.is_dir():
        rels = [_image_relpath(s) for s in items["source_id"].to_list()]
        paths = resolve_images(image_root, rels, skipped, must_exist=True, progress=progress)
        items = items.with_columns(pl.Series("image_path", paths, dtype=pl.Utf8))
        notes["hm_items_without_image"] = sum(p is None for p in paths)
    else:
        notes["hm_items_without_image"] = items.height
        notes["hm_images"] = f"no {IMAGES}/ folder in {root}"
    with progress.task("checksumming inputs"):
        sources = [file_record(tx_path), file_record(art_path)]
    return RawData(interactions=inter, items=items, sources=sources, skipped=skipped, notes=notes,
                   row_skips=row_skips)
