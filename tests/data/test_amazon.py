import gzip
import json
from collections import Counter

import polars as pl
import pytest

from tests.data.amazon_files import (big_reviews_2014, gz, meta_2014, meta_2018, review_2014, review_2018, shop_2014,
                                     write_gz)
from unimp_core.data import catalog
from unimp_core.data.sources import amazon
from unimp_core.data.sources.amazon import load, load_category, parse_price, read_reviews
from unimp_core.errors import UnimpError
from unimp_core.progress import Progress
from unimp_core.specs.data import ImageDownloadSpec, PrepareSpec


def spec(tmp_path, datasets, source="amazon2014", **kw):
    return PrepareSpec(source=source, datasets=datasets, cache_dir=tmp_path / "cache",
                       images=ImageDownloadSpec(timeout=5, retries=1, backoff=0), **kw)


def category(tmp_path, reviews, meta, release="amazon2014", domain="beauty", strict=False, require_image_meta=False):
    """Parse files written from these lines; keeps items without metadata unless asked (parsing tests)."""
    r = write_gz(tmp_path / "reviews_Beauty_5.json.gz", reviews)
    m = write_gz(tmp_path / "meta_Beauty.json.gz", meta)
    return load_category(release, domain, r, m, Progress(), strict=strict, require_image_meta=require_image_meta)


# --- catalogue -----------------------------------------------------------------------------------


def test_catalog_names_and_paths():
    assert len(catalog.list_datasets("amazon2014")) == 24
    assert len(catalog.list_datasets("amazon2018")) == 29
    assert catalog.resolve("amazon2014", "sports") == "Sports_and_Outdoors"
    assert catalog.files("amazon2014", "clothing") == ("reviews_Clothing_Shoes_and_Jewelry_5.json.gz",
                                                       "meta_Clothing_Shoes_and_Jewelry.json.gz")
    assert catalog.files("amazon2018", "beauty") == ("categoryFilesSmall/All_Beauty_5.json.gz",
                                                     "metaFiles2/meta_All_Beauty.json.gz")
    stems = [stem for _, stem in catalog.list_datasets("amazon2014")]
    assert len(set(stems)) == 24 and "Amazon_Instant_Video" in stems


def test_unknown_dataset_lists_valid_names(tmp_path):
    with pytest.raises(UnimpError) as err:
        catalog.resolve("amazon2014", "beuaty")
    msg = str(err.value)
    assert "'beuaty'" in msg and "beauty" in msg and "sports" in msg and "video" in msg and "\n" not in msg
    with pytest.raises(UnimpError, match="valid: .*fashion"):
        load(spec(tmp_path, ["nope"], source="amazon2018"), Progress())  # fails before any download


# --- 2014 ----------------------------------------------------------------------------------------


def test_2014_tables(tmp_path):
    shop = shop_2014(tmp_path / "raw", "Beauty", users=3, items=4)
    raw = load_category("amazon2014", "beauty", shop["reviews"], shop["meta"], Progress())
    inter = raw.interactions
    assert inter.height == 12 and not raw.skipped
    assert set(inter["user_key"]) == {f"beauty:{u}" for u in shop["users"]}
    first = inter.row(0, named=True)
    assert first["source_id"] == shop["asins"][0] and first["timestamp"] == 1_300_000_000
    assert first["review"] == f"text {shop['users'][0]} {shop['asins'][0]}" and first["explanation"] is None
    items = raw.items.sort("source_id")
    assert items["source_id"].to_list() == shop["asins"]  # the never-reviewed item is not kept
    row = items.row(1, named=True)
    assert row == {"source_id": shop["asins"][1], "domain": "beauty", "title": f"Item {shop['asins'][1]}",
                   "brand": None, "category": "Beauty > Sub", "price": 1.99, "description": None,
                   "image_url": f"http://img.example/{shop['asins'][1]}.jpg", "image_path": None, "attributes": None}


def test_2014_missing_optional_fields_and_meta(tmp_path):
    raw = category(
        tmp_path,
        [review_2014("U1", "A1", name=None), json.dumps({"reviewerID": "U1", "asin": "A2", "overall": "4.0",
                                                         "unixReviewTime": 5}),
         json.dumps({"reviewerID": "U2", "asin": "A1", "overall": 3, "reviewTime": "01 02, 2010"})],
        # A1 has nothing but its asin; A2's title holds both kinds of quote, which str() escapes
        [meta_2014("A1"), meta_2014("A3", title="other"),
         meta_2014("A2", title="Tom's \"best\" baume é", related={"also_viewed": ["A1"]}, brand="B",
                   description="d")],
    )
    assert "'title': 'Tom\\'s \"best\" baume é'" in meta_2014("A2", title="Tom's \"best\" baume é")
    inter = raw.interactions
    assert inter["rating"].to_list() == [5.0, 4.0, 3.0]  # a numeric string is still a rating
    assert inter["review"].to_list()[1:] == [None, None]
    assert inter["timestamp"].to_list()[2] == 1262390400  # from reviewTime when unixReviewTime is missing
    items = raw.items.sort("source_id")
    assert items["source_id"].to_list() == ["A1", "A2"]
    assert items["domain"].to_list() == ["beauty", "beauty"]
    assert items.row(0)[2:] == (None,) * 8
    assert items.row(1, named=True)["title"] == "Tom's \"best\" baume é"
    assert items.row(1, named=True)["brand"] == "B"


def test_meta_line_with_code_is_not_run(tmp_path):
    marker = tmp_path / "pwned"
    code = f"__import__('os').system('touch {marker}')"
    raw = category(
        tmp_path,
        [review_2014("U1", "A1"), review_2014("U1", "A2")],
        ["{'asin': " + code + "}", "{'asin': 'A1', 'title': " + code + "}", meta_2014("A2", title="fine"),
         "(lambda: " + code + ")()"],
    )
    assert not marker.exists()
    assert raw.skipped == Counter({"meta_Beauty.json.gz: bad literal": 3})
    assert raw.items.sort("source_id")["title"].to_list() == [None, "fine"]


def test_malformed_lines_are_counted_and_strict_names_file_and_line(tmp_path):
    reviews = [
        review_2014("U1", "A1"),
        "{not json",
        json.dumps({"asin": "A1", "overall": 5.0, "unixReviewTime": 1}),
        json.dumps({"reviewerID": "U2", "asin": "A1", "overall": "five", "unixReviewTime": 1}),
        "[1, 2]",
        "",
        review_2014("U2", "A1"),
        review_2014("U2", "A1"),  # a verbatim repeat, as in the 2018 dumps
    ]
    raw = category(tmp_path, reviews, [meta_2014("A1"), "{'asin': 'A1', 'title': 'x'", "{'title': 'no asin'}"])
    assert raw.interactions.height == 2
    assert raw.row_skips == Counter({  # 7 review lines read (the empty one is no line) = 2 kept + 5 skipped
        "reviews_Beauty_5.json.gz: bad json": 2,
        "reviews_Beauty_5.json.gz: missing reviewerID or asin": 1,
        "reviews_Beauty_5.json.gz: non-numeric rating": 1,
        "reviews_Beauty_5.json.gz: duplicate review": 1,
    })
    assert raw.read == 7
    assert raw.skipped == Counter({
        "meta_Beauty.json.gz: bad literal": 1,
        "meta_Beauty.json.gz: missing asin": 1,
    })
    with pytest.raises(UnimpError, match=r"^reviews_Beauty_5\.json\.gz:2: bad json$"):
        category(tmp_path, reviews, [meta_2014("A1")], strict=True)
    with pytest.raises(UnimpError, match=r"^meta_Beauty\.json\.gz:2: bad literal$"):
        category(tmp_path, reviews[:1], [meta_2014("A1"), "{'asin': 'A1', 'title': 'x'"], strict=True)


def test_line_numbers_and_chunks_across_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(amazon, "BLOCK_BYTES", 300)  # a few lines per block
    monkeypatch.setattr(amazon, "CHUNK_ROWS", 7)
    lines = [review_2014(f"U{i}", f"A{i % 3}", ts=i) for i in range(60)]
    lines[41] = '{"reviewerID": "U41", "asin": "A1", "overall": "bad"}'
    raw = category(tmp_path, lines, [meta_2014("A0")])
    assert raw.interactions.height == 59
    assert raw.interactions["timestamp"].to_list() == [i for i in range(60) if i != 41]  # file order kept
    with pytest.raises(UnimpError, match=r":42: non-numeric rating"):
        category(tmp_path, lines, [meta_2014("A0")], strict=True)


def test_fast_and_line_by_line_paths_agree(tmp_path, monkeypatch):
    shop = shop_2014(tmp_path, "Beauty", users=5, items=7)
    assert amazon._reviews_fast(gzip.decompress(shop["reviews"].read_bytes())) is not None
    fast = read_reviews(shop["reviews"], "b", Progress(), Counter(), False)
    monkeypatch.setattr(amazon, "_reviews_fast", lambda block: None)
    slow = read_reviews(shop["reviews"], "b", Progress(), Counter(), False)
    assert fast.height == 35 and fast.equals(slow)


def test_truncated_or_corrupt_gzip_is_one_line_error(tmp_path):
    shop = shop_2014(tmp_path, "Beauty")
    data = shop["reviews"].read_bytes()
    shop["reviews"].write_bytes(data[: len(data) // 2])
    with pytest.raises(UnimpError) as err:
        load_category("amazon2014", "beauty", shop["reviews"], shop["meta"], Progress())
    msg = str(err.value)
    assert "corrupt or truncated gzip" in msg and "\n" not in msg
    assert msg.startswith(str(shop["reviews"]))
    corrupt = bytearray(data)
    corrupt[len(data) // 2: len(data) // 2 + 8] = b"\xff" * 8
    shop["reviews"].write_bytes(bytes(corrupt))
    with pytest.raises(UnimpError, match="corrupt or truncated gzip"):
        load_category("amazon2014", "beauty", shop["reviews"], shop["meta"], Progress())
    shop["reviews"].write_bytes(b'{"reviewerID": "plain text, not gzip"}\n')
    with pytest.raises(UnimpError, match="corrupt or truncated gzip"):
        load_category("amazon2014", "beauty", shop["reviews"], shop["meta"], Progress())


@pytest.mark.parametrize("release, meta", [
    ("amazon2014", lambda asin, url: meta_2014(asin, title=asin, **({"imUrl": url} if url else {}))),
    ("amazon2018", lambda asin, url: meta_2018(asin, title=asin, imageURL=[url] if url else [])),
])
def test_paper_rule_drops_reviews_of_items_without_image_metadata(tmp_path, release, meta):
    review = review_2014 if release == "amazon2014" else review_2018
    reviews = [review(u, a, ts=t) for t, (u, a) in enumerate(
        [("U1", "A1"), ("U1", "A2"), ("U1", "A3"), ("U2", "A1"), ("U2", "A3"), ("U2", "A3x")])]
    metas = [meta("A1", "http://i/1.jpg"), meta("A2", None), meta("A9", "http://i/9.jpg")]  # A3, A3x: no line
    raw = category(tmp_path, reviews, metas, release=release, require_image_meta=True)
    assert raw.interactions["source_id"].to_list() == ["A1", "A1"]
    assert raw.items["source_id"].to_list() == ["A1"]
    assert raw.row_skips == Counter({"reviews_Beauty_5.json.gz: item has no metadata line": 3,
                                     "reviews_Beauty_5.json.gz: item's metadata has no image URL": 1})
    assert raw.read == 6 and not raw.skipped
    kept = category(tmp_path, reviews, metas, release=release, require_image_meta=False)
    assert kept.interactions.height == 6 and sorted(kept.items["source_id"]) == ["A1", "A2", "A3", "A3x"]
    assert not kept.skipped and not kept.row_skips and kept.read == 6


# --- 2018 ----------------------------------------------------------------------------------------


def test_2018_tables(tmp_path):
    junk_price = ".a-box-inner{background-color:#fff}.a-box-inner{background-color:#fff}"
    raw = category(
        tmp_path,
        [review_2018("U1", "A1"), review_2018("U1", "A2"), review_2018("U2", "A3"), review_2018("U2", "A4")],
        [
            meta_2018("A1", title="Lip Balm", brand="Acme", category=["All Beauty", "Lips"], price="$12.99",
                      description=["Soft.", "Smells nice."], imageURL=["http://i/s.jpg"],
                      imageURLHighRes=["http://i/l.jpg"]),
            meta_2018("A2", title='<span class="a-size-medium">Junk</span>', price=junk_price,
                      imageURL=["http://i/only-small.jpg"]),
            meta_2018("A3", price="$1,299.00 - $1,499.00"),
            meta_2018("A1", title="a later duplicate line"),
        ],
        release="amazon2018",
    )
    assert raw.interactions["user_key"].to_list() == ["beauty:U1", "beauty:U1", "beauty:U2", "beauty:U2"]
    items = {r["source_id"]: r for r in raw.items.iter_rows(named=True)}
    assert items["A1"] == {"source_id": "A1", "domain": "beauty", "title": "Lip Balm", "brand": "Acme",
                           "category": "All Beauty > Lips", "price": 12.99, "description": "Soft. Smells nice.",
                           "image_url": "http://i/l.jpg", "image_path": None, "attributes": None}
    assert items["A2"]["title"] == '<span class="a-size-medium">Junk</span>'  # kept as text
    assert items["A2"]["price"] is None and items["A2"]["image_url"] == "http://i/only-small.jpg"
    assert items["A3"]["price"] == 1299.0 and items["A3"]["title"] is None and items["A3"]["category"] is None
    assert items["A4"]["title"] is None  # reviewed, no meta line
    assert not raw.skipped


@pytest.mark.parametrize("text, value", [("$12.99", 12.99), ("$ 5", 5.0), ("", None), ("N/A", None),
                                         (3.5, 3.5), (None, None), (True, None)])
def test_parse_price(text, value):
    assert parse_price(text) == value


# --- load: fetch + parse -------------------------------------------------------------------------


def serve_2014(server, prefix="/amz"):
    beauty = shop_2014_bytes("Beauty", "B")
    sports = shop_2014_bytes("Sports_and_Outdoors", "S")
    for files in (beauty, sports):
        for name, body in files.items():
            server.add(f"{prefix}/{name}", body)
    return beauty, sports


def shop_2014_bytes(stem, prefix):
    shared = review_2014("USHARED", "SHARED0001", ts=1)  # the same reviewer and item in both categories
    reviews = [review_2014(f"U{u}", f"{prefix}{i}", ts=10 * u + i) for u in range(3) for i in range(3)] + [shared]
    meta = [meta_2014(f"{prefix}{i}", title=f"{stem} {i}", categories=[[stem]], imUrl=f"http://i/{prefix}{i}.jpg")
            for i in range(3)]
    meta.append(meta_2014("SHARED0001", title=f"shared from {stem}", imUrl="http://i/shared.jpg"))
    return {f"reviews_{stem}_5.json.gz": gz(reviews), f"meta_{stem}.json.gz": gz(meta)}


def test_load_two_categories_from_mirror_url(server, tmp_path):
    beauty, _ = serve_2014(server)
    raw = load(spec(tmp_path, ["beauty", "sports"], mirror=server.url + "/amz"), Progress())
    keys = set(raw.interactions["user_key"])
    assert {"beauty:USHARED", "sports:USHARED", "beauty:U0", "sports:U0"} <= keys and len(keys) == 8
    assert raw.interactions.height == 20
    items = raw.items
    assert items.height == 7 and items["source_id"].n_unique() == 7  # one shared catalogue
    shared = items.filter(pl.col("source_id") == "SHARED0001").row(0, named=True)
    assert shared["domain"] == "beauty" and shared["title"] == "shared from Beauty"
    assert items.filter(pl.col("source_id") == "S1")["category"].item() == "Sports_and_Outdoors"
    assert [s["file"] for s in raw.sources] == ["reviews_Beauty_5.json.gz", "meta_Beauty.json.gz",
                                                 "reviews_Sports_and_Outdoors_5.json.gz",
                                                 "meta_Sports_and_Outdoors.json.gz"]
    assert raw.sources[0]["bytes"] == len(beauty["reviews_Beauty_5.json.gz"])
    assert raw.sources[0]["url"] == server.url + "/amz/reviews_Beauty_5.json.gz"
    assert (tmp_path / "cache" / "raw" / "amazon2014" / "meta_Beauty.json.gz").is_file()
    n = len(server.log)
    load(spec(tmp_path, ["beauty"], mirror=server.url + "/amz"), Progress())
    assert len(server.log) == n  # cached files: no request


def test_load_2018_mirror_keeps_official_layout(server, tmp_path):
    server.add("/v2/categoryFilesSmall/All_Beauty_5.json.gz", gz([review_2018("U1", "A1")]))
    server.add("/v2/metaFiles2/meta_All_Beauty.json.gz", gz([meta_2018("A1", title="t", imageURL=["http://i/1.jpg"])]))
    raw = load(spec(tmp_path, ["beauty"], source="amazon2018", mirror=server.url + "/v2/"), Progress())
    assert raw.items["title"].to_list() == ["t"] and raw.interactions["user_key"].to_list() == ["beauty:U1"]


def mirror_folder(root, extra_reviews):
    """A local mirror with the Beauty shop of shop_2014_bytes, its reviews being U0..U2's plus `extra_reviews`."""
    folder = root / "dumps"
    folder.mkdir()
    for name, body in shop_2014_bytes("Beauty", "B").items():
        (folder / name).write_bytes(body)
    (folder / "reviews_Beauty_5.json.gz").write_bytes(
        gz([review_2014(f"U{u}", f"B{i}", ts=10 * u + i) for u in range(3) for i in range(3)] + extra_reviews))
    return folder


def test_load_from_mirror_folder(tmp_path):
    folder = mirror_folder(tmp_path, [review_2014("USHARED", "SHARED0001", ts=1),
                                      review_2014("U0", "NOMETA0001", ts=99)])
    raw = load(spec(tmp_path, ["beauty"], mirror=str(folder)), Progress())
    assert raw.interactions.height == 10 and raw.items.height == 4  # the paper's rule: no meta line, no review
    assert raw.row_skips == Counter({"reviews_Beauty_5.json.gz: item has no metadata line": 1})
    assert raw.read == 11
    kept = load(spec(tmp_path, ["beauty"], mirror=str(folder), keep_items_without_meta=True), Progress())
    assert kept.interactions.height == 11 and kept.items.height == 5
    assert raw.sources[0]["url"] == str((folder / "reviews_Beauty_5.json.gz").resolve())
    assert not (tmp_path / "cache" / "raw" / "amazon2014" / "reviews_Beauty_5.json.gz").exists()


def test_load_missing_file_on_mirror_is_one_line(server, tmp_path):
    with pytest.raises(UnimpError, match=r"reviews_Beauty_5\.json\.gz: HTTP 404.*--mirror"):
        load(spec(tmp_path, ["beauty"], mirror=server.url + "/empty"), Progress())


def test_prepare_applies_paper_rule_before_kcore_and_counts_it(tmp_path):
    from unimp_core.prepare import run_prepare
    from unimp_core.data.store import read_manifest

    # U9 has three reviews, one of an item with no metadata line: two are left, below the 3-core.
    folder = mirror_folder(tmp_path, [review_2014("U9", "B0", ts=1), review_2014("U9", "B1", ts=2),
                                      review_2014("U9", "NOMETA0001", ts=3)])
    s = spec(tmp_path, ["beauty"], mirror=str(folder), out=tmp_path / "ds", user_core=3, item_core=1)
    path = run_prepare(s.model_copy(update={"images": s.images.model_copy(update={"enabled": False})}), Progress())
    m = read_manifest(path)
    assert m["counts"]["users"] == 3 and m["counts"]["items"] == 3 and m["counts"]["interactions"] == 9
    assert m["skipped"] == {"reviews_Beauty_5.json.gz: item has no metadata line": 1}
