"""Amazon Reviews 2023: catalogue, line formats, download from 127.0.0.1, and the dataset folder."""

import gzip
import json
from collections import Counter

import polars as pl
import pytest

from tests.data.amazon_files import (image_2023, meta_2023, review_2023, review_image_2023, shop_2023,
                                     write_gz)
from tests.data.contract import assert_dataset_contract
from tests.httpserver import Reply
from unimp_core.data import catalog
from unimp_core.data.sources import amazon2023
from unimp_core.data.sources.amazon import load_category
from unimp_core.errors import UnimpError
from unimp_core.progress import Progress
from unimp_core.specs.data import ImageDownloadSpec, PrepareSpec

READERS = (amazon2023.read_reviews, amazon2023.read_meta)


def spec(tmp_path, datasets=("beauty",), **kw):
    return PrepareSpec(source="amazon2023", datasets=list(datasets), cache_dir=tmp_path / "cache",
                       images=ImageDownloadSpec(timeout=5, retries=2, backoff=0), **kw)


def category(tmp_path, reviews, meta, strict=False, require_image_meta=False):
    r = write_gz(tmp_path / "All_Beauty.jsonl.gz", reviews)
    m = write_gz(tmp_path / "meta_All_Beauty.jsonl.gz", meta)
    return load_category("amazon2023", "beauty", r, m, Progress(), strict=strict,
                         require_image_meta=require_image_meta, readers=READERS)


def test_2023_catalogue_maps_the_short_names():
    assert catalog.files("amazon2023", "beauty") == ("review_categories/All_Beauty.jsonl.gz",
                                                     "meta_categories/meta_All_Beauty.jsonl.gz")
    assert catalog.release("amazon2023").base_url.endswith("/amazon_2023/raw/")
    assert len(catalog.list_datasets("amazon2023")) == 34  # 33 categories and "Unknown"
    assert catalog.resolve("amazon2023", "baby") == "Baby_Products"
    # every 2014 short name that has a 2023 category keeps working; apps and video have none
    missing = {short for short, _ in catalog.list_datasets("amazon2014")
               if short not in catalog.release("amazon2023").categories}
    assert missing == {"apps", "video"}
    with pytest.raises(UnimpError, match=r"unknown amazon2023 dataset 'apps'; valid: .*beauty"):
        catalog.resolve("amazon2023", "apps")


def test_2023_reviews_and_meta_become_tables(tmp_path):
    raw = category(
        tmp_path,
        [review_2023("U1", "P1", 4.0, ts_ms=1_588_687_728_923, text="Works well", title="Good", asin="P1-red",
                     images=[review_image_2023("71abc")]),
         review_2023("U1", "P2", 2.0, ts_ms=1_588_687_800_001, text="", title="Meh"),
         review_2023("U2", "P1", 5.0, ts_ms=1_600_000_000_999, asin="P1-blue")],
        [meta_2023("P1", title="Hair Oil", store="Acme", price=12.5, features=["Argan", "100 ml"],
                   description=["Light oil.", "No parabens."], categories=["Beauty & Personal Care", "Hair Care"],
                   images=[image_2023("side", "PT01"), image_2023("front", "MAIN"), image_2023("back", "PT02")]),
         meta_2023("P2", title="Comb", main_category="All Beauty", price="$3.99",
                   images=[image_2023("comb", "PT01", hi_res=False)]),
         meta_2023("P9", title="not reviewed")],
    )
    inter = raw.interactions
    assert not raw.skipped
    assert inter["user_key"].to_list() == ["beauty:U1", "beauty:U1", "beauty:U2"]
    assert inter["source_id"].to_list() == ["P1", "P2", "P1"]  # the variant bought is not the item
    assert inter["timestamp"].to_list() == [1_588_687_728, 1_588_687_800, 1_600_000_000]  # ms -> s
    assert inter["rating"].to_list() == [4.0, 2.0, 5.0]
    assert inter["review"].to_list() == ["Works well", None, "great"]
    assert inter["summary"].to_list() == ["Good", "Meh", "nice"]
    items = {r["source_id"]: r for r in raw.items.iter_rows(named=True)}
    assert set(items) == {"P1", "P2"}
    p1, p2 = items["P1"], items["P2"]
    assert (p1["title"], p1["brand"], p1["price"]) == ("Hair Oil", "Acme", 12.5)
    assert p1["category"] == "Beauty & Personal Care > Hair Care"
    assert p1["description"] == "Argan 100 ml Light oil. No parabens."
    assert p1["image_url"] == "https://m.media-amazon.com/images/I/front.jpg"  # MAIN's large, wherever it is
    assert (p2["category"], p2["price"], p2["brand"], p2["description"]) == ("All Beauty", 3.99, None, None)
    assert p2["image_url"] == "https://m.media-amazon.com/images/I/comb.jpg"  # no MAIN: the first large


def test_2023_malformed_lines_are_counted_and_strict_names_file_and_line(tmp_path):
    reviews = [
        review_2023("U1", "P1"),
        "{not json",
        json.dumps({"rating": 5.0, "parent_asin": "P1", "timestamp": 1}),
        json.dumps({"rating": 5.0, "user_id": "U3", "parent_asin": ["P1"], "timestamp": 1}),
        json.dumps({"rating": "five", "user_id": "U2", "parent_asin": "P1", "timestamp": 1}),
        "[1, 2]",
        "",
        review_2023("U2", "P1"),
    ]
    meta = [meta_2023("P1", title="ok"), "{broken", json.dumps({"title": "no key"})]
    raw = category(tmp_path, reviews, meta)
    assert raw.interactions["user_key"].to_list() == ["beauty:U1", "beauty:U2"]
    assert raw.row_skips == Counter({  # review lines: interaction rows read and skipped
        "All_Beauty.jsonl.gz: bad json": 2,
        "All_Beauty.jsonl.gz: missing user_id or parent_asin": 2,
        "All_Beauty.jsonl.gz: non-numeric rating": 1,
    })
    assert raw.skipped == Counter({
        "meta_All_Beauty.jsonl.gz: bad json": 1,
        "meta_All_Beauty.jsonl.gz: missing parent_asin": 1,
    })
    with pytest.raises(UnimpError, match=r"^All_Beauty\.jsonl\.gz:2: bad json$"):
        category(tmp_path, reviews, meta, strict=True)


def test_2023_fast_and_line_by_line_paths_agree(tmp_path, monkeypatch):
    files = shop_2023()
    path = tmp_path / "All_Beauty.jsonl.gz"
    path.write_bytes(files["review_categories/All_Beauty.jsonl.gz"])
    assert amazon2023._reviews_fast(gzip.decompress(path.read_bytes())) is not None
    fast = amazon2023.read_reviews(path, "beauty", Progress(), Counter(), False)
    monkeypatch.setattr(amazon2023, "_reviews_fast", lambda block: None)
    slow = amazon2023.read_reviews(path, "beauty", Progress(), Counter(), False)
    assert fast.height == 30 and fast.equals(slow)


def test_2023_download_resumes_and_is_cached(server, tmp_path):
    files = shop_2023()
    reviews = files["review_categories/All_Beauty.jsonl.gz"]
    server.add("/a23/raw/review_categories/All_Beauty.jsonl.gz", Reply(reviews, truncate_to=len(reviews) // 2))
    server.add("/a23/raw/meta_categories/meta_All_Beauty.jsonl.gz", files["meta_categories/meta_All_Beauty.jsonl.gz"])
    raw = amazon2023.load(spec(tmp_path, mirror=server.url + "/a23/raw/"), Progress())
    assert raw.interactions.height == 30 and raw.items.height == 5
    resumed = [rng for path, rng in server.log if path.endswith("/All_Beauty.jsonl.gz") and rng]
    assert resumed == [f"bytes={len(reviews) // 2}-"]  # the second try asked for the rest only
    assert raw.sources[0] == {"file": "All_Beauty.jsonl.gz", "url": server.url + "/a23/raw/review_categories/All_Beauty.jsonl.gz",
                              "bytes": len(reviews), "sha256": raw.sources[0]["sha256"]}
    assert (tmp_path / "cache" / "raw" / "amazon2023" / "meta_All_Beauty.jsonl.gz").is_file()
    n = len(server.log)
    again = amazon2023.load(spec(tmp_path, mirror=server.url + "/a23/raw/"), Progress())
    assert len(server.log) == n and again.interactions.equals(raw.interactions)  # cached: no request


def test_2023_prepares_a_dataset_folder_from_a_mirror_folder(tmp_path):
    from unimp_core.prepare import run_prepare

    mirror = tmp_path / "mirror"
    for rel, body in shop_2023(users=9, items=6).items():
        (mirror / rel).parent.mkdir(parents=True, exist_ok=True)
        (mirror / rel).write_bytes(body)
    s = spec(tmp_path, mirror=str(mirror), out=tmp_path / "ds", user_core=5, item_core=5)
    path = run_prepare(s.model_copy(update={"images": s.images.model_copy(update={"enabled": False})}), Progress())
    ds = assert_dataset_contract(path, user_core=5, item_core=5)
    assert ds.manifest["source"] == "amazon2023" and ds.manifest["skipped"] == {}
    assert (ds.users.height, ds.items.height, ds.interactions.height) == (9, 6, 54)
    assert [s["file"] for s in ds.manifest["sources"]] == ["All_Beauty.jsonl.gz", "meta_All_Beauty.jsonl.gz"]
    item = ds.items.filter(pl.col("source_id") == "B000000003").row(0, named=True)
    assert item["brand"] == "Shop" and item["price"] == 12.99 and item["category"] == "All Beauty"
    assert item["description"] == "feature of B000000003 About B000000003."
    assert item["image_url"] == "https://m.media-amazon.com/images/I/B000000003.jpg"
    assert ds.interactions["timestamp"].min() >= 1_600_000_000  # seconds, not milliseconds
