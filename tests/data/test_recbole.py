"""RecBole atomic files (`--source recbole`): the committed ML-100K excerpt from RecBole's wheel, and
small hand-written files for mappings and malformed lines."""

import shutil
from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from tests.data.contract import assert_dataset_contract
from unimp_core.data.sources import recbole
from unimp_core.errors import UnimpError
from unimp_core.progress import Progress
from unimp_core.specs.data import ImageDownloadSpec, PrepareSpec

ML100K = Path(__file__).resolve().parents[1] / "assets" / "recbole" / "ml-100k"


def spec(folder, **kw):
    return PrepareSpec(source="recbole", input=folder, cache_dir=folder.parent / "cache",
                       images=ImageDownloadSpec(enabled=False), **kw)


def write(folder: Path, name: str, header: list[str], rows: list[list[str]] | list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(header)] + [r if isinstance(r, str) else "\t".join(r) for r in rows]
    path = folder / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_ml100k_excerpt_is_read_whole():
    raw = recbole.load(spec(ML100K), Progress())
    inter, items = raw.interactions, raw.items
    n_lines = len((ML100K / "ml-100k.inter").read_text().splitlines()) - 1
    assert inter.height == n_lines == 11_019 and not raw.skipped  # every line kept
    assert inter["user_key"].n_unique() == 100 and items.height == inter["source_id"].n_unique() == 1_238
    first = inter.row(0, named=True)
    line = (ML100K / "ml-100k.inter").read_text().splitlines()[1].split("\t")
    assert (first["user_key"], first["source_id"], first["rating"], first["timestamp"]) == (
        f"ml-100k:{line[0]}", line[1], float(line[2]), int(line[3]))
    toy = items.filter(pl.col("source_id") == "1").row(0, named=True)
    assert toy["title"] == "Toy Story" and toy["category"] == "Animation, Children's, Comedy"
    assert toy["domain"] == "ml-100k"
    assert raw.notes == {"recbole_files_not_read": ["ml-100k.user"]}
    assert [Path(s["file"]).name for s in raw.sources] == ["ml-100k.inter", "ml-100k.item"]


def test_ml100k_excerpt_prepares_a_contract_folder(tmp_path):
    from unimp_core.prepare import run_prepare

    path = run_prepare(spec(ML100K, out=tmp_path / "ds", protocol="leave-one-out"), Progress())
    ds = assert_dataset_contract(path, user_core=8, item_core=5)
    m = ds.manifest
    assert m["source"] == "recbole" and m["datasets"] == ["ml-100k"]
    assert m["counts"]["raw"] == {"interactions": 11_019, "items": 1_238}
    assert m["notes"] == {"recbole_files_not_read": ["ml-100k.user"]}
    assert ds.users.height == 100 and ds.items["title"].null_count() == 0


def test_other_field_names_via_columns_and_token_timestamps(tmp_path):
    folder = tmp_path / "yelp"
    write(folder, "yelp.inter", ["review_id:token", "uid:token", "business_id:token", "stars:float", "date:token"],
          [["r1", "u1", "b1", "4", "2019-05-01"], ["r2", "u1", "b2", "2.5", "2019-05-02 10:00:00"]])
    write(folder, "yelp.item", ["business_id:token", "item_name:token_seq", "categories:token_seq", "price:float"],
          [["b1", "Blue Cafe", "Cafes Breakfast", "12"], ["b2", "Red Bar", "", ""], ["b3", "Nobody's", "Bars", "3"]])
    cols = {"user": "uid", "item": "business_id:token", "rating": "stars", "timestamp": "date"}
    raw = recbole.load(spec(folder, recbole={"columns": cols}), Progress())
    inter = raw.interactions
    assert inter["user_key"].to_list() == ["yelp:u1", "yelp:u1"]
    assert inter["timestamp"].to_list() == [1_556_668_800, 1_556_791_200]
    assert inter["rating"].to_list() == [4.0, 2.5]
    items = raw.items.sort("source_id")
    assert items.select("source_id", "title", "category", "price").rows() == [
        ("b1", "Blue Cafe", "Cafes, Breakfast", 12.0), ("b2", "Red Bar", None, None)]
    assert raw.skipped == Counter({"yelp.item: item has no interactions": 1})


def test_every_line_is_kept_or_counted(tmp_path):
    folder = tmp_path / "shop"
    inter_rows = [
        ["u1", "i1", "5", "100"],
        ["u1", "i2", "x", "101"],  # rating not a number
        ["u2", "i1", "4", "soon"],  # timestamp not a number
        "u2\ti2\t4",  # three fields
        "",  # blank: no row
        ["u2", "i3", "9", "102"],  # outside 1..5
        ["u3", "i1", "", "103"],  # no rating: kept
        ["u3", "i2", "3", "104.7"],  # float seconds are floored
    ]
    write(folder, "shop.inter", ["user_id:token", "item_id:token", "rating:float", "timestamp:float"], inter_rows)
    write(folder, "shop.item", ["item_id:token", "title:token_seq", "price:float"],
          [["i1", "One", "1"], ["i1", "One again", "1"], ["", "no id", "2"], ["i2", "Two", "cheap"], ["i9", "Nine", "9"]])
    raw = recbole.load(spec(folder), Progress())
    assert raw.interactions.select("user_key", "source_id", "rating", "timestamp").rows() == [
        ("shop:u1", "i1", 5.0, 100), ("shop:u3", "i1", None, 103), ("shop:u3", "i2", 3.0, 104)]
    assert raw.skipped == Counter({
        "shop.inter: rating not a number": 1,
        "shop.inter: timestamp not a Unix time or ISO date": 1,
        "shop.inter: wrong number of fields": 1,
        "rating outside 1..5 (see --rating-scale)": 1,
        "shop.item: price not a number": 1,
        "shop.item: missing item id": 1,
        "shop.item: repeated item (first line kept)": 1,
        "shop.item: item has no interactions": 1,
    })
    assert raw.items.sort("source_id")["title"].to_list() == ["One", None]  # i2's only line was malformed
    with pytest.raises(UnimpError, match=r"^shop\.inter:5: 3 tab-separated fields, the header has 4$"):
        recbole.load(spec(folder, strict=True), Progress())
    del inter_rows[3]
    write(folder, "shop.inter", ["user_id:token", "item_id:token", "rating:float", "timestamp:float"], inter_rows)
    with pytest.raises(UnimpError, match=r"^shop\.inter:3: rating 'x' is not a number$"):
        recbole.load(spec(folder, strict=True), Progress())


@pytest.mark.parametrize("header, message", [
    (["user_id", "item_id:token"], r"shop\.inter:1: header field 'user_id' is not name:type"),
    (["user_id:token", "item_id:int"], r"header field 'item_id:int' is not name:type"),
    (["user_id:token", "user_id:token"], r"field 'user_id' appears twice"),
    (["user_id:token", "item_id:token"], r"shop\.inter: no timestamp field \(looked for timestamp\); fields are: "
                                         r"user_id:token, item_id:token; map one with --column timestamp=FIELD"),
])
def test_bad_headers_are_one_line_errors(tmp_path, header, message):
    write(tmp_path / "shop", "shop.inter", header, [])
    with pytest.raises(UnimpError, match=message) as err:
        recbole.load(spec(tmp_path / "shop"), Progress())
    assert "\n" not in str(err.value)


def test_missing_files_and_mapped_fields_are_named(tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(ML100K, folder)
    with pytest.raises(UnimpError, match=r"no copy\.inter .*this folder has ml-100k \(pass --datasets NAME\)"):
        recbole.load(spec(folder), Progress())
    with pytest.raises(UnimpError, match=r"ml-100k\.item: no field 'name' \(--column title=name\); fields are: "
                                         r"item_id:token, movie_title:token_seq"):
        recbole.load(spec(folder, datasets=["ml-100k"], recbole={"columns": {"title": "name"}}), Progress())
    with pytest.raises(ValueError, match="unknown column role"):
        spec(folder, recbole={"columns": {"image_path": "x"}})
    with pytest.raises(ValueError, match="one dataset"):
        spec(folder, datasets=["a", "b"])
