"""Every command that reads a dataset folder, walked over corrupt copies of one: each answers with one
`error:` line naming the broken file, and leaves the folder exactly as it was (issue 8, item 4)."""

from __future__ import annotations

import shutil

import polars as pl
import pytest

from tests.evaluation.trained import sample_dataset, trained_run

from .helpers import one_line_error, snapshot


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _drop_column(path, column):
    pl.read_parquet(path).drop(column).write_parquet(path)


def _shuffle_items(path):
    df = pl.read_parquet(path)
    df.with_columns(pl.col("item_id").reverse()).write_parquet(path)


CORRUPTIONS = {  # name -> (how, the file the message must name)
    "truncated items": (lambda ds: _truncate(ds / "items.parquet"), "items.parquet"),
    "broken manifest": (lambda ds: (ds / "manifest.json").write_text("{"), "manifest.json"),
    "missing users": (lambda ds: (ds / "users.parquet").unlink(), "users.parquet"),
    "column dropped": (lambda ds: _drop_column(ds / "interactions.parquet", "item_id"), "interactions.parquet"),
    "item ids out of order": (lambda ds: _shuffle_items(ds / "items.parquet"), "item ids"),
    "garbage eval table": (lambda ds: (ds / "eval" / "rec.parquet").write_bytes(b"PAR1 not really"), "rec.parquet"),
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return trained_run(tmp_path_factory)


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_every_command_gives_one_line_on_a_corrupt_dataset(cli, tmp_path, run, corruption):
    how, names = CORRUPTIONS[corruption]
    bad = tmp_path / "bad"
    shutil.copytree(sample_dataset(run.parent), bad)
    how(bad)
    before = snapshot(tmp_path)
    commands = {
        "filter-images": ("filter-images", "--data", bad),
        "tokenize-images": ("tokenize-images", "--data", bad, "--steps", 1),
        "train": ("train", "--data", bad, "--out", tmp_path / "run", "--max-steps", 1),
        "finetune": ("finetune", "--from", run, "--data", bad, "--out", tmp_path / "ft", "--max-steps", 1),
        "evaluate": ("evaluate", "--run", run, "--data", bad, "--limit", 2),
        "generate": ("generate", "--run", run, "--data", bad, "--user", 0),
    }
    for name, args in commands.items():
        res = cli(*args)
        line = one_line_error(res)
        assert names in line, f"{name}: {line}"
        after = snapshot(tmp_path)
        assert {k: v for k, v in after.items() if not k.startswith(("run", "ft"))} == before, name
