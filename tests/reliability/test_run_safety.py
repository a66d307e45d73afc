"""Hostile and careless inputs around a run folder: damaged checkpoints, a changed dataset, Ctrl-C,
`generate` edge cases (issue 8, items 4 and 5)."""

from __future__ import annotations

import json
import shlex
import shutil

import polars as pl
import pytest

from tests.evaluation.trained import N_ITEMS, sample_dataset, trained_run
from unimp_core.data.store import load_dataset
from unimp_core.errors import UnimpError
from unimp_core.io import write_checksums

from .helpers import one_line_error, snapshot


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return trained_run(tmp_path_factory)


@pytest.fixture(scope="module")
def killed(tmp_path_factory, run):
    """A tiny run killed after its checkpoints step-2 and step-4 (no final/)."""
    from unimp_core.specs.train import TrainSpec
    from unimp_core.training.train import run_train

    out = tmp_path_factory.mktemp("killed") / "run"
    run_train(TrainSpec(data={"path": sample_dataset(run.parent), "valid_users": 0},
                        run={"out": out, "max_steps": 5, "save_every": 2}, optim={"batch_size": 4}))
    shutil.rmtree(out / "final")
    return out


def _killed_copy(killed, dest):
    shutil.copytree(killed, dest)
    return dest


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_resume_skips_a_damaged_latest_checkpoint_and_says_which(cli, tmp_path, killed):
    copy = _killed_copy(killed, tmp_path / "run")
    _truncate(copy / "checkpoints" / "step-4" / "trainable.pt")
    res = cli("train", "--config", copy / "train_spec.json", "--out", copy, "--resume")
    assert res.exit_code == 0, res.output
    said = res.output.replace("\n", "")  # rich wraps long lines
    assert "step-4: damaged checkpoint: trainable.pt has" in said and "resuming from step-2" in said
    assert json.loads((copy / "final" / "state.json").read_text())["step"] == 5


def test_resume_with_no_intact_checkpoint_is_one_line(cli, tmp_path, killed):
    copy = _killed_copy(killed, tmp_path / "run")
    _truncate(copy / "checkpoints" / "step-4" / "trainable.pt")
    (copy / "checkpoints" / "step-2" / "state.json").write_text("")
    write_checksums(copy / "checkpoints" / "step-2", "checksums.json")  # recorded as it is now: the loader's own check
    before = snapshot(copy / "checkpoints")
    line = one_line_error(cli("train", "--config", copy / "train_spec.json", "--out", copy, "--resume"),
                          "no intact checkpoint")
    assert "step-4" in line and "step-2/state.json: unreadable" in line
    assert snapshot(copy / "checkpoints") == before


def test_evaluate_and_generate_refuse_damaged_weights(cli, tmp_path, run):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    _truncate(copy / "final" / "trainable.pt")
    one_line_error(cli("evaluate", "--run", copy, "--limit", 2), "final: damaged checkpoint")
    one_line_error(cli("generate", "--run", copy, "--user", 0), "final: damaged checkpoint")


def test_a_rebuilt_dataset_is_refused_naming_both(cli, tmp_path, run):
    res = cli("prepare", "--datasets", "sample", "--sample-users", 80, "--sample-items", N_ITEMS, "--seed", 7,
              "--out", tmp_path / "rebuilt", "--cache-dir", tmp_path / "cache")
    assert res.exit_code == 0, res.output
    for args in (("evaluate", "--limit", 2), ("generate", "--user", 0)):
        line = one_line_error(cli(args[0], "--run", run, "--data", tmp_path / "rebuilt", *args[1:]),
                              "rebuilt", "not the dataset")
        assert str(sample_dataset(run.parent)) in line
    copy = tmp_path / "copy"  # the same dataset elsewhere is fine
    shutil.copytree(sample_dataset(run.parent), copy)
    assert cli("generate", "--run", run, "--data", copy, "--user", 0, "--json").exit_code == 0


def test_generate_lists_only_new_items_by_default_in_strict_json(cli, run):
    res = cli("generate", "--run", run, "--user", 0, "--k", 240, "--json")
    assert res.exit_code == 0, res.output

    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    result = json.loads(res.stdout, parse_constant=refuse)
    recs = result["recommendations"]
    inter = pl.read_parquet(sample_dataset(run.parent) / "interactions.parquet")
    seen = set(inter.filter(pl.col("user_id") == 0)["item_id"].to_list())
    assert recs and not any(r["in_history"] for r in recs) and not {r["item_id"] for r in recs} & seen
    assert len(recs) == N_ITEMS - len(seen) and f"{len(recs)} of the 240 asked" in result["k_note"]
    assert all(0.0 <= r["score"] <= 1.0 for r in recs)
    kept = cli("generate", "--run", run, "--user", 0, "--k", 240, "--keep-history", "--json")
    assert kept.exit_code == 0, kept.output
    recs = json.loads(kept.stdout)["recommendations"]
    assert len(recs) == N_ITEMS and {r["item_id"] for r in recs if r["in_history"]} == seen


def test_generate_user_and_output_errors_are_one_line(cli, tmp_path, run):
    one_line_error(cli("generate", "--run", run, "--user", "9" * 29), "--user", "no such user")
    (tmp_path / "afile").write_text("x")
    one_line_error(cli("generate", "--run", run, "--user", 0, "--html", tmp_path / "afile" / "p.html"), "--html")
    assert (tmp_path / "afile").read_text() == "x"


def test_ctrl_c_in_train_prints_the_command_that_resumes(cli, tmp_path, run, monkeypatch):
    from unimp_core.model.openflamingo import recipe as train_mod

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "_train", interrupt)
    out = tmp_path / "r"
    res = cli("train", "--data", sample_dataset(run.parent), "--out", out, "--max-steps", 2, "--valid-users", 0)
    line = one_line_error(res, "interrupted; resume with: unimp train --config")
    monkeypatch.undo()
    command = shlex.split(line.split("resume with: ", 1)[1])
    assert command[:2] == ["unimp", "train"]
    res = cli(*command[1:])
    assert res.exit_code == 0, res.output
    assert (out / "final" / "trainable.pt").is_file()


def test_the_model_image_loader_stays_inside_the_dataset(tmp_path, run):
    from unimp_core.model.vision_cache import ItemImages

    ds = load_dataset(sample_dataset(run.parent))
    (tmp_path / "secret.jpg").write_bytes(b"not yours")
    ds.items = ds.items.with_columns(pl.lit(str(tmp_path / "secret.jpg")).alias("image"))
    with pytest.raises(UnimpError, match="escapes"):
        ItemImages(ds, transform=lambda img: img)(0)
    ds.items = ds.items.with_columns(pl.lit("../../secret.jpg").alias("image"))
    with pytest.raises(UnimpError, match="escapes"):
        ItemImages(ds, transform=lambda img: img)(1)


# ---------------------------------------------------------------- one writer per run folder (issue 22, fault 3)

def test_a_second_writer_of_a_run_folder_fails_at_once_naming_the_first(cli, tmp_path, killed, run):
    import os

    from unimp_core.io import folder_lock

    copy = _killed_copy(killed, tmp_path / "run")
    before = snapshot(copy)
    with folder_lock(copy):  # the first writer: a `train --resume` that is still running
        line = one_line_error(cli("train", "--config", copy / "train_spec.json", "--out", copy, "--resume"),
                              "another unimp command is writing this folder", f"pid {os.getpid()}")
        one_line_error(cli("finetune", "--from", run, "--out", copy, "--max-steps", 1), "another unimp command")
    assert "since" in line
    assert snapshot(copy) == before
    res = cli("train", "--config", copy / "train_spec.json", "--out", copy, "--resume")  # the lock went with it
    assert res.exit_code == 0, res.output


def test_two_evaluations_into_one_folder_are_refused(cli, tmp_path, run):
    from unimp_core.io import folder_lock

    with folder_lock(run / "evaluations" / "final-test-first2"):
        one_line_error(cli("evaluate", "--run", run, "--checkpoint", "final", "--limit", 2),
                       "final-test-first2: another unimp command is writing")


# ---------------------------------------------------------------- the checkpoint asked for, or refused (fault 4)

def test_a_damaged_best_checkpoint_is_refused_not_swapped_for_final(cli, tmp_path, run):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    shutil.copytree(copy / "final", copy / "best")  # the run kept a best checkpoint
    res = cli("generate", "--run", copy, "--user", 5, "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["checkpoint"] == "best", res.output
    (copy / "best" / "trainable.pt").unlink()
    for command in (("generate", "--run", copy, "--user", 5), ("evaluate", "--run", copy, "--limit", 2)):
        line = one_line_error(cli(*command), f"{copy / 'best'}: damaged checkpoint: trainable.pt is missing")
        assert "--checkpoint picks another: step-3, final" in line
    (copy / "final" / "trainable.pt").unlink()
    line = one_line_error(cli("generate", "--run", copy, "--user", 5, "--checkpoint", "final"),
                          f"{copy / 'final'}: damaged checkpoint: trainable.pt is missing")
    assert "no such checkpoint" not in line
    one_line_error(cli("generate", "--run", copy, "--user", 5, "--checkpoint", "step-99"),
                   "step-99: no such checkpoint (have: step-3, best, final)")
