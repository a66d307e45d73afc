"""The embedding blocks: text (TF-IDF and a local encoder), image (pixels and image codes), collab (training
histories only), the user's FILE (checked, one-line errors), and how blocks are combined."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from tests.itemcodes.conftest import write_folder, write_vectors
from unimp_core.data.store import MANIFEST, load_dataset
from unimp_core.errors import UnimpError
from unimp_core.io import write_json_atomic
from unimp_core.itemcodes import embed
from unimp_core.progress import Progress


# ---------------------------------------------------------------- text

def test_text_items_without_text_get_zero_rows(tmp_path):
    titles = ["red wool hat", None, "blue wool hat", "green ceramic mug", "", "white ceramic mug"]
    ds = load_dataset(write_folder(tmp_path / "ds", 6, {0: [0, 2, 3]}, titles=titles))
    x, info = embed.text_embeddings(ds.items, None, 64, "cpu", 0, Progress())
    assert info["kind"] == "tfidf-svd" and info["zero_rows"] == 2
    assert not x[1].any() and not x[4].any() and np.abs(x[[0, 2, 3, 5]]).sum(axis=1).min() > 0
    assert x.shape == (6, min(64, info["dims"]))


def test_text_without_any_text_is_one_line(tmp_path):
    ds = load_dataset(write_folder(tmp_path / "ds", 3, {0: [0, 1, 2]}, titles=[None, None, None]))
    with pytest.raises(UnimpError, match="no item has a title"):
        embed.text_embeddings(ds.items, None, 8, "cpu", 0, Progress())


def _tiny_encoder(folder, texts):
    """A 2-layer BERT with a word-level tokenizer, saved locally: the transformers mean-pooling path, offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "[PAD]": 1, "[CLS]": 2, "[SEP]": 3}
    for t in texts:
        for w in t.split():
            vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", model_max_length=64
                            ).save_pretrained(folder)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=64)).save_pretrained(folder)


def test_text_encoder_from_a_local_folder(tmp_path):
    pytest.importorskip("transformers")
    titles = ["red hat", "blue hat", None, "green mug"]
    ds = load_dataset(write_folder(tmp_path / "ds", 4, {0: [0, 1, 3]}, titles=titles))
    _tiny_encoder(tmp_path / "enc", [t for t in titles if t])
    x, info = embed.text_embeddings(ds.items, str(tmp_path / "enc"), 64, "cpu", 0, Progress())
    assert info["kind"].startswith("encoder") and info["dims"] == 16 and info["zero_rows"] == 1
    assert not x[2].any() and np.isfinite(x).all() and np.abs(x[[0, 1, 3]]).sum(axis=1).min() > 0


def test_text_encoder_that_cannot_load_is_one_line(tmp_path):
    ds = load_dataset(write_folder(tmp_path / "ds", 2, {0: [0, 1]}))
    with pytest.raises(UnimpError, match="--text-encoder .*cannot load"):
        embed.text_embeddings(ds.items, str(tmp_path / "empty-folder"), 8, "cpu", 0, Progress())


# ---------------------------------------------------------------- image

def test_image_pixels_and_unreadable_images(sample_ds):
    ds = load_dataset(sample_ds)
    (sample_ds / ds.items["image"][4]).write_bytes(b"broken")
    x, info = embed.image_embeddings(ds, sample_ds, 16, 0, Progress())
    assert info["kind"] == "pixels-pca" and info["unreadable"] == 1 and info["zero_rows"] == 1
    assert x.shape == (30, 16) and not x[4].any()


def test_image_codes_are_used_when_present(sample_ds):
    """tokenize-images' codes (written here by hand) are preferred over pixels; items without codes get zeros."""
    rng = np.random.default_rng(0)
    pl.DataFrame({"item_id": list(range(25)), "codes": [rng.integers(0, 32, 16).tolist() for _ in range(25)]},
                 schema={"item_id": pl.Int64, "codes": pl.List(pl.Int32)}).write_parquet(sample_ds / "image_codes.parquet")
    ds = load_dataset(sample_ds)
    write_json_atomic(sample_ds / MANIFEST, {**ds.manifest, "image_tokens": {"codebook_size": 32}})
    x, info = embed.image_embeddings(load_dataset(sample_ds), sample_ds, 8, 0, Progress())
    assert info["kind"] == "image-codes-svd" and info["zero_rows"] == 5
    assert not x[25:].any() and np.abs(x[:25]).sum(axis=1).min() > 0


def test_pixel_feature_tells_colours_apart():
    from PIL import Image

    red, blue = (embed.pixel_feature(Image.new("RGB", (20, 30), c)) for c in ((250, 0, 0), (0, 0, 250)))
    assert red.shape == (256,) and np.abs(red - blue).sum() > 1


# ---------------------------------------------------------------- collab: no leakage

def test_collab_reads_only_training_positions_under_leave_one_out(tmp_path):
    # Item 5 is only ever a validation target, item 6 only a test target: neither may shape an id.
    hist = {0: [0, 1, 2, 5, 6], 1: [1, 2, 3, 5, 6], 2: [2, 3, 4, 0, 5], 3: [3, 4, 0, 1, 6]}
    # user 2: valid 0 (also trained elsewhere), test 5; user 3: valid 1, test 6
    ds = load_dataset(write_folder(tmp_path / "ds", 7, hist, protocol="leave-one-out"))
    items, users = embed.training_histories(ds)
    assert items.tolist() == [0, 1, 2, 1, 2, 3, 2, 3, 4, 3, 4, 0]
    x, info = embed.collab_embeddings(ds, 4, 2, 0, Progress())
    assert info["zero_rows"] == 2 and not x[5].any() and not x[6].any()
    assert np.abs(x[:5]).sum(axis=1).min() > 0


def test_collab_reads_only_training_users_under_user_split(tmp_path):
    hist = {0: [0, 1, 2], 1: [1, 2, 3], 2: [3, 4, 0], 3: [5, 6, 0], 4: [6, 5, 1]}
    splits = {0: "train", 1: "train", 2: "train", 3: "valid", 4: "test"}
    ds = load_dataset(write_folder(tmp_path / "ds", 7, hist, protocol="user-split", splits=splits))
    x, info = embed.collab_embeddings(ds, 4, 5, 0, Progress())
    assert info["training_interactions"] == 9 and info["zero_rows"] == 2
    assert not x[5].any() and not x[6].any()


def test_cooccurrence_and_ppmi_by_hand():
    m = embed.cooccurrence(np.array([0, 1, 2, 1, 0]), np.array([7, 7, 7, 8, 8]), 3, window=2).toarray()
    # user 7: (0,1) d1, (1,2) d1, (0,2) d2; user 8: (1,0) d1
    assert np.allclose(m, [[0, 2, 0.5], [2, 0, 1], [0.5, 1, 0]])
    p = embed.ppmi(embed.cooccurrence(np.array([0, 1, 2, 1, 0]), np.array([7, 7, 7, 8, 8]), 3, 2)).toarray()
    total, marg = m.sum(), m.sum(axis=1)
    assert np.isclose(p[0, 1], max(0.0, np.log(2 * total / (marg[0] * marg[1]))))
    assert (p >= 0).all() and p[0, 0] == 0


# ---------------------------------------------------------------- FILE

def test_file_of_numeric_columns(tmp_path):
    path = tmp_path / "v.parquet"
    pl.DataFrame({"item_id": [2, 0, 1], "a": [2.0, 0.0, 1.0], "b": [20, 0, 10]}).write_parquet(path)
    x, info = embed.file_embeddings(path, 3)
    assert np.allclose(x, [[0, 0], [1, 10], [2, 20]]) and info["dims"] == 2 and info["zero_rows"] == 1


def test_file_of_an_array_column(tmp_path):
    path = tmp_path / "v.parquet"
    pl.DataFrame({"item_id": [1, 0], "emb": [[1.0, 2.0], [3.0, 4.0]]},
                 schema={"item_id": pl.Int32, "emb": pl.Array(pl.Float64, 2)}).write_parquet(path)
    x, _ = embed.file_embeddings(path, 2)
    assert np.allclose(x, [[3, 4], [1, 2]])


def _bad_files(tmp_path):
    ok = [[1.0, 2.0]] * 3
    return {
        "missing item": ({"item_id": [0, 1], "v": ok[:2]}, "item 2 has no vector"),
        "duplicate": ({"item_id": [0, 1, 1, 2], "v": ok + [[1.0, 1.0]]}, "item 1 appears 2 times"),
        "unknown id": ({"item_id": [0, 1, 2, 9], "v": ok + [[1.0, 1.0]]}, "item 9 is not in the catalogue"),
        "nan": ({"item_id": [0, 1, 2], "v": [[1.0, 2.0], [float("nan"), 1.0], [1.0, 2.0]]}, "item 1 has a value that is not a finite"),
        "inf column": ({"item_id": [0, 1, 2], "a": [1.0, 2.0, float("inf")]}, "item 2 has a value that is not a finite"),
        "widths": ({"item_id": [0, 1, 2], "v": [[1.0, 2.0], [1.0], [1.0, 2.0]]}, "item 1 has a v vector of 1 values"),
        "text column": ({"item_id": [0, 1, 2], "a": [1.0, 2.0, 3.0], "name": ["x", "y", "z"]}, "column name is"),
        "no item_id": ({"id": [0, 1, 2], "v": ok}, "no item_id column"),
        "null vector": ({"item_id": [0, 1, 2], "v": [[1.0, 2.0], None, [1.0, 2.0]]}, "item 1 has no v vector"),
        "float ids": ({"item_id": [0.0, 1.0, 2.0], "v": ok}, "not integers"),
    }


@pytest.mark.parametrize("case", list(_bad_files(None)))
def test_bad_files_are_one_line_errors_naming_file_and_item(cli, tmp_path, case):
    columns, needle = _bad_files(tmp_path)[case]
    path = tmp_path / "bad.parquet"
    pl.DataFrame(columns).write_parquet(path)
    root = write_folder(tmp_path / "ds", 3, {0: [0, 1, 2]})
    res = cli("tokenize-items", "--data", root, "--source", path)
    assert res.exit_code == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}") and needle in lines[0], res.stderr
    assert not (root / "item_codes.parquet").exists()


def test_not_a_parquet_file_is_one_line(cli, tmp_path):
    path = tmp_path / "vectors.parquet"
    path.write_text("item_id,v\n0,1\n")
    root = write_folder(tmp_path / "ds", 1, {0: [0]})
    res = cli("tokenize-items", "--data", root, "--source", path)
    assert res.exit_code == 1 and len(res.stderr.strip().splitlines()) == 1 and "not a readable Parquet file" in res.stderr


# ---------------------------------------------------------------- combining

def test_combine_balances_blocks_and_keeps_missing_rows_at_zero():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 3)), rng.normal(size=(50, 40))
    a[7] = 0
    x = embed.combine([a * 1000, b])
    assert x.shape == (50, 43) and not x[7, :3].any()
    ms_a, ms_b = (x[:, :3] ** 2).sum(1), (x[:, 3:] ** 2).sum(1)
    assert np.isclose(np.delete(ms_a, 7).mean(), 1, atol=1e-4) and np.isclose(ms_b.mean(), 1, atol=1e-4)
    assert np.allclose(embed.combine([a, b]), x, atol=1e-5)  # the scale of a block does not matter


def test_item_texts_join_the_fields(tmp_path):
    items = pl.DataFrame({"item_id": [1, 0], "title": ["Hat", None], "brand": ["Acme", None],
                          "category": ["Hats", None], "description": ["warm " * 300, None]})
    texts = embed.item_texts(items)
    assert texts[0] == "" and texts[1].startswith("Hat Acme Hats warm") and len(texts[1].split()) == embed.MAX_TEXT_WORDS


def test_write_vectors_helper_round_trips(tmp_path):
    v = np.arange(6, dtype=float).reshape(3, 2)
    x, _ = embed.file_embeddings(write_vectors(tmp_path / "v.parquet", v), 3)
    assert np.allclose(x, v)


def test_image_reader_refuses_bombs_and_broken_files(tmp_path):
    from tests.data import images_util
    from unimp_core.data.images import open_small

    (tmp_path / "bomb.png").write_bytes(images_util.png_bomb())
    (tmp_path / "cut.jpg").write_bytes(images_util.truncated_jpeg())
    (tmp_path / "ok.jpg").write_bytes(images_util.jpeg(size=(64, 40)))
    assert open_small(tmp_path / "bomb.png", 32) is None and open_small(tmp_path / "cut.jpg", 32) is None
    assert open_small(tmp_path / "missing.jpg", 32) is None and open_small(None, 32) is None
    img = open_small(tmp_path / "ok.jpg", 32)
    assert img.mode == "RGB" and max(img.size) <= 32
