import json

import polars as pl
import pytest

from unimp_core import prepare as prepare_mod
from unimp_core.prepare import run_prepare
from unimp_core.data.store import load_dataset, read_manifest
from unimp_core.errors import UnimpError
from unimp_core.specs.data import PrepareSpec


def sequences(ds) -> dict[int, list[int]]:
    """user_id -> item ids in time order."""
    g = ds.interactions.group_by("user_id", maintain_order=True).agg(pl.col("item_id"))
    return dict(zip(g["user_id"].to_list(), g["item_id"].to_list()))


def sample_spec(tmp, **kw):
    return PrepareSpec(datasets=["sample"], out=tmp / "sample", cache_dir=tmp / "cache", **kw)


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prep")
    return run_prepare(sample_spec(tmp))


def test_sample_folder_contract(sample):
    ds = load_dataset(sample)
    m = ds.manifest
    assert m["synthetic"] is True and m["schema_version"] == 1
    assert m["explanation_source"] == "review summary"
    assert m["images"]["ok"] == ds.items.height and m["images"]["missing"] == 0
    assert ds.items["item_id"].to_list() == list(range(ds.items.height))
    assert set(ds.items.columns) >= {"item_id", "source_id", "domain", "title", "brand", "category", "price",
                                     "description", "image_url", "image"}
    assert set(ds.interactions.columns) == {"user_id", "user_key", "item_id", "timestamp", "rating", "review",
                                            "summary", "explanation"}
    assert (ds.items["domain"] == "synthetic").all()
    for rel in ds.items["image"].to_list()[:5]:
        assert (sample / rel).is_file()
    # time order within each user; k-core holds
    assert ds.interactions.group_by("user_id").agg(
        (pl.col("timestamp").diff().drop_nulls() >= 0).all().alias("ok"))["ok"].all()
    assert ds.interactions.group_by("user_id").len()["len"].min() >= 8
    assert ds.interactions.group_by("item_id").len()["len"].min() >= 5
    assert m["counts"]["users"] == ds.users.height
    assert json.loads((sample / "prepare_spec.json").read_text())["datasets"] == ["sample"]
    assert not [p.name for p in sample.parent.iterdir() if p.name.startswith(".")]  # no staging litter
    assert set(ds.instances) == {"rec", "search", "exp", "img_sel"}


def test_sample_is_deterministic(sample, tmp_path):
    again = run_prepare(sample_spec(tmp_path))
    a, b = load_dataset(sample), load_dataset(again)
    assert a.interactions.equals(b.interactions) and a.items.drop("image").equals(b.items.drop("image"))
    for task in a.instances:
        assert a.instances[task].equals(b.instances[task])


def test_sample_is_learnable(sample):
    """The next item is usually the successor of the last one: a 'same as last transition' rule
    must beat popularity by far on the stored test targets (this is what a model has to learn)."""
    ds = load_dataset(sample)
    seqs = sequences(ds)
    train_users = ds.users.filter(pl.col("split") == "train")["user_id"].to_list()
    nxt: dict[int, dict[int, int]] = {}
    for u in train_users:
        s = seqs[u]
        for a, b in zip(s, s[1:]):
            nxt.setdefault(a, {}).setdefault(b, 0)
            nxt[a][b] += 1
    pop = ds.interactions.filter(pl.col("user_id").is_in(train_users)).group_by("item_id").len().sort(
        "len", descending=True)["item_id"].to_list()[:10]
    rec = ds.instances["rec"].filter(pl.col("split") == "test")
    hit_pop = hit_rule = 0
    for u, pos, target in rec.select("user_id", "position", "target").iter_rows():
        last = seqs[u][pos - 1]
        top = sorted(nxt.get(last, {}).items(), key=lambda kv: -kv[1])[:10]
        hit_rule += target in [k for k, _ in top]
        hit_pop += target in pop
    assert hit_rule >= 3 * max(hit_pop, 1)


def test_existing_folder_needs_overwrite(sample):
    spec = PrepareSpec(datasets=["sample"], out=sample, cache_dir=sample.parent / "cache")
    with pytest.raises(UnimpError, match="overwrite"):
        run_prepare(spec)


def test_interrupted_run_leaves_no_complete_folder_and_keeps_old(tmp_path, monkeypatch):
    spec = sample_spec(tmp_path)

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare_mod.image_io, "materialize", boom)
    with pytest.raises(KeyboardInterrupt):
        run_prepare(spec)
    assert not (tmp_path / "sample").exists()
    monkeypatch.undo()
    out = run_prepare(spec)  # rerun resumes: cached images are reused
    before = read_manifest(out)["created"]
    monkeypatch.setattr(prepare_mod.image_io, "materialize", boom)
    with pytest.raises(KeyboardInterrupt):
        run_prepare(spec.model_copy(update={"overwrite": True}))
    assert read_manifest(out)["created"] == before  # the complete old folder is untouched


def test_kcore_too_strict_is_a_clear_error(tmp_path):
    with pytest.raises(UnimpError, match="user-core"):
        run_prepare(sample_spec(tmp_path, user_core=500))


def test_leave_one_out_protocol(tmp_path):
    out = run_prepare(sample_spec(tmp_path, protocol="leave-one-out", sample_users=50, sample_items=60))
    ds = load_dataset(out)
    assert set(ds.users["split"]) == {"all"}
    rec = ds.instances["rec"]
    assert rec.filter(pl.col("split") == "test").height == ds.users.height
    seqs = sequences(ds)
    for u, split, pos, target in rec.iter_rows():
        assert pos == len(seqs[u]) - (1 if split == "test" else 2) and seqs[u][pos] == target


def test_spec_validation_errors():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"datasets: name at least one category \(see --list-datasets\)"):
        PrepareSpec(source="amazon2014")
    with pytest.raises(ValidationError, match=r"unknown_key\s+Extra inputs are not permitted"):
        PrepareSpec(datasets=["sample"], unknown_key=1)
    with pytest.raises(ValidationError, match=r"input: --source hm needs --input FOLDER"):
        PrepareSpec(source="hm")
