from pathlib import Path

import pytest

from unimp_core.data.sources import hm
from unimp_core.errors import UnimpError
from unimp_core.progress import Progress
from unimp_core.specs.data import PrepareSpec

DAY = 86_400
EPOCH_2020_09_01 = 1_598_918_400

TRANSACTIONS = """t_dat,customer_id,article_id,price,sales_channel_id
2020-09-01,cust_a,0108775015,0.0100,2
2020-09-03,cust_a,0108775015,0.0300,2
2020-09-02,cust_a,0110065001,0.0200,1
2020-09-01,cust_b,110065001,0.0400,1
not-a-date,cust_b,0108775015,0.0500,1
2020-09-04,cust_b,0999999999,0.0600,2
2020-09-05,cust_b,../../../../etc/passwd,0.0700,2
"""

ARTICLES = """article_id,product_code,prod_name,product_type_name,product_group_name,graphical_appearance_name,\
perceived_colour_value_name,index_group_name,section_name,detail_desc
0108775015,108775,Strap top,Vest top,Garment Upper body,Solid,Dark,Ladieswear,Womens Everyday Basics,\
"Jersey top with narrow shoulder straps, in black."
0110065001,110065,OP T-shirt(Idro),Bra,Underwear,Unknown,Light,Ladieswear,Womens Lingerie,
0999999999,999999,Mystery,Unknown,Unknown,undefined,Unknown,Divided,,
"""


def _folder(tmp_path: Path) -> Path:
    root = tmp_path / "hm"
    (root / "images" / "010").mkdir(parents=True)
    (root / "images" / "010" / "0108775015.jpg").write_bytes(b"\xff\xd8jpeg")
    (root / "images" / "011").mkdir()  # 0110065001.jpg is missing, as ~400 images are in the real dump
    (root / "transactions_train.csv").write_text(TRANSACTIONS)
    (root / "articles.csv").write_text(ARTICLES)
    return root


def _load(root: Path, strict: bool = False):
    return hm.load(PrepareSpec(source="hm", input=root, strict=strict), Progress())


def test_transactions_collapse_and_dates(tmp_path):
    raw = _load(_folder(tmp_path))
    got = sorted(raw.interactions.select("user_key", "source_id", "timestamp").rows())
    assert got == [
        ("hm:cust_a", "0108775015", EPOCH_2020_09_01),  # the repeat on 09-03 collapses to the first purchase
        ("hm:cust_a", "0110065001", EPOCH_2020_09_01 + DAY),
        ("hm:cust_b", "../../../../etc/passwd", EPOCH_2020_09_01 + 4 * DAY),
        ("hm:cust_b", "0110065001", EPOCH_2020_09_01),  # leading zero restored
        ("hm:cust_b", "0999999999", EPOCH_2020_09_01 + 3 * DAY),
    ]
    assert raw.row_skips == {"hm transaction with missing or malformed t_dat, customer_id or article_id": 1,
                             "hm transaction repeating a purchase (the first is kept)": 1}
    assert raw.read == 7  # the transactions file's data lines
    assert [s["file"].rsplit("/", 1)[1] for s in raw.sources] == ["transactions_train.csv", "articles.csv"]


def test_items_text_price_and_images(tmp_path):
    root = _folder(tmp_path)
    items = {r["source_id"]: r for r in _load(root).items.to_dicts()}
    assert set(items) == {"0108775015", "0110065001", "0999999999", "../../../../etc/passwd"}
    top = items["0108775015"]
    assert top["title"] == "Strap top" and top["domain"] == "hm" and top["brand"] == "H&M"
    assert top["category"] == "Ladieswear > Womens Everyday Basics > Vest top"
    assert top["description"] == ("Solid, Dark, Womens Everyday Basics. "
                                  "Jersey top with narrow shoulder straps, in black.")
    assert top["price"] == pytest.approx(0.02)  # mean over every purchase, repeats included
    assert top["image_path"] == str((root / "images" / "010" / "0108775015.jpg").resolve())
    tee = items["0110065001"]
    assert tee["description"] == "Light, Womens Lingerie."  # 'Unknown' and the empty detail dropped
    assert tee["image_path"] is None  # image file missing
    assert items["0999999999"]["category"] == "Divided" and items["0999999999"]["description"] is None
    # An id that looks like a path never leads out of the images folder.
    assert items["../../../../etc/passwd"]["image_path"] is None and items["../../../../etc/passwd"]["title"] is None


def test_strict_names_the_bad_line(tmp_path):
    with pytest.raises(UnimpError, match=r"transactions_train\.csv: line 6: missing or malformed t_dat"):
        _load(_folder(tmp_path), strict=True)


def test_missing_files_and_columns(tmp_path):
    root = _folder(tmp_path)
    (root / "articles.csv").unlink()
    with pytest.raises(UnimpError, match=r"articles\.csv: not found"):
        _load(root)
    (root / "articles.csv").write_text("article_id,name\n0108775015,x\n")
    with pytest.raises(UnimpError, match=r"articles\.csv: column 'prod_name' not found; columns are: article_id, name"):
        _load(root)
    (root / "transactions_train.csv").write_text("t_dat,article_id\n2020-09-01,0108775015\n")
    with pytest.raises(UnimpError, match=r"column 'customer_id' not found"):
        _load(root)
    with pytest.raises(UnimpError, match="H&M folder not found"):
        _load(tmp_path / "nowhere")


def test_without_images_folder(tmp_path):
    root = _folder(tmp_path)
    for path in sorted((root / "images").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (root / "images").rmdir()
    raw = _load(root)
    assert raw.items["image_path"].null_count() == raw.items.height == 4
    assert "no images/ folder" in raw.notes["hm_images"]
