"""Item attributes: parsing, the two forms `--items` reads them in, the dataset folder's column and
`item_attributes`."""

from __future__ import annotations

import gzip
import json
import polars as pl
import pytest

from unimp_core.data import attributes as A
from unimp_core.prepare import run_prepare
from unimp_core.data.sources import files
from unimp_core.data.store import load_dataset
from unimp_core.errors import UnimpError
from unimp_core.progress import Progress
from unimp_core.specs.data import FilesSpec, PrepareSpec


def _interactions(path, items=("i1", "i2", "i3")):
    rows = ["user,item,timestamp"] + [f"u1,{item},{t}" for t, item in enumerate(items)]
    path.write_text("\n".join(rows) + "\n")
    return path


def _load(tmp_path, items_file, strict=False, **columns):
    spec = PrepareSpec(source="files", strict=strict,
                       files=FilesSpec(interactions=_interactions(tmp_path / "log.csv"), items=items_file,
                                       columns=columns))
    return files.load(spec, Progress())


def _attributes(raw) -> dict:
    return dict(raw.items.select("source_id", "attributes").iter_rows())


# ------------------------------------------------------------------------------------------ parsing


def test_tokens_ids_and_words():
    assert A.parse([17, 4.0, "17", " Hair  Care ", "<image>", "", None, "ÉTÉ"]) == ["17", "4", "hair_care", "image",
                                                                                 "été"]
    assert A.parse("a17 a4 a21") == ["a17", "a4", "a21"]
    assert A.parse("Hair Care|Skin Care| ") == ["hair_care", "skin_care"]  # '|' wins over spaces when present
    assert A.parse('[1, "Red", 1]') == ["1", "red"]  # a JSON array in text; repeats dropped, order kept
    assert A.parse([]) is None and A.parse("  ") is None and A.parse(None) is None


@pytest.mark.parametrize("value, says", [(5, "not a list"), ({"a": 1}, "not a list"), ([1.5], "whole-number"),
                                         ([True], "not an id"), ([[1]], "not an id"), ("[1, 2", "not a JSON array"),
                                         ('{"a": 1}', "not a list")])
def test_bad_values_say_what_is_wrong(value, says):
    with pytest.raises(ValueError, match=says):
        A.parse(value)


# --------------------------------------------------------------------------------- the JSON object


def test_json_object_of_lists_every_key_kept_or_counted(tmp_path):
    path = tmp_path / "item2attributes.json"
    # the shape of the S3-Rec files: one line, item id -> attribute ids; "i9" was never interacted with
    path.write_text('{"i1": [1, 2, 3], "i2": [], "i9": [4], "i3": [2, "x"], "i1": [7]}')
    raw = _load(tmp_path, path)
    assert _attributes(raw) == {"i1": ["1", "2", "3"], "i2": None, "i3": ["2", "x"]}
    assert raw.skipped == {"item2attributes.json: key matches no interacted item": 1,
                           "item2attributes.json: repeated key (the first kept)": 1}


def test_json_object_bad_value_is_counted_or_names_its_key(tmp_path):
    path = tmp_path / "attrs.json.gz"
    path.write_bytes(gzip.compress(b'{"i1": [1], "i2": 5, "i3": [[2]]}'))
    raw = _load(tmp_path, path)
    assert _attributes(raw) == {"i1": ["1"], "i2": None, "i3": None}
    assert raw.skipped == {"attrs.json.gz: attributes not a list of ids or words (attributes left empty)": 2}
    with pytest.raises(UnimpError, match=r"attrs\.json\.gz: key 'i2': attributes: 5 is not a list"):
        _load(tmp_path, path, strict=True)


def test_a_one_object_file_with_the_item_column_is_a_table(tmp_path):
    path = tmp_path / "items.json"
    path.write_text('{"item": "i1", "title": "Mug", "tags": ["kitchen"]}')
    raw = _load(tmp_path, path, attributes="tags")
    assert raw.items.filter(pl.col("source_id") == "i1").select("title", "attributes").row(0) == ("Mug", ["kitchen"])


# ---------------------------------------------------------------------------------------- tables


@pytest.mark.parametrize("name", ["items.jsonl", "items.parquet"])
def test_list_column_of_a_table(tmp_path, name):
    df = pl.DataFrame({"item": ["i1", "i2", "i3"], "tags": [["Hair Care", "b"], None, ["c"]]})
    path = tmp_path / name
    df.write_parquet(path) if name.endswith(".parquet") else path.write_text(df.write_ndjson())
    raw = _load(tmp_path, path, attributes="tags")
    assert _attributes(raw) == {"i1": ["hair_care", "b"], "i2": None, "i3": ["c"]}


def test_csv_column_every_row_kept_or_counted(tmp_path):
    path = tmp_path / "items.csv"
    path.write_text('item,title,attributes\ni1,Mug,Hair Care|Skin Care\ni2,Cup,a17 a4 a21\ni2,again,x\n'
                    ',no id,y\ni9,never bought,z\ni3,Pot,"[1, 2"\n')
    raw = _load(tmp_path, path)
    assert _attributes(raw) == {"i1": ["hair_care", "skin_care"], "i2": ["a17", "a4", "a21"], "i3": None}
    assert raw.skipped == {"items.csv: repeated item (the first row kept)": 1,
                           "items.csv: no item id (row ignored)": 1,
                           "items.csv: item never in the interactions (row ignored)": 1,
                           "items.csv: attributes not a list of ids or words (attributes left empty)": 1}
    # 6 rows read = 3 kept + 3 ignored (a bad value leaves its row kept, without attributes)
    assert 3 + sum(n for reason, n in raw.skipped.items() if "attributes left empty" not in reason) == 6
    with pytest.raises(UnimpError, match=r"items\.csv: row 6 \(item i3\): attributes: '\[1, 2' is not a JSON array"):
        _load(tmp_path, path, strict=True)


def test_a_column_that_holds_no_lists_is_refused(tmp_path):
    path = tmp_path / "items.parquet"
    pl.DataFrame({"item": ["i1"], "attributes": [3]}).write_parquet(path)
    with pytest.raises(UnimpError, match=r"items\.parquet: column 'attributes' \(role attributes\) holds Int64"):
        _load(tmp_path, path)


# --------------------------------------------------------------------------- the dataset folder


def _prepare(tmp_path, items_file) -> "pl.DataFrame":
    rows = ["user,item,timestamp"] + [f"u{u},i{(u + k) % 6},{k}" for u in range(8) for k in range(4)]
    (tmp_path / "log.csv").write_text("\n".join(rows) + "\n")
    spec = PrepareSpec(source="files", out=tmp_path / "ds", cache_dir=tmp_path / "cache", user_core=1, item_core=1,
                       images={"enabled": False},
                       files=FilesSpec(interactions=tmp_path / "log.csv", items=items_file))
    return load_dataset(run_prepare(spec))


def test_folder_column_manifest_and_item_attributes(tmp_path):
    path = tmp_path / "attrs.json"
    path.write_text(json.dumps({"i0": [3, 1], "i1": [1], "i2": ["Red"], "i3": []}))
    ds = _prepare(tmp_path, path)
    assert ds.items.schema["attributes"] == pl.List(pl.Utf8)
    assert ds.manifest["counts"]["attributes"] == {"items_with_attributes": 3, "distinct_attributes": 3,
                                                   "mean_per_item": pytest.approx(4 / 3, abs=1e-3)}
    vocab, per_item = A.item_attributes(ds)
    assert vocab == ["1", "3", "red"]
    by_source = dict(zip(ds.items.sort("item_id")["source_id"].to_list(), per_item))
    assert by_source == {"i0": [1, 0], "i1": [0], "i2": [2], "i3": [], "i4": [], "i5": []}
    assert len(per_item) == ds.items.height


def test_a_folder_without_attributes(tmp_path):
    ds = _prepare(tmp_path, None)
    assert ds.manifest["counts"]["attributes"] == {"items_with_attributes": 0, "distinct_attributes": 0,
                                                   "mean_per_item": 0.0}
    assert A.item_attributes(ds) == ([], [[]] * 6)
    # a folder without the column is one error naming it
    items = pl.read_parquet(tmp_path / "ds" / "items.parquet").drop("attributes")
    items.write_parquet(tmp_path / "ds" / "items.parquet")
    with pytest.raises(UnimpError, match="items.parquet: column.s. attributes missing; rerun `unimp prepare`"):
        load_dataset(tmp_path / "ds")


def test_attribute_counts_hand_computed():
    items = pl.DataFrame({"attributes": [["a", "b"], None, ["b"], []]}, schema={"attributes": pl.List(pl.Utf8)})
    assert A.attribute_counts(items) == {"items_with_attributes": 2, "distinct_attributes": 2, "mean_per_item": 1.5}


def test_brand_and_category_parts_are_attributes_too():
    assert A.described_attributes("Nivea", "Beauty > Skin Care") == ["brand:nivea", "category:beauty",
                                                                    "category:skin_care"]
    assert A.described_attributes(None, "Drama, Mystery") == ["category:drama", "category:mystery"]
    assert A.described_attributes(" ", "Hair Care|Skin Care") == ["category:hair_care", "category:skin_care"]
    assert A.described_attributes(None, None) == []


def test_item_attributes_read_the_items_brand_and_category(tmp_path):
    path = tmp_path / "items.csv"
    path.write_text("item,brand,category,attributes\ni0,Acme,Tools > Saws,a1\ni1,Acme,,\ni2,,Saws|Tools,a1 a1\n")
    ds = _prepare(tmp_path, path)
    vocab, per_item = A.item_attributes(ds)
    assert vocab == ["a1", "brand:acme", "category:saws", "category:tools"]
    by_source = dict(zip(ds.items.sort("item_id")["source_id"].to_list(), per_item))
    assert by_source == {"i0": [0, 1, 3, 2], "i1": [1], "i2": [0, 2, 3], "i3": [], "i4": [], "i5": []}
