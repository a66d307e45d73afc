import json

import polars as pl
import pytest
import torch

from tests.imagegen.conftest import TINY
from tests.imagegen.test_vq import Interrupt
from unimp_core.data.store import SCHEMA_VERSION, load_dataset, read_manifest
from unimp_core.errors import UnimpError
from unimp_core.imagegen import tokenize as tokenize_mod
from unimp_core.imagegen import vq as vqlib
from unimp_core.imagegen.codes import load_codes
from unimp_core.imagegen.tokenize import codebook_usage, run_tokenize_images, split_holdout
from unimp_core.imagegen.vq import load_vq
from unimp_core.specs.images import TokenizeImagesSpec


def tiny_spec(root, **over) -> TokenizeImagesSpec:
    return TokenizeImagesSpec.model_validate({"data": root, **TINY, **over})


def test_tokenize_writes_codes_model_and_manifest(sample_ds):
    before = json.loads((sample_ds / "manifest.json").read_text())
    rec = run_tokenize_images(tiny_spec(sample_ds))
    ds = load_dataset(sample_ds)  # still a valid dataset folder
    assert ds.manifest["schema_version"] == SCHEMA_VERSION
    assert {k: v for k, v in ds.manifest.items() if k != "image_tokens"} == before  # every other key kept
    assert ds.manifest["image_tokens"] == rec == read_manifest(sample_ds)["image_tokens"]
    n = ds.items.height
    assert rec["items"] == {"total": n, "encoded": n, "missing": 0, "no_image": 0, "unreadable": 0}
    assert (rec["grid"], rec["codes_per_image"], rec["codebook_size"], rec["resolution"]) == (4, 16, 32, 16)
    tok = rec["tokenizer"]
    assert tok["kind"] == "trained" and len(tok["config_hash"]) == 16
    assert rec["quality"]["held_out"] and rec["quality"]["images"] == 3  # 10% of 30
    assert 0 < rec["quality"]["psnr"] < 100 and -1 <= rec["quality"]["ssim"] <= 1
    assert 0 < rec["codebook_usage"]["used"] <= 32 and rec["training"]["steps"] == 12
    assert (sample_ds / "vq" / "config.json").is_file() and (sample_ds / "vq" / "reconstructions.png").is_file()
    assert not (sample_ds / ".vq_train.pt").exists() and not (sample_ds / ".image_codes.parts").exists()

    codes = load_codes(sample_ds)
    assert sorted(codes) == ds.items["item_id"].to_list()
    assert all(len(c) == 16 and all(0 <= x < 32 for x in c) for c in codes.values())
    # the stored codes are what the public API computes for the same image
    vq = load_vq(sample_ds, device="cpu")
    from PIL import Image

    with Image.open(sample_ds / ds.items["image"][5]) as img:
        assert vq.encode([img])[0].tolist() == codes[5]
    assert vq.decode(torch.tensor([codes[5]]))[0].size == (16, 16)
    with Image.open(sample_ds / ds.items["image"][5]) as img:
        assert vq.resize([img])[0].size == (16, 16)

    # codes and vq/ must belong together (a run with another --vq may have stopped between the two)
    meta = json.loads((sample_ds / "vq" / "unimp_vq.json").read_text())
    (sample_ds / "vq" / "unimp_vq.json").write_text(json.dumps({**meta, "weights_sha256": "other"}))
    with pytest.raises(UnimpError, match="another tokenizer"):
        load_codes(sample_ds)


def test_rerun_is_a_no_op_and_force_redoes(sample_ds):
    run_tokenize_images(tiny_spec(sample_ds))
    stamp = {p: (sample_ds / p).stat().st_mtime_ns for p in ("image_codes.parquet", "vq/config.json")}
    run_tokenize_images(tiny_spec(sample_ds))
    assert {p: (sample_ds / p).stat().st_mtime_ns for p in stamp} == stamp
    # another codebook setting keeps nothing: retrain and re-encode
    smaller = {**TINY["codebook"], "size": 16}
    rec = run_tokenize_images(tiny_spec(sample_ds, codebook=smaller))
    assert rec["codebook_size"] == 16 and max(max(c) for c in load_codes(sample_ds).values()) < 16
    assert (sample_ds / "vq" / "config.json").stat().st_mtime_ns != stamp["vq/config.json"]
    stamp = (sample_ds / "image_codes.parquet").stat().st_mtime_ns
    run_tokenize_images(tiny_spec(sample_ds, codebook=smaller, force=True))
    assert (sample_ds / "image_codes.parquet").stat().st_mtime_ns != stamp


def test_encoding_resumes_after_an_interruption(sample_ds, monkeypatch):
    monkeypatch.setattr(tokenize_mod, "SHARD", 8)
    with pytest.raises(KeyboardInterrupt):
        run_tokenize_images(tiny_spec(sample_ds), Interrupt("encoding images", 20))
    parts = sorted((sample_ds / ".image_codes.parts").glob("part-*.parquet"))
    assert len(parts) == 2  # two full shards of 8 were written before the interruption
    assert "image_tokens" not in json.loads((sample_ds / "manifest.json").read_text())
    stamp = (sample_ds / "vq" / "config.json").stat().st_mtime_ns
    rec = run_tokenize_images(tiny_spec(sample_ds))  # reuses the trained codebook and the two shards
    assert (sample_ds / "vq" / "config.json").stat().st_mtime_ns == stamp
    resumed = load_codes(sample_ds)
    assert rec["items"]["encoded"] == len(resumed) == 30
    assert resumed == _codes_from_scratch(sample_ds)


def _codes_from_scratch(root):
    vq = load_vq(root, device="cpu")
    ds = load_dataset(root)
    from PIL import Image

    out = {}
    for item_id, rel in ds.items.select("item_id", "image").iter_rows():
        with Image.open(root / rel) as img:
            out[item_id] = vq.encode([img])[0].tolist()
    return out


def test_unreadable_and_missing_images_are_counted(sample_ds):
    ds = load_dataset(sample_ds)
    (sample_ds / ds.items["image"][0]).write_bytes(b"not an image")
    items = ds.items.with_columns(pl.when(pl.col("item_id") == 1).then(None).otherwise(pl.col("image")).alias("image"))
    items.write_parquet(sample_ds / "items.parquet")
    rec = run_tokenize_images(tiny_spec(sample_ds))
    assert rec["items"] == {"total": 30, "encoded": 28, "missing": 2, "no_image": 1, "unreadable": 1}
    assert 0 not in load_codes(sample_ds) and 1 not in load_codes(sample_ds)


def test_no_images_is_a_clear_error(sample_ds):
    ds = load_dataset(sample_ds)
    ds.items.with_columns(pl.lit(None, dtype=pl.Utf8).alias("image")).write_parquet(sample_ds / "items.parquet")
    with pytest.raises(UnimpError, match="no item images.*prepare.*filter-images"):
        run_tokenize_images(tiny_spec(sample_ds))
    with pytest.raises(UnimpError, match="tokenize-images"):
        load_codes(sample_ds)


def test_pretrained_vq_from_a_local_folder(sample_ds, tmp_path):
    from unimp_core.specs.images import CodebookSpec

    torch.manual_seed(0)
    model = vqlib.build_vq_model(CodebookSpec(size=64, dim=4, factor=2, width=8), resolution=16)
    model.save_pretrained(tmp_path / "pre")
    rec = run_tokenize_images(TokenizeImagesSpec(data=sample_ds, vq=str(tmp_path / "pre"), batch_size=8))
    assert rec["tokenizer"] == {"kind": "pretrained", "source": str((tmp_path / "pre").resolve())}
    assert (rec["resolution"], rec["grid"], rec["codebook_size"], rec["training"]) == (16, 8, 64, None)
    assert rec["quality"]["held_out"] is False and rec["quality"]["images"] == 30
    loaded = load_vq(sample_ds, device="cpu")  # a copy lives in the dataset folder
    assert vqlib.weights_sha256(sample_ds / "vq") == rec["weights_sha256"]
    assert loaded.codebook_size == 64 and len(load_codes(sample_ds)[0]) == 64
    with pytest.raises(UnimpError, match="no config.json"):
        run_tokenize_images(TokenizeImagesSpec(data=sample_ds, vq=str(tmp_path)))
    with pytest.raises(UnimpError, match="multiple of the --vq model's factor 2"):
        run_tokenize_images(TokenizeImagesSpec(data=sample_ds, vq=str(tmp_path / "pre"), resolution=17))


def test_spec_rules():
    with pytest.raises(ValueError, match="either --vq or --train-codebook"):
        TokenizeImagesSpec(data="x", vq="a/b", train_codebook=True)
    with pytest.raises(ValueError, match="without --train-codebook"):
        TokenizeImagesSpec(data="x", train_codebook=False)
    with pytest.raises(ValueError, match="multiple of codebook.factor"):
        TokenizeImagesSpec(data="x", resolution=20)
    assert TokenizeImagesSpec(data="x", vq="a/b").train_codebook is False
    assert TokenizeImagesSpec(data="x").train_resolution() == 32


def test_split_and_usage_helpers():
    rows = [(i, f"images/{i}.jpg", 10) for i in range(20)]
    train, held = split_holdout(rows, 0.1, seed=0)
    assert len(held) == 2 and len(train) == 18 and not set(train) & set(held)
    assert split_holdout(rows, 0.1, seed=0) == (train, held)
    assert split_holdout(rows[:1], 0.5, seed=0) == (rows[:1], [])
    u = codebook_usage([[0, 0], [1, 1]], 4)  # two codes, equally often: perplexity 2
    assert u == {"used": 2, "share": 0.5, "perplexity": 2.0}
    assert codebook_usage([[3, 3, 3]], 4)["perplexity"] == 1.0


@pytest.mark.slow
def test_default_codebook_on_the_full_sample(tmp_path):
    """The default settings on the 240-image sample (about a minute on 2 idle cores)."""
    from unimp_core.prepare import run_prepare
    from unimp_core.specs.data import PrepareSpec

    root = run_prepare(PrepareSpec(datasets=["sample"], out=tmp_path / "s", cache_dir=tmp_path / "c"))
    rec = run_tokenize_images(TokenizeImagesSpec(data=root))
    assert rec["items"]["encoded"] == 240 and rec["grid"] == 4 and rec["quality"]["images"] == 24
    # measured: PSNR 22.8-23.8 dB, SSIM ~0.60, 96% of the 512 codes used
    assert rec["quality"]["psnr"] > 21 and rec["quality"]["ssim"] > 0.5
    assert rec["codebook_usage"]["share"] > 0.5
