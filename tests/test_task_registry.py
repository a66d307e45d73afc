"""The task registry: a task defined in this file alone (`first`: which item opened the history
window?) is registered and runs through prepare, train, evaluate and generate, with no other file
knowing its name; an unknown task is one clear error."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from unimp_core.tasks import TASKS, get_task, register, unregister
from unimp_core.tasks.base import Request, Sample, Task, TaskContext, assemble, lazy, pick_target
from unimp_core.tokens import item_token

NAME = "first"


def make_sample(ctx: TaskContext, user_id: int, seq: np.ndarray, position: int, history_len: int, train: bool,
                meta: dict | None = None) -> Sample:
    window = seq[max(0, position - history_len):position]
    target = int(window[0])
    meta = {"user_id": user_id, "position": position, "target": target, "history": seq[:position].tolist(),
            **(meta or {})}
    return assemble(NAME, [ctx.history(window), ("Which item came first?", [])], item_token(target), train, meta)


def training(ctx: TaskContext, rng: np.random.Generator, history_len: int) -> list[Sample]:
    out = []
    for user_id, length in ctx.train_lengths.items():
        position = pick_target(rng, length, history_len)
        if position is not None:
            out.append(make_sample(ctx, user_id, ctx.sequences[user_id], position, history_len, train=True))
    return out


def evaluation(ctx: TaskContext, instances: pl.DataFrame, history_len: int) -> list[Sample]:
    return [make_sample(ctx, u, ctx.sequence(u), p, history_len, train=False, meta={"split": split})
            for u, split, p in instances.select("user_id", "split", "position").iter_rows()]


def draw_instances(positions: pl.DataFrame, items: pl.DataFrame, rng: np.random.Generator) -> pl.DataFrame:
    return positions.select("user_id", "split", "position")


def prompt(ctx: TaskContext, user_id: int, seq: np.ndarray, history_len: int, request: Request) -> Sample:
    return make_sample(ctx, user_id, seq, len(seq), history_len, train=False)


def summary(records: list[dict], samples: list[Sample], ev) -> dict:
    return {"decode": ev.spec.decode, "metrics": {"hit@1": float(np.mean([r["rank"] == 0 for r in records]))}}


FIRST = Task(NAME, training, evaluation, draw_instances=draw_instances, prompt=prompt, ranked=True,
             records=lazy("unimp_core.evaluation.scoring:ranking_records"), summary=summary,
             report=lazy("unimp_core.terminal:metrics_report"), answer=lazy("unimp_core.generation:ranking_answer"),
             show=lazy("unimp_core.terminal:show_ranking"), html=lazy("unimp_core.generation:ranking_html"))


@pytest.fixture
def first_task():
    register(FIRST)
    yield FIRST
    unregister(NAME)
    assert NAME not in TASKS


def test_a_task_defined_here_runs_through_prepare_train_evaluate_and_generate(first_task, tmp_path, cli):
    from unimp_core.prepare import run_prepare
    from unimp_core.data.store import load_dataset
    from unimp_core.specs.data import PrepareSpec
    from unimp_core.specs.train import TrainSpec
    from unimp_core.training.train import run_train

    data = tmp_path / "data"
    run_prepare(PrepareSpec(datasets=["sample"], out=data, cache_dir=tmp_path / "cache", sample_users=60,
                            sample_items=30))
    table = load_dataset(data).instances[NAME]
    assert table.height > 0 and set(table["split"].unique()) == {"valid", "test"}

    run = run_train(TrainSpec(data={"path": data, "tasks": ["rec", NAME], "valid_users": 4},
                              run={"out": tmp_path / "run", "max_steps": 2, "eval_every": 1},
                              optim={"batch_size": 8}))
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any(NAME in line.get("task_loss", {}) for line in lines)
    assert any(NAME in line.get("valid_loss", {}) for line in lines)

    res = cli("evaluate", "--run", run, "--tasks", NAME, "--limit", "5")
    assert res.exit_code == 0, res.output
    assert "hit@1" in res.stdout
    # the run trained rec, so it kept a best checkpoint by valid NDCG@10, which evaluate uses by default
    report = json.loads((run / "evaluations" / "best-test-first5" / "metrics.json").read_text())
    assert report["tasks"][NAME]["users"] == 5 and 0 <= report["tasks"][NAME]["metrics"]["hit@1"] <= 1

    page = tmp_path / "first.html"
    res = cli("generate", "--run", run, "--task", NAME, "--history", "3,1,4", "-k", "3", "--html", page, "--json")
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    assert result["task"] == NAME and len(result["recommendations"]) == 3
    assert "Recommended next" in page.read_text()
    res = cli("generate", "--run", run, "--task", NAME, "--history", "3,1,4", "-k", "2")
    assert res.exit_code == 0 and "recommended next" in res.stdout


def test_an_unknown_task_is_one_clear_error(cli, tmp_path):
    from unimp_core.errors import UnimpError
    from unimp_core.specs.train import TrainSpec

    with pytest.raises(UnimpError, match=r"unknown task 'nope' \(known: rec, search, exp, img_sel, img_gen\)"):
        get_task("nope")
    with pytest.raises(ValueError, match=r"unknown task 'nope'"):
        TrainSpec.model_validate({"data": {"path": tmp_path, "tasks": ["nope"]}, "run": {"out": tmp_path}})
    res = cli("train", "--data", tmp_path, "--out", tmp_path / "r", "--tasks", "nope", "--dry-run")
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 1 and len(lines) == 1 and "unknown task 'nope'" in lines[0]
    res = cli("generate", "--run", tmp_path, "--task", "nope", "--user", "1")
    assert res.exit_code == 1 and "unknown task 'nope'" in res.stderr
