"""Residual k-means, the collision level, the small-catalogue cap, determinism and the RQ-VAE."""

from __future__ import annotations

import numpy as np
import pytest

from tests.itemcodes.conftest import write_folder, write_vectors
from unimp_core.io import sha256_file
from unimp_core.itemcodes import quantize
from unimp_core.itemcodes.codes import load_item_codes
from unimp_core.itemcodes.tokenize import run_tokenize_items
from unimp_core.progress import Progress
from unimp_core.specs.items import TokenizeItemsSpec


class Recording(Progress):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def log(self, message: str) -> None:
        self.lines.append(message)


def _clusters(n: int, dim: int, centres: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(centres, dim)) * 3)[rng.integers(0, centres, n)] + rng.normal(size=(n, dim)) * 0.3


def test_collision_index_by_hand():
    codes = np.array([[1, 2], [0, 0], [1, 2], [3, 3], [1, 2], [0, 0]])
    full, colliding, largest = quantize.add_collision_index(codes)
    assert full[:, -1].tolist() == [0, 0, 1, 0, 2, 1] and colliding == 5 and largest == 3
    assert full[:, :2].tolist() == codes.tolist()
    unique, colliding, largest = quantize.add_collision_index(np.array([[0], [1], [2]]))
    assert unique[:, -1].tolist() == [0, 0, 0] and (colliding, largest) == (0, 1)


@pytest.mark.parametrize("requested, n, want", [(256, 1_000_000, 256), (256, 1024, 256), (256, 1000, 250),
                                                (256, 30, 8), (256, 5, 2), (256, 1, 1), (16, 30, 8)])
def test_codes_are_capped_for_small_catalogues(requested, n, want):
    assert quantize.effective_codes(requested, n) == want


def test_residual_kmeans_reduces_the_error_level_by_level():
    x = _clusters(600, 8, 12).astype(np.float32)
    codes, books, left = quantize.residual_kmeans(x, 3, 16, 100_000, 0, Progress())
    assert codes.shape == (600, 3) and books.shape == (3, 16, 8) and codes.min() >= 0 and codes.max() < 16
    assert left[0] < 0.1 and left[0] > left[1] > left[2]
    again, _, _ = quantize.residual_kmeans(x, 3, 16, 100_000, 0, Progress())
    assert np.array_equal(codes, again)


def test_fitted_on_a_sample_then_every_item():
    x = _clusters(3000, 8, 10, seed=1).astype(np.float32)
    codes, _, left = quantize.residual_kmeans(x, 2, 10, 1000, 0, Progress())
    assert codes.shape == (3000, 2) and left[0] < 0.1
    assert len(set(codes[:, 0].tolist())) == 10


def test_later_levels_keep_every_code_in_use():
    """Residuals are a centred, nearly isotropic cloud: every level must still spread items over its codes."""
    x = np.random.default_rng(0).standard_normal((4000, 16)).astype(np.float32)
    codes, _, left = quantize.residual_kmeans(x, 3, 32, 2000, 0, Progress())
    assert all(u["perplexity"] > 24 for u in quantize.level_usage(codes, 32))
    assert left[0] > left[1] > left[2]


def test_duplicate_embeddings_collide_and_are_numbered_in_item_order(tmp_path):
    x = _clusters(40, 4, 8, seed=2)
    x[[3, 17, 29]] = x[3]  # three identical items, and a pair
    x[[5, 6]] = x[5]
    root = write_folder(tmp_path / "ds", 40, {0: [0, 1, 2]})
    vectors = write_vectors(tmp_path / "v.parquet", x)
    spec = TokenizeItemsSpec(data=root, source=[str(vectors)], levels=2, codes=8, balance=False)
    record = run_tokenize_items(spec)
    codes = load_item_codes(root)
    assert codes.tuples[3][:-1] == codes.tuples[17][:-1] == codes.tuples[29][:-1]
    assert [codes.tuples[i][-1] for i in (3, 17, 29)] == [0, 1, 2] and [codes.tuples[i][-1] for i in (5, 6)] == [0, 1]
    assert record["collision_codes"] >= 3 and record["colliding_items"] >= 5
    groups = {}
    for t in codes.tuples:
        groups[t[:-1]] = groups.get(t[:-1], 0) + 1
    assert record["collision_codes"] == max(groups.values())
    assert record["colliding_items"] == sum(s for s in groups.values() if s > 1)


    balanced = run_tokenize_items(spec.model_copy(update={"balance": True}))  # identical items, distinct codes
    codes = load_item_codes(root)
    assert len({codes.tuples[i][:-1] for i in (3, 17, 29)}) == 3 and len({codes.tuples[i][:-1] for i in (5, 6)}) == 2
    assert balanced["colliding_items"] < record["colliding_items"] and balanced["balance"]["groups"] >= 2
    assert balanced["collision_codes"] <= min(2, record["collision_codes"])  # a group of 9..16 items on 8 codes


def test_balance_by_hand():
    books = np.array([[[0.0], [10.0]], [[-1.0], [1.0]]], dtype=np.float32)  # (levels 2, codes 2, D 1)
    x = np.array([[0.9], [1.1], [1.0], [10.2], [9.0]], dtype=np.float32)
    codes = np.array([[0, 1], [0, 1], [0, 1], [1, 1], [1, 0]])  # nearest codes: items 0-2 collide
    out, info = quantize.balance_last_level(codes, x, books)
    # 3 items on 2 codes: each code at most twice; moving item 0 (smallest r) to -1 costs least (4r)
    assert out[:, 1].tolist() == [0, 1, 1, 1, 0] and out[:, 0].tolist() == codes[:, 0].tolist()
    assert info == {"groups": 1, "items_moved": 1, "too_large": 0}
    unchanged, info = quantize.balance_last_level(np.array([[0, 0], [1, 1]]), x[:2], books)
    assert unchanged.tolist() == [[0, 0], [1, 1]] and info["groups"] == 0


def test_same_seed_same_bytes_and_rerun_is_a_no_op(tmp_path, sample_ds):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(sample_ds, other)
    spec = dict(source=["text", "collab", "image"])
    first = run_tokenize_items(TokenizeItemsSpec(data=sample_ds, **spec))
    second = run_tokenize_items(TokenizeItemsSpec(data=other, **spec))
    assert first["sha256"] == second["sha256"] == sha256_file(other / "item_codes.parquet")
    assert (sample_ds / "item_codes.parquet").read_bytes() == (other / "item_codes.parquet").read_bytes()

    progress = Recording()
    assert run_tokenize_items(TokenizeItemsSpec(data=sample_ds, **spec), progress) == first
    assert any("up to date" in line for line in progress.lines)
    forced = run_tokenize_items(TokenizeItemsSpec(data=sample_ds, force=True, **spec), Recording())
    assert forced["sha256"] == first["sha256"] and forced["created"] >= first["created"]
    reseeded = run_tokenize_items(TokenizeItemsSpec(data=sample_ds, seed=1, **spec))
    assert reseeded["seed"] == 1 and reseeded["identity"] != first["identity"]


def test_a_changed_file_makes_the_codes_again(tmp_path):
    root = write_folder(tmp_path / "ds", 20, {0: [0, 1]})
    path = write_vectors(tmp_path / "v.parquet", _clusters(20, 4, 4))
    first = run_tokenize_items(TokenizeItemsSpec(data=root, source=[str(path)]))
    write_vectors(path, _clusters(20, 4, 4, seed=9))
    progress = Recording()
    second = run_tokenize_items(TokenizeItemsSpec(data=root, source=[str(path)]), progress)
    assert second["identity"] != first["identity"] and not any("up to date" in x for x in progress.lines)


def test_cap_is_reported(tmp_path):
    root = write_folder(tmp_path / "ds", 30, {0: [0, 1]})
    progress = Recording()
    record = run_tokenize_items(TokenizeItemsSpec(data=root, source=[str(write_vectors(tmp_path / "v.parquet",
                                                                                        _clusters(30, 4, 5)))]),
                                progress)
    assert record["codes"] == 8 and record["codes_requested"] == 256 and record["tokens"] == 24 + record["collision_codes"]
    assert any("8 codes per level instead of 256" in line for line in progress.lines)


def test_rqvae_trains_and_is_deterministic(tmp_path):
    pytest.importorskip("torch")
    x = _clusters(400, 16, 6, seed=3)
    root = write_folder(tmp_path / "ds", 400, {0: [0, 1]})
    path = write_vectors(tmp_path / "v.parquet", x)
    rq = {"steps": 150, "batch_size": 128, "latent": 8, "hidden": 32, "lr": 3e-3}
    spec = TokenizeItemsSpec(data=root, source=[str(path)], quantizer="rqvae", levels=2, codes=16, rqvae=rq,
                             device="cpu")
    record = run_tokenize_items(spec)
    train = record["training"]
    assert record["quantizer"] == "rqvae" and train["steps"] == 150 and train["autoencoder_steps"] == 30
    assert train["recon_mse_final"] < train["recon_mse_at_init"]  # it really trains after the k-means start
    codes = load_item_codes(root)
    assert codes.levels == 2 and codes.codes == 16
    assert sum(u["used"] for u in record["level_usage"]) > 8
    again = run_tokenize_items(spec.model_copy(update={"force": True}))
    assert again["sha256"] == record["sha256"]
