import json

import polars as pl
import pytest

from unimp_core.data.store import load_dataset

TINY_FLAGS = ["--resolution", 16, "--factor", 4, "--width", 8, "--codebook-size", 32, "--codebook-dim", 4,
              "--steps", 8, "--batch-size", 8]


def test_tokenize_images_end_to_end(cli, sample_ds):
    res = cli("tokenize-images", "--data", sample_ds, *TINY_FLAGS)
    assert res.exit_code == 0, res.output
    assert "30/30 item images -> 4x4 codes" in res.output and "PSNR" in res.output
    manifest = load_dataset(sample_ds).manifest
    assert manifest["image_tokens"]["grid"] == 4 and manifest["image_tokens"]["codebook_size"] == 32
    codes = pl.read_parquet(sample_ds / "image_codes.parquet")
    assert codes.height == 30 and codes["codes"].list.len().unique().to_list() == [16]
    again = cli("tokenize-images", "--data", sample_ds, *TINY_FLAGS)  # up to date: nothing to do
    assert again.exit_code == 0 and "30/30" in again.output


def test_dry_run_and_config(cli, sample_ds, tmp_path):
    cfg = tmp_path / "tok.yaml"
    cfg.write_text("resolution: 64\ncodebook:\n  size: 1024\n  steps: 50\n")
    res = cli("tokenize-images", "--data", sample_ds, "--config", cfg, "--steps", 70, "--dry-run")
    assert res.exit_code == 0, res.output
    spec = json.loads(res.output)
    assert spec["resolution"] == 64 and spec["codebook"]["size"] == 1024 and spec["codebook"]["steps"] == 70
    assert spec["train_codebook"] is True and spec["vq"] is None
    assert not (sample_ds / "vq").exists()
    vq = json.loads(cli("tokenize-images", "--data", sample_ds, "--vq", "some/model", "--dry-run").output)
    assert vq["train_codebook"] is False and vq["vq"] == "some/model"


@pytest.mark.parametrize("args, needle", [
    (["--vq", "x/y", "--train-codebook"], "either --vq or --train-codebook"),
    (["--resolution", 20], "multiple of codebook.factor"),
    (["--vq", "/nonexistent-folder-for-unimp-test/vq"], "folder not found"),
    (["--vq", "just-a-name"], "neither a local folder nor a hub id"),
])
def test_bad_options_are_one_line(cli, sample_ds, args, needle):
    res = cli("tokenize-images", "--data", sample_ds, *args)
    assert res.exit_code == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], res.stderr


def test_missing_images_is_one_line(cli, sample_ds):
    items = pl.read_parquet(sample_ds / "items.parquet").with_columns(pl.lit(None, dtype=pl.Utf8).alias("image"))
    items.write_parquet(sample_ds / "items.parquet")
    res = cli("tokenize-images", "--data", sample_ds)
    assert res.exit_code == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "no item images" in lines[0] and "filter-images" in lines[0]


def test_filter_images_drops_the_image_codes(cli, sample_ds, tmp_path):
    assert cli("tokenize-images", "--data", sample_ds, *TINY_FLAGS).exit_code == 0
    assert (sample_ds / "image_codes.parquet").is_file() and (sample_ds / "vq").is_dir()
    items = load_dataset(sample_ds).items
    broken = sample_ds / items["image"][0]
    broken.write_bytes(broken.read_bytes()[:50])  # a truncated picture: its item goes
    res = cli("filter-images", "--data", sample_ds)
    assert res.exit_code == 0, res.output
    assert f"run `unimp tokenize-images --data {sample_ds}` again" in " ".join(res.output.split())
    after = load_dataset(sample_ds)
    assert after.items.height < items.height and "image_tokens" not in after.manifest
    assert after.manifest["filter_images"]["image_codes_dropped"] is True
    assert not (sample_ds / "image_codes.parquet").exists() and not (sample_ds / "vq").exists()
    # the stale codes cannot be trained on: img_gen asks for new ones
    res = cli("train", "--data", sample_ds, "--tasks", "rec", "img_gen", "--out", tmp_path / "run", "--max-steps", 1)
    assert res.exit_code == 1 and "run `unimp tokenize-images --data" in res.stderr
