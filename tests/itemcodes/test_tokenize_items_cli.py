"""`unimp tokenize-items` end to end on the bundled sample: every built-in source, the stored format, reruns,
the spec options, one-line errors, and the folder rewrites that must drop the codes."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from tests.itemcodes.conftest import write_vectors
from unimp_core.data.store import load_dataset
from unimp_core.itemcodes.codes import load_item_codes


def test_every_source_end_to_end(cli, sample_ds):
    res = cli("tokenize-items", "--data", sample_ds, "--source", "text,collab", "--source", "image")
    assert res.exit_code == 0, res.output
    assert "30 items -> 3 levels x 8 codes (capped from 256)" in res.output and "new tokens" in res.output
    record = load_dataset(sample_ds).manifest["item_codes"]
    for key in ("file", "levels", "codes", "collision_codes", "colliding_items", "source", "quantizer", "seed",
                "sha256"):
        assert key in record
    assert record["source"] == ["text", "collab", "image"] and record["quantizer"] == "rkmeans"
    assert [b["kind"] for b in record["blocks"]] == ["tfidf-svd", "ppmi-svd", "pixels-pca"]
    codes = load_item_codes(sample_ds)  # the shared contract's reader accepts what was written
    assert codes.n_items == 30 and codes.levels == 3 and codes.codes == 8
    assert codes.collision_codes == record["collision_codes"] == max(t[-1] for t in codes.tuples) + 1
    assert codes.n_tokens == record["tokens"]
    assert json.loads((sample_ds / "tokenize_items_spec.json").read_text())["source"] == ["text", "collab", "image"]

    again = cli("tokenize-items", "--data", sample_ds, "--source", "text,collab", "--source", "image")
    assert again.exit_code == 0 and load_dataset(sample_ds).manifest["item_codes"] == record  # up to date


def test_file_source_and_config(cli, sample_ds, tmp_path):
    vectors = write_vectors(tmp_path / "v.parquet", np.random.default_rng(0).normal(size=(30, 6)))
    cfg = tmp_path / "items.yaml"
    cfg.write_text(f"source: [{vectors}]\nlevels: 2\ncodes: 4\nseed: 3\n")
    res = cli("tokenize-items", "--data", sample_ds, "--config", cfg, "--codes", 5)
    assert res.exit_code == 0, res.output
    codes = load_item_codes(sample_ds)
    assert (codes.levels, codes.codes) == (2, 5)
    record = load_dataset(sample_ds).manifest["item_codes"]
    assert record["seed"] == 3 and record["blocks"][0]["kind"] == "file"


def test_dry_run_prints_the_spec(cli, sample_ds):
    res = cli("tokenize-items", "--data", sample_ds, "--source", "collab", "--quantizer", "rqvae",
              "--rqvae-steps", 7, "--dry-run")
    assert res.exit_code == 0, res.output
    spec = json.loads(res.output)
    assert spec["source"] == ["collab"] and spec["quantizer"] == "rqvae" and spec["rqvae"]["steps"] == 7
    assert not (sample_ds / "item_codes.parquet").exists()


@pytest.mark.parametrize("args, needle", [
    (["--quantizer", "pq"], "quantizer"),
    (["--source", "text", "--source", "text"], "'text' is given twice"),
    (["--source", "no-such-file.parquet"], "no-such-file.parquet: file not found"),
    (["--codes", 1], "codes"),
])
def test_bad_options_are_one_line(cli, sample_ds, args, needle):
    res = cli("tokenize-items", "--data", sample_ds, *args)
    assert res.exit_code == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], res.stderr


def test_filter_images_drops_the_item_codes(cli, sample_ds):
    assert cli("tokenize-items", "--data", sample_ds, "--source", "text").exit_code == 0
    items = load_dataset(sample_ds).items
    (sample_ds / items["image"][0]).write_bytes(b"not an image")
    res = cli("filter-images", "--data", sample_ds)
    assert res.exit_code == 0, res.output
    assert f"run `unimp tokenize-items --data {sample_ds}` again" in " ".join(res.output.split())
    manifest = load_dataset(sample_ds).manifest
    assert "item_codes" not in manifest and manifest["filter_images"]["item_codes_dropped"] is True
    assert not (sample_ds / "item_codes.parquet").exists()
    assert cli("tokenize-items", "--data", sample_ds, "--source", "text").exit_code == 0  # made again
    assert load_item_codes(sample_ds).n_items == load_dataset(sample_ds).items.height


def test_prepare_overwrite_replaces_a_folder_with_item_codes(cli, sample_ds, tmp_path):
    assert cli("tokenize-items", "--data", sample_ds, "--source", "text").exit_code == 0
    res = cli("prepare", "--datasets", "sample", "--out", sample_ds, "--cache-dir", tmp_path / "cache",
              "--sample-users", 40, "--sample-items", 20, "--user-core", 3, "--item-core", 2, "--overwrite")
    assert res.exit_code == 0, res.output
    assert "item_codes" not in load_dataset(sample_ds).manifest
    assert not (sample_ds / "item_codes.parquet").exists() and not (sample_ds / "tokenize_items_spec.json").exists()


def test_codes_do_not_change_the_dataset_identity(sample_ds):
    """A run trained before tokenize-items still evaluates on the folder afterwards."""
    from unimp_core.data.store import dataset_identity
    from unimp_core.itemcodes.tokenize import run_tokenize_items
    from unimp_core.specs.items import TokenizeItemsSpec

    before = dataset_identity(load_dataset(sample_ds).manifest)
    run_tokenize_items(TokenizeItemsSpec(data=sample_ds))
    assert dataset_identity(load_dataset(sample_ds).manifest) == before


def test_stored_table_shape(sample_ds):
    from unimp_core.itemcodes.tokenize import run_tokenize_items
    from unimp_core.specs.items import TokenizeItemsSpec

    run_tokenize_items(TokenizeItemsSpec(data=sample_ds, levels=2))
    df = pl.read_parquet(sample_ds / "item_codes.parquet")
    assert df.schema == {"item_id": pl.Int64, "codes": pl.List(pl.Int32)}
    assert df["item_id"].to_list() == list(range(30)) and set(df["codes"].list.len().to_list()) == {3}
