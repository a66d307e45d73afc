import polars as pl
import pytest
from PIL import Image

from tests.data.images_util import gif_1x1, jpeg, png_bomb, truncated_jpeg
from unimp_core.filter_images import run_filter_images
from unimp_core.data.images import verify_image as check_image
from unimp_core.prepare import run_prepare
from unimp_core.data.store import load_dataset
from unimp_core.specs.data import FilterImagesSpec, PrepareSpec


def test_check_image_reasons(tmp_path):
    cases = {"ok.jpg": (jpeg(), None), "gif.jpg": (gif_1x1(), "too small"), "cut.jpg": (truncated_jpeg(), "undecodable"),
             "bomb.jpg": (png_bomb(), "decompression bomb"), "blank.jpg": (jpeg((255, 255, 255), pattern=False), "blank")}
    for name, (data, want) in cases.items():
        (tmp_path / name).write_bytes(data)
        assert check_image(tmp_path / name, 16) == want, name
    assert check_image(tmp_path / "absent.jpg", 16) == "missing"
    assert check_image(None, 16) == "missing"
    assert Image.MAX_IMAGE_PIXELS is not None  # the guard is still on


def test_a_bomb_is_counted_without_pillows_raw_warning(tmp_path, recwarn):
    # issue 22, fault 8: filter-images printed Pillow's DecompressionBombWarning next to its own count
    from unimp_core.data.images import verify_images
    from unimp_core.progress import Progress

    (tmp_path / "bomb.png").write_bytes(png_bomb(10_000))  # 100 MPx: in Pillow's warning band
    assert verify_images([tmp_path / "bomb.png"], 16, Progress()) == ["decompression bomb"]
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]
    assert Image.MAX_IMAGE_PIXELS is not None  # the guard is still on


@pytest.fixture
def damaged(tmp_path):
    out = run_prepare(PrepareSpec(datasets=["sample"], out=tmp_path / "s", cache_dir=tmp_path / "c",
                                  sample_users=150, sample_items=60, user_core=5, item_core=3))
    ds = load_dataset(out)
    bad = {0: gif_1x1(), 1: truncated_jpeg(), 2: png_bomb()}
    for item_id, data in bad.items():
        path = out / ds.items["image"][item_id]
        path.unlink()  # images are hard links into the cache: never write through them
        path.write_bytes(data)
    (out / ds.items["image"][3]).unlink()
    return out, ds, {ds.items["source_id"][i] for i in range(4)}


def test_filter_drops_reindexes_and_stays_consistent(damaged):
    out, before, bad_sources = damaged
    originals = {sid: (out / rel).read_bytes() for sid, rel in before.items.select("source_id", "image").iter_rows()
                 if sid not in bad_sources}
    report = run_filter_images(FilterImagesSpec(data=out))
    assert report["invalid_images"] == {"decompression bomb": 1, "missing": 1, "too small": 1, "undecodable": 1}
    after = load_dataset(out)
    assert not set(after.items["source_id"]) & bad_sources
    assert after.items["item_id"].to_list() == list(range(after.items.height))
    assert report["after"]["items"] == after.items.height < report["before"]["items"]
    assert after.interactions.group_by("user_id").len()["len"].min() >= 5
    assert after.interactions.group_by("item_id").len()["len"].min() >= 3
    # every image is valid and belongs to its item
    assert after.items["image"].null_count() == 0
    for rel in after.items["image"]:
        assert check_image(out / rel, 16) is None
    for sid, rel in after.items.select("source_id", "image").head(10).iter_rows():
        assert (out / rel).read_bytes() == originals[sid]
    # users keep their split; order within users is kept
    splits = dict(zip(before.users["user_key"], before.users["split"]))
    assert all(splits[k] == s for k, s in after.users.select("user_key", "split").iter_rows())
    assert after.manifest["filter_images"] == report
    assert after.instances["rec"]["target"].max() < after.items.height


def test_filter_keep_keeps_items_without_image(damaged):
    out, before, bad_sources = damaged
    run_filter_images(FilterImagesSpec(data=out, missing="keep"))
    after = load_dataset(out)
    assert after.items.height == before.items.height
    kept = after.items.filter(pl.col("source_id").is_in(list(bad_sources)))
    assert kept["image"].null_count() == 4
