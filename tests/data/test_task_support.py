"""Prepare draws a task's instances only where the data can support it; train refuses the others."""

from __future__ import annotations

import polars as pl
import pytest

from unimp_core.data.store import load_dataset
from unimp_core.errors import UnimpError
from unimp_core.tasks import skipped_line, unsupported_tasks


def _tables(image=None, category=None, explanation=None):
    items = pl.DataFrame({"item_id": [0, 1], "image": [None, image], "category": [None, category]},
                         schema={"item_id": pl.Int64, "image": pl.Utf8, "category": pl.Utf8})
    inter = pl.DataFrame({"user_id": [0, 0], "explanation": [None, explanation]},
                         schema={"user_id": pl.Int64, "explanation": pl.Utf8})
    return items, inter


def test_each_task_needs_its_own_data():
    assert unsupported_tasks(*_tables("images/1.jpg", "Hats", "fits well")) == {}
    bare = unsupported_tasks(*_tables(category="  ", explanation=""))  # blank text is no text
    assert bare == {"search": "no item categories to query", "exp": "no reviews", "img_sel": "no item images",
                    "img_gen": "no item images"}
    assert unsupported_tasks(*_tables(image="images/1.jpg", category="Hats")) == {"exp": "no reviews"}
    assert unsupported_tasks(*_tables(), tasks=["rec", "img_sel"]) == {"img_sel": "no item images"}
    assert skipped_line(bare) == ("skipped tasks: search (no item categories to query); exp (no reviews); "
                                  "img_sel, img_gen (no item images)")


def test_a_full_dataset_keeps_every_task(sample_ds):
    ds = load_dataset(sample_ds)
    assert ds.manifest["tasks_skipped"] == {}
    assert set(ds.instances) == {"rec", "search", "exp", "img_sel"}


@pytest.fixture
def ids_only(cli, tmp_path):
    """A dataset of user, item, time only (no images, reviews or item text)."""
    rows = ["user,item,timestamp"] + [f"u{u},i{(u + k) % 12},{k}" for u in range(30) for k in range(9)]
    (tmp_path / "log.csv").write_text("\n".join(rows) + "\n")
    res = cli("prepare", "--source", "files", "--interactions", tmp_path / "log.csv", "--no-images",
              "--out", tmp_path / "ds", "--cache-dir", tmp_path / "c", "--protocol", "leave-one-out")
    assert res.exit_code == 0, res.output
    return tmp_path / "ds"


def test_ids_only_data_draws_rec_alone(ids_only):
    ds = load_dataset(ids_only)
    assert set(ds.instances) == {"rec"}
    assert set(ds.manifest["tasks_skipped"]) == {"search", "exp", "img_sel", "img_gen"}


def test_train_defaults_to_the_supported_tasks_and_refuses_named_others(ids_only, tmp_path, cli):
    from unimp_core.specs.train import TrainSpec
    from unimp_core.training.recipe import _settle_tasks

    ds = load_dataset(ids_only)
    said = []
    spec = TrainSpec(data={"path": ids_only}, run={"out": tmp_path / "run"})
    spec = _settle_tasks(spec, ds, said.append)
    assert spec.data.tasks == ["rec"] and said == [
        "training rec; skipped tasks: search (no item categories to query); exp (no reviews); img_sel (no item images)"]

    named = TrainSpec(data={"path": ids_only, "tasks": ["rec", "exp"]}, run={"out": tmp_path / "run"})
    with pytest.raises(UnimpError, match=r"--tasks exp: .* cannot support this \(exp: no reviews\); its tasks: rec$"):
        _settle_tasks(named, ds, said.append)

    res = cli("train", "--data", ids_only, "--tasks", "rec,img_sel", "--out", tmp_path / "run2")
    assert res.exit_code == 1 and "img_sel: no item images" in res.output and not (tmp_path / "run2").exists()
