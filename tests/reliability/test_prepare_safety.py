"""Hostile and careless inputs to `prepare`, `filter-images` and `tokenize-images`: refused with one line
before any work, with every file that was there before byte-identical afterwards (issue 8, items 1-3, 6)."""

from __future__ import annotations

import json
import os

import polars as pl
import pytest

from tests.data.amazon_files import shop_2014
from tests.data.images_util import jpeg, png_bomb, truncated_jpeg
from unimp_core import prepare as prepare_mod
from unimp_core.prepare import run_prepare
from unimp_core.data.store import read_manifest
from unimp_core.errors import UnimpError
from unimp_core.io import folder_lock
from unimp_core.specs.data import PrepareSpec

from .helpers import one_line_error, snapshot

SAMPLE = ("--datasets", "sample", "--sample-users", 40, "--sample-items", 20)


@pytest.fixture
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def _sample(cli, out, cache, *more):
    return cli("prepare", *SAMPLE, "--out", out, "--cache-dir", cache, *more)


# ---------------------------------------------------------------- 1. never delete a folder unimp did not write

def test_prepare_refuses_a_non_empty_folder_it_did_not_write(cli, tmp_path, cache):
    mine = tmp_path / "mystuff"
    (mine / "sub").mkdir(parents=True)
    (mine / "notes.txt").write_text("x\n")
    before = snapshot(tmp_path)
    for extra in ((), ("--overwrite",)):
        one_line_error(_sample(cli, mine, tmp_path / "cache", *extra), str(mine), "not a unimp dataset folder")
        assert snapshot(tmp_path) == before  # not even the cache folder was made


def test_prepare_refuses_out_equal_to_or_inside_its_inputs(cli, tmp_path, cache):
    dump = tmp_path / "netflix"
    (dump / "training_set").mkdir(parents=True)
    (dump / "movie_titles.csv").write_text("1,2000,Film\n")
    before = snapshot(tmp_path)
    for out in (dump, dump / "prepared"):
        res = cli("prepare", "--source", "netflix", "--input", dump, "--out", out, "--cache-dir", cache)
        one_line_error(res, "inside --input")
        assert snapshot(tmp_path) == before
    table = tmp_path / "t.csv"
    table.write_text("user,item,timestamp\nu,a,1\n")
    before = snapshot(tmp_path)
    res = cli("prepare", "--source", "files", "--interactions", table, "--images-dir", dump, "--out", dump / "x",
              "--cache-dir", cache)
    one_line_error(res, "inside --images-dir")
    one_line_error(_sample(cli, cache / "ds", cache), "inside --cache-dir")
    res = cli("prepare", "--datasets", "beauty", "--mirror", dump, "--out", dump / "b", "--cache-dir", cache)
    one_line_error(res, "inside --mirror")
    assert snapshot(tmp_path) == before


def test_prepare_refuses_a_dataset_folder_holding_foreign_files_even_with_overwrite(cli, tmp_path, cache):
    out = tmp_path / "ds"
    assert _sample(cli, out, cache).exit_code == 0
    one_line_error(_sample(cli, out, cache), "--overwrite")
    (out / "my-notes.md").write_text("keep me")
    before = snapshot(tmp_path)
    one_line_error(_sample(cli, out, cache, "--overwrite"), "my-notes.md", "unimp did not write")
    assert snapshot(tmp_path) == before
    (out / "my-notes.md").unlink()
    res = _sample(cli, out, cache, "--overwrite", "--seed", 7)
    assert res.exit_code == 0, res.output
    assert read_manifest(out)["parameters"]["seed"] == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no staging or old folder left beside it


def test_prepare_into_an_empty_folder_works(cli, tmp_path, cache):
    out = tmp_path / "empty"
    out.mkdir()
    assert _sample(cli, out, cache).exit_code == 0
    assert (out / "manifest.json").is_file()


# ---------------------------------------------------------------- 2. a file, a symlink, `.`

def test_prepare_refuses_a_file_a_symlink_and_the_current_folder(cli, tmp_path, cache, monkeypatch):
    target = tmp_path / "real"
    target.mkdir()
    (tmp_path / "afile").write_text("data")
    (tmp_path / "link").symlink_to(target)
    before = snapshot(tmp_path)
    one_line_error(_sample(cli, tmp_path / "afile", cache), "is a file")
    one_line_error(_sample(cli, tmp_path / "link", cache, "--overwrite"), "symbolic link")
    monkeypatch.chdir(target)
    one_line_error(_sample(cli, ".", cache), "current folder")
    one_line_error(_sample(cli, "..", cache), "current folder")
    assert snapshot(tmp_path) == before


def test_unwritable_out_fails_before_any_work(cli, tmp_path, cache, monkeypatch):
    (tmp_path / "afile").write_text("data")
    called = []
    monkeypatch.setattr(prepare_mod, "load_source", lambda *a: called.append(1))
    before = snapshot(tmp_path)
    one_line_error(_sample(cli, tmp_path / "afile" / "ds", cache), "cannot write")
    one_line_error(_sample(cli, tmp_path / "ds", tmp_path / "afile" / "cache"), "--cache-dir")
    assert not called and snapshot(tmp_path) == before


def test_interrupted_prepare_leaves_nothing_and_keeps_the_old_folder(tmp_path, monkeypatch):
    spec = PrepareSpec(datasets=["sample"], out=tmp_path / "ds", cache_dir=tmp_path / "cache", sample_users=40,
                       sample_items=20)
    run_prepare(spec)
    before = snapshot(tmp_path)

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare_mod, "write_tables", interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_prepare(spec.model_copy(update={"overwrite": True}))
    assert snapshot(tmp_path) == before


def test_a_second_writer_fails_at_once(cli, tmp_path, cache):
    out = tmp_path / "ds"
    with folder_lock(out):
        one_line_error(_sample(cli, out, cache), "another unimp command is writing")
    assert not out.exists()
    assert _sample(cli, out, cache).exit_code == 0  # the lock is gone with its holder


def test_filter_and_tokenize_images_refuse_a_symlink_and_foreign_files(cli, tmp_path, cache):
    out = tmp_path / "ds"
    assert _sample(cli, out, cache).exit_code == 0
    (tmp_path / "link").symlink_to(out)
    before = snapshot(tmp_path)
    one_line_error(cli("filter-images", "--data", tmp_path / "link"), "symbolic link")
    (out / "mine.txt").write_text("keep")
    before = snapshot(tmp_path)
    one_line_error(cli("filter-images", "--data", out), "mine.txt")
    assert snapshot(tmp_path) == before
    with folder_lock(out):
        one_line_error(cli("tokenize-images", "--data", out, "--steps", 1), "another unimp command is writing")
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------- 3. values that are not what they claim

def _files(cli, tmp_path, text, *more, name="log.csv"):
    table = tmp_path / name
    table.write_text(text)
    return cli("prepare", "--source", "files", "--interactions", table, "--out", tmp_path / f"out-{table.stem}",
               "--cache-dir", tmp_path / "cache", "--user-core", 1, "--item-core", 1, "--no-images", *more)


RATED = "user,item,timestamp,rating\n" + "".join(
    f"u{u},i{i},{100 * u + i},{r}\n" for u, i, r in [
        (1, 1, 5), (1, 2, 99), (1, 3, -7), (2, 1, 1e308), (2, 2, "inf"), (2, 3, "nan"), (3, 1, 4), (3, 2, 1)])


def test_ratings_outside_the_scale_or_not_finite_are_skipped_or_rejected(cli, tmp_path):
    res = _files(cli, tmp_path, RATED)
    assert res.exit_code == 0, res.output
    m = read_manifest(tmp_path / "out-log")
    assert m["skipped"]["rating outside 1..5 (see --rating-scale)"] == 3
    assert m["skipped"]["rating not a finite number"] == 2
    ratings = pl.read_parquet(tmp_path / "out-log" / "interactions.parquet")["rating"]
    assert sorted(ratings.to_list()) == [1.0, 4.0, 5.0]
    res = _files(cli, tmp_path, RATED, "--strict", name="strict.csv")
    one_line_error(res, "strict.csv", "row 5", "not a finite number", "'inf'")


def test_empty_ratings_are_kept_when_other_ratings_are_skipped(cli, tmp_path):
    # issue 22, fault 1: an out-of-range rating elsewhere made every empty or non-numeric one vanish uncounted
    text = "user,item,timestamp,rating\n" + "".join(
        f"u{u},i{i},{100 * u + i},{r}\n" for u in range(3) for i, r in enumerate(["5", "", "7", "junk"]))
    res = _files(cli, tmp_path, text)
    assert res.exit_code == 0, res.output
    m = read_manifest(tmp_path / "out-log")
    assert m["counts"]["interactions"] == 9  # 12 read, the 3 sevens skipped
    assert m["skipped"] == {"rating outside 1..5 (see --rating-scale)": 3}
    ratings = pl.read_parquet(tmp_path / "out-log" / "interactions.parquet")["rating"].to_list()
    assert sorted(ratings, key=lambda r: (r is None, r)) == [5.0] * 3 + [None] * 6


def test_all_ratings_skipped_names_the_reason_not_the_k_core(cli, tmp_path):
    # issue 22, fault 8: all-NaN ratings were reported as "lower --user-core/--item-core"
    text = "user,item,timestamp,rating\n" + "".join(f"u{k % 3},i{k % 4},{k},nan\n" for k in range(12))
    line = one_line_error(_files(cli, tmp_path, text), "all 12 rows read were skipped",
                          "rating not a finite number: 12")
    assert "--user-core" not in line


def test_ragged_csv_lines_are_skipped_and_counted_with_their_line_numbers(cli, tmp_path):
    # issue 22, fault 8: one ragged line refused the whole file without a line number
    text = "user,item,timestamp\nu1,a,1\nu1,b,2,extra\nu1,c\nu2,a,4\nu2,b,5\n"
    res = _files(cli, tmp_path, text, name="ragged.csv")
    assert res.exit_code == 0, res.output
    m = read_manifest(tmp_path / "out-ragged")
    assert m["skipped"] == {"ragged.csv: not 3 fields like the header (lines 3, 4)": 2}
    assert m["rows"]["read"] == 5 and m["counts"]["interactions"] == 3
    one_line_error(_files(cli, tmp_path, text, "--strict", name="s.csv"), "s.csv:3", "4 fields where the header has 3")


def test_rating_scale_maps_onto_one_to_five(cli, tmp_path):
    text = "user,item,timestamp,rating\nu1,a,1,0\nu1,b,2,10\nu2,a,3,5\nu2,b,4,11\n"
    res = _files(cli, tmp_path, text, "--rating-scale", 0, 10)
    assert res.exit_code == 0, res.output
    ratings = pl.read_parquet(tmp_path / "out-log" / "interactions.parquet")["rating"].to_list()
    assert sorted(ratings) == [1.0, 3.0, 5.0]
    assert read_manifest(tmp_path / "out-log")["skipped"] == {"rating outside 0..10 (see --rating-scale)": 1}
    one_line_error(_files(cli, tmp_path, text, "--rating-scale", 5, 5, name="x.csv"), "rating_scale")


def test_exact_duplicate_rows_are_dropped_and_counted(cli, tmp_path):
    text = "user,item,timestamp\nu1,a,1\nu1,a,1\nu1,a,1\nu1,b,2\nu2,a,1\nu2,a,5\n"
    assert _files(cli, tmp_path, text).exit_code == 0
    m = read_manifest(tmp_path / "out-log")
    assert m["skipped"]["duplicate interaction (same user, item and time)"] == 2
    assert m["counts"]["interactions"] == 4


def test_a_bad_json_line_is_skipped_when_lenient_and_named_when_strict(cli, tmp_path):
    rows = [json.dumps({"user": f"u{k % 2}", "item": f"i{k % 3}", "timestamp": k}) for k in range(6)]
    rows.insert(3, '{"user": "u9", "item": ')
    rows.insert(5, "[1, 2]")
    text = "\n".join(rows) + "\n"
    res = _files(cli, tmp_path, text, name="log.jsonl")
    assert res.exit_code == 0, res.output
    assert read_manifest(tmp_path / "out-log")["skipped"]["log.jsonl: malformed JSON line"] == 2
    one_line_error(_files(cli, tmp_path, text, "--strict", name="s.jsonl"), "s.jsonl:4", "invalid JSON")


@pytest.mark.parametrize("args", [("--column", "timestamp=review"), ("--timestamp-format", "%d/%m/%Y")])
def test_unparseable_timestamps_say_so_with_an_example(cli, tmp_path, args):
    text = "user,item,timestamp,review\nu1,a,2021-03-04,great\nu1,b,2021-03-05,fine\n"
    line = one_line_error(_files(cli, tmp_path, text, *args), "log.csv", "no timestamp in column")
    assert "'great'" in line or "'2021-03-04'" in line


# ---------------------------------------------------------------- 6. images

def test_prepare_verifies_images_as_filter_images_does(cli, tmp_path):
    from PIL import Image

    pics = tmp_path / "pics"
    pics.mkdir()
    (pics / "good.jpg").write_bytes(jpeg())
    (pics / "cut.jpg").write_bytes(truncated_jpeg())
    (pics / "bomb.png").write_bytes(png_bomb(10_000))  # 100 MPx: in Pillow's warning band
    (pics / "flat.jpg").write_bytes(jpeg(pattern=False))
    assert Image.MAX_IMAGE_PIXELS < 10_000 ** 2 < 2 * Image.MAX_IMAGE_PIXELS  # Pillow's default guard is on
    text = "user,item,timestamp,image_path\n" + "".join(
        f"u{u},{name},{u},pics/{name}\n" for u in (1, 2) for name in ("good.jpg", "cut.jpg", "bomb.png", "flat.jpg"))
    res = _files(cli, tmp_path, text)
    assert res.exit_code == 0, res.output
    m = read_manifest(tmp_path / "out-log")
    assert m["images"]["ok"] == 1
    assert m["images"]["failed"] == {"blank": 1, "decompression bomb": 1, "undecodable": 1}


def test_a_corrupt_gz_in_a_local_mirror_is_named_and_left_alone(cli, tmp_path):
    shop = shop_2014(tmp_path / "mirror", "Beauty")
    data = shop["reviews"].read_bytes()
    shop["reviews"].write_bytes(data[: len(data) // 2])
    before = snapshot(tmp_path / "mirror")
    res = cli("prepare", "--datasets", "beauty", "--mirror", tmp_path / "mirror", "--out", tmp_path / "out",
              "--cache-dir", tmp_path / "cache", "--no-images")
    line = one_line_error(res, "corrupt or truncated gzip", "your --mirror file")
    assert "delete" not in line
    assert snapshot(tmp_path / "mirror") == before and not (tmp_path / "out").exists()


def test_non_utf8_config_is_one_line(cli, tmp_path):
    cfg = tmp_path / "spec.yaml"
    cfg.write_bytes("datasets: [caf\u00e9]\n".encode("latin-1"))
    one_line_error(cli("prepare", "--config", cfg), "spec.yaml", "UTF-8")


def test_lock_error_names_the_folder(tmp_path):
    with folder_lock(tmp_path / "x"):
        with pytest.raises(UnimpError, match="x: another unimp command"):
            with folder_lock(tmp_path / "x"):
                pass
    assert os.listdir(tmp_path) == []  # the lock file lives elsewhere

