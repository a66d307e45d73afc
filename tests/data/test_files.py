import gzip
import json
from pathlib import Path

import polars as pl
import pytest

from unimp_core.data import process
from unimp_core.data.sources import files, load_source
from unimp_core.errors import UnimpError
from unimp_core.progress import Progress
from unimp_core.specs.data import FilesSpec, PrepareSpec

# the first 3,000 users of the real Amazon 2014 Beauty sequences (see the folder's README)
BEAUTY_SEQ = Path(__file__).resolve().parents[1] / "assets" / "amazon2014-seq" / "Beauty-first3000.txt"

ROWS = [  # user, item, timestamp, rating, review
    ("u1", "007", 1_600_000_000, 5.0, "lovely"),
    ("u1", "008", 1_600_000_100, 4.0, None),
    ("u2", "007", 1_600_000_050, 3.0, "ok"),
]


def _spec(**files_kw) -> PrepareSpec:
    return PrepareSpec(source="files", files=FilesSpec(**files_kw))


def _load(**files_kw):
    return files.load(_spec(**files_kw), Progress())


def _frame() -> pl.DataFrame:
    return pl.DataFrame(ROWS, schema=["user", "item", "timestamp", "rating", "review"], orient="row")


def _write(df: pl.DataFrame, path: Path) -> Path:
    name = path.name
    if name.endswith(".parquet"):
        df.write_parquet(path)
    elif name.endswith((".jsonl", ".jsonl.gz")):
        text = df.write_ndjson()
        path.write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())
    else:
        sep = "\t" if ".tsv" in name else ","
        text = df.write_csv(separator=sep)
        path.write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())
    return path


@pytest.mark.parametrize("name", ["inter.csv", "inter.tsv", "inter.jsonl", "inter.parquet", "inter.csv.gz",
                                  "inter.jsonl.gz"])
def test_every_format_gives_the_same_interactions(tmp_path, name):
    # Item ids like "007" must keep their leading zeros in every format.
    raw = _load(interactions=_write(_frame(), tmp_path / name), domain="shop")
    got = raw.interactions.select("user_key", "source_id", "timestamp", "rating", "review").rows()
    assert got == [(f"shop:{u}", i, t, r, v) for u, i, t, r, v in ROWS]
    assert sorted(raw.items["source_id"].to_list()) == ["007", "008"]
    assert set(raw.items["domain"].to_list()) == {"shop"}
    assert raw.sources[0]["bytes"] == (tmp_path / name).stat().st_size and len(raw.sources[0]["sha256"]) == 64


def test_column_mapping_and_items_table(tmp_path):
    inter = tmp_path / "events.csv"
    inter.write_text("customer,product,when,stars\nc1,p1,2021-03-04,5\nc1,p2,2021-03-05T10:00:00Z,x\n"
                     "c2,p1,2021-03-04 12:30:00,3\n")
    images = tmp_path / "pics"
    images.mkdir()
    (images / "p1.jpg").write_bytes(b"jpg")
    items = tmp_path / "items.jsonl"
    items.write_text("\n".join(json.dumps(r) for r in [
        {"product": "p1", "name": "Red mug", "price": "$12.50", "image_path": "p1.jpg", "category": "Kitchen"},
        {"product": "p2", "name": "Blue mug", "price": 3, "image_path": "../secret.jpg",
         "image_url": "http://x/p2.jpg"},
        {"product": "p1", "name": "duplicate row, ignored"},
        {"product": "p9", "name": "never bought"},
    ]))
    raw = _load(interactions=inter, items=items, images=images,
                columns={"user": "customer", "item": "product", "timestamp": "when", "rating": "stars",
                         "title": "name"})
    assert raw.interactions.select("user_key", "source_id", "timestamp", "rating").rows() == [
        ("files:c1", "p1", 1614816000, 5.0),
        ("files:c1", "p2", 1614938400, None),
        ("files:c2", "p1", 1614861000, 3.0),
    ]
    assert raw.notes["ratings_not_numeric"] == 1
    items_by_id = {r["source_id"]: r for r in raw.items.to_dicts()}
    assert set(items_by_id) == {"p1", "p2"}
    assert items_by_id["p1"]["title"] == "Red mug" and items_by_id["p1"]["price"] == 12.5
    assert items_by_id["p1"]["image_path"] == str((images / "p1.jpg").resolve())
    assert items_by_id["p1"]["category"] == "Kitchen"
    # `../secret.jpg` would leave the images folder: dropped and counted, the URL is kept.
    assert items_by_id["p2"]["image_path"] is None and items_by_id["p2"]["image_url"] == "http://x/p2.jpg"
    assert raw.skipped["image path outside the images folder (image ignored)"] == 1
    with pytest.raises(UnimpError, match=r"items\.jsonl: path '\.\./secret\.jpg' escapes"):
        files.load(PrepareSpec(source="files", strict=True, files=FilesSpec(
            interactions=inter, items=items, images=images,
            columns={"user": "customer", "item": "product", "timestamp": "when", "title": "name"})), Progress())


def test_item_roles_from_the_interactions_table(tmp_path):
    (tmp_path / "img").mkdir()
    inter = tmp_path / "all.csv"
    inter.write_text("user,item,timestamp,title,image_path\nu,a,1,Apple,img/a.png\nu,b,2,Banana,/etc/passwd\n")
    raw = _load(interactions=inter)
    items = {r["source_id"]: r for r in raw.items.to_dicts()}
    assert items["a"]["title"] == "Apple"
    assert items["a"]["image_path"] == str((tmp_path / "img" / "a.png").resolve())  # relative to the table
    assert items["b"]["image_path"] is None  # absolute path outside the folder


def test_missing_required_column(tmp_path):
    inter = _write(_frame().drop("user"), tmp_path / "inter.csv")
    with pytest.raises(UnimpError) as info:
        _load(interactions=inter)
    assert str(info.value) == (f"{inter}: column 'user' (role user) not found; "
                               "columns are: item, timestamp, rating, review")
    with pytest.raises(UnimpError, match=r"column 'who' \(role user\) not found"):
        _load(interactions=_write(_frame(), tmp_path / "b.csv"), columns={"user": "who"})
    with pytest.raises(UnimpError, match=r"items\.csv: column 'name' \(role title\) not found; columns are: item"):
        items = tmp_path / "items.csv"
        items.write_text("item\n007\n")
        _load(interactions=_write(_frame(), tmp_path / "c.csv"), items=items, columns={"title": "name"})


def test_timestamps_text_format_and_bad_values(tmp_path):
    inter = tmp_path / "inter.csv"
    inter.write_text("user,item,timestamp\nu,a,04/03/2021\nu,b,garbage\nu,c,\n")
    raw = _load(interactions=inter, timestamp_format="%d/%m/%Y")
    # unparseable values are dropped and counted; empty ones stay null for the shared pipeline to count
    assert raw.interactions.select("source_id", "timestamp").rows() == [("a", 1614816000), ("c", None)]
    assert raw.row_skips == {"timestamp not parseable as format '%d/%m/%Y'": 1} and raw.read == 3
    with pytest.raises(UnimpError, match=r"inter\.csv: row 2: cannot parse timestamp 'garbage'"):
        files.load(PrepareSpec(source="files", strict=True,
                               files=FilesSpec(interactions=inter, timestamp_format="%d/%m/%Y")), Progress())


def test_unknown_format_and_missing_file(tmp_path):
    bad = tmp_path / "inter.xlsx"
    bad.write_text("x")
    with pytest.raises(UnimpError, match="unknown table format"):
        _load(interactions=bad)
    with pytest.raises(UnimpError, match="file not found"):
        _load(interactions=tmp_path / "absent.csv")


def test_latin1_csv_is_read(tmp_path):
    inter = tmp_path / "inter.csv"
    inter.write_bytes("user,item,timestamp,review\nu,a,5,caf\xe9\n".encode("latin-1"))
    assert _load(interactions=inter).interactions["review"].to_list() == ["caf\u00e9"]


def _sequences_to_table(lines: list[str], path: Path) -> tuple[int, int, int]:
    """One `user item item ...` line per user (time order) -> user,item,timestamp rows with
    timestamp = position. Returns (users, distinct items, interactions) as counted from the lines."""
    users, items, stamps = [], [], []
    for line in lines:
        user, *seq = line.split()
        users += [user] * len(seq)
        items += seq
        stamps += list(range(len(seq)))
    pl.DataFrame({"user": users, "item": items, "timestamp": stamps}).write_csv(path)
    return len(lines), len(set(items)), len(items)


def test_real_amazon_sequences_through_the_files_source(tmp_path):
    lines = [line for line in BEAUTY_SEQ.read_text().splitlines() if line.strip()]
    assert len(lines) == 3000
    n_users, n_items, n_inter = _sequences_to_table(lines, tmp_path / "beauty.csv")
    spec = _spec(interactions=tmp_path / "beauty.csv", domain="beauty")
    raw = load_source(spec, Progress())
    inter = raw.interactions
    assert inter.height == n_inter
    assert inter["user_key"].n_unique() == n_users
    assert inter["source_id"].n_unique() == n_items == raw.items.height
    # order is kept: the shared pipeline's time sort gives back each user's line
    ordered = process.order_interactions(inter, seed=0)
    first = lines[0].split()
    assert ordered.filter(pl.col("user_key") == f"beauty:{first[0]}")["source_id"].to_list() == first[1:]
