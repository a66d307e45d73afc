"""The evaluate runner on a briefly trained tiny run (sample shop): outputs, consistency, distribution."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tests.evaluation.trained import trained_run
from unimp_core.errors import UnimpError
from unimp_core.evaluation import metrics as M
from unimp_core.evaluation.runner import (evaluation_name, gather_records, run_evaluate, shard,
                                          training_interactions)
from unimp_core.specs.evaluate import EvaluateSpec
from unimp_core.tasks import context

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return trained_run(tmp_path_factory)


@pytest.fixture(scope="module")
def full(run):
    """All four tasks, default settings."""
    return run_evaluate(EvaluateSpec(run=run, tasks=["rec", "search", "exp", "img_sel"], batch_size=4,
                                     max_new_tokens=16))


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_metrics_file_holds_every_task_with_baseline_and_timing(run, full):
    folder = run / "evaluations" / "final-test"
    assert full["folder"] == str(folder)
    saved = json.loads((folder / "metrics.json").read_text())
    assert saved["tasks"].keys() == {"rec", "search", "exp", "img_sel"} == set(saved["evaluated"])
    assert saved["checkpoint"] == "final" and saved["split"] == "test" and saved["protocol"] == "user-split"
    assert saved["processes"] == 1 and saved["synthetic"] is True and saved["spec"]["batch_size"] == 4
    for task in ("rec", "search"):
        res = saved["tasks"][task]
        assert res["users"] > 0 and res["seconds"] > 0 and res["users_per_s"] > 0
        assert set(res["metrics"]) == {f"{m}@{k}" for m in ("HR", "NDCG", "MRR") for k in (1, 3, 5, 10, 20)}
        assert set(res["popularity"]) == set(res["metrics"])
        hr = [res["metrics"][f"HR@{k}"] for k in (1, 3, 5, 10, 20)]
        assert hr == sorted(hr) and all(0 <= v <= 1 for v in hr)
        assert res["metrics"]["MRR@20"] <= res["metrics"]["NDCG@20"] <= res["metrics"]["HR@20"]
    exp = saved["tasks"]["exp"]
    assert exp["rating"]["unparsable_policy"] == "exclude" and "unparsable" in exp["rating"]
    assert exp["rating"]["scored"] + exp["rating"]["unparsable"] + exp["rating"]["no_reference"] == exp["users"]
    assert "BLEU-4" in exp["explanation"] and "BERTScore" in exp["explanation"]["unavailable"]
    meteor = exp["explanation"]["METEOR"]
    assert (meteor is None) == ("METEOR" in exp["explanation"]["unavailable"])  # a number or a reason, never both
    assert set(saved["tasks"]["img_sel"]["metrics"]) == {"precision", "recall", "f1"}


def test_rank_predictions_are_consistent_with_the_metrics(run, full):
    folder = run / "evaluations" / "final-test"
    for task in ("rec", "search"):
        records = _lines(folder / "predictions" / f"{task}.jsonl")
        assert [r["index"] for r in records] == list(range(full["tasks"][task]["users"]))
        ranks = np.array([r["rank"] for r in records])
        # the metrics by hand from the stored ranks (0-based, a hit at k when rank < k)
        for k in (1, 5, 20):
            hit = ranks < k
            assert full["tasks"][task]["metrics"][f"HR@{k}"] == pytest.approx(hit.mean())
            assert full["tasks"][task]["metrics"][f"NDCG@{k}"] == pytest.approx(np.mean(hit / np.log2(ranks + 2)))
            assert full["tasks"][task]["metrics"][f"MRR@{k}"] == pytest.approx(np.mean(hit / (ranks + 1)))
        for r in records:
            top = [item for item, _ in r["top"]]
            scores = [s for _, s in r["top"]]
            assert len(top) == 20 and len(set(top)) == 20 and scores == sorted(scores, reverse=True)
            if r["rank"] < 20:
                # every item scoring at least the target's is in the list: the rank is their count
                # (pessimistic ties; scores are stored rounded, so rounding may merge near-ties)
                target = scores[top.index(r["target"])]
                above = sum(s > target for i, s in zip(top, scores) if i != r["target"])
                tied = sum(s >= target for i, s in zip(top, scores) if i != r["target"])
                assert above <= r["rank"] <= tied, (r, above, tied)
            else:
                assert r["target"] not in top or scores[top.index(r["target"])] == scores[-1]


def test_stored_ranks_match_a_forward_pass_per_user(run, full):
    """A few ranks recomputed outside the runner: one unpadded prompt at a time through Flamingo.forward,
    the item tokens looked up by name, the rank counted by hand."""
    import torch

    from unimp_core.model.setup import load_run
    from unimp_core.tasks import build_eval_samples

    lr = load_run(run)
    tok = lr.bundle.tokenizer
    item_tokens = torch.tensor(tok.convert_tokens_to_ids([f"item_{i}" for i in range(lr.dataset.items.height)]))
    samples = build_eval_samples(lr.dataset, "rec", "test", lr.history_len, lr.ctx)
    records = _lines(run / "evaluations" / "final-test" / "predictions" / "rec.jsonl")
    collate = lr.collator()
    for r in records[:6]:
        sample = samples[r["index"]]
        assert sample.meta["target"] == r["target"] and sample.meta["user_id"] == r["user_id"]
        batch = collate([sample])  # one prompt: no padding
        assert bool(batch["attention_mask"].all())
        with torch.no_grad():
            logits = lr.bundle.model(vision_x=batch["vision_x"], lang_x=batch["input_ids"],
                                     attention_mask=batch["attention_mask"]).logits[0, -1]  # (V,)
        scores = logits[item_tokens]  # (N,) in item-id order
        target = scores[r["target"]]
        others = torch.cat([scores[:r["target"]], scores[r["target"] + 1:]])
        above, tied = int((others > target + 1e-5).sum()), int((others >= target - 1e-5).sum())
        assert above <= r["rank"] <= tied, (r["rank"], above, tied)


def test_popularity_baseline_from_raw_interaction_counts(run, full):
    """Popularity recomputed from interactions.parquet: counts over the training users, the test
    targets from eval/rec.parquet, the list's order and the metrics by hand."""
    from unimp_core.data.store import load_dataset

    root = Path(json.loads((run / "train_spec.json").read_text())["data"]["path"])
    ds = load_dataset(root)
    train_users = pl.read_parquet(root / "users.parquet").filter(pl.col("split") == "train")["user_id"]
    counts = (pl.read_parquet(root / "interactions.parquet").filter(pl.col("user_id").is_in(train_users.to_list()))
              .group_by("item_id").len())
    count = np.zeros(ds.items.height)
    count[counts["item_id"].to_numpy()] = counts["len"].to_numpy()
    targets = pl.read_parquet(root / "eval" / "rec.parquet").filter(pl.col("split") == "test")["target"].to_numpy()
    stored = [r["target"] for r in _lines(run / "evaluations" / "final-test" / "predictions" / "rec.jsonl")]
    assert stored == targets.tolist()
    # the most-popular list is one fixed order: by count, equal counts by item id
    ids = np.arange(ds.items.height)
    ranks = np.array([(count > count[t]).sum() + ((count == count[t]) & (ids < t)).sum() for t in targets])
    popularity = full["tasks"]["rec"]["popularity"]
    for k in (1, 3, 5, 10, 20):
        hit = ranks < k
        assert popularity[f"HR@{k}"] == pytest.approx(hit.mean())
        assert popularity[f"NDCG@{k}"] == pytest.approx(np.mean(hit / np.log2(ranks + 2)))
        assert popularity[f"MRR@{k}"] == pytest.approx(np.mean(hit / (ranks + 1)))


def test_rank_metrics_by_target_popularity_in_training(run, full):
    """by_popularity recomputed by hand: each test target's count among the training users' interactions
    (the popularity baseline's counts), the users bucketed <5 / 5-19 / 20+, the metrics from the stored
    ranks; the popularity baseline's per bucket the same way from its own ranks."""
    from unimp_core.data.store import load_dataset

    root = Path(json.loads((run / "train_spec.json").read_text())["data"]["path"])
    ds = load_dataset(root)
    train_users = ds.users.filter(pl.col("split") == "train")["user_id"].to_list()
    train_items = ds.interactions.filter(pl.col("user_id").is_in(train_users))["item_id"].to_list()
    count = np.bincount(train_items, minlength=ds.items.height)
    res = full["tasks"]["rec"]
    for by in (res["by_popularity"], res["popularity_by_popularity"]):
        assert list(by) == ["<5", "5-19", "20+"] and sum(b["users"] for b in by.values()) == res["users"]
    records = _lines(run / "evaluations" / "final-test" / "predictions" / "rec.jsonl")
    seen = np.array([count[r["target"]] for r in records])
    ranks = np.array([r["rank"] for r in records])
    for label, chosen in (("<5", seen < 5), ("5-19", (seen >= 5) & (seen < 20)), ("20+", seen >= 20)):
        b = res["by_popularity"][label]
        assert b["users"] == int(chosen.sum()) == res["popularity_by_popularity"][label]["users"]
        assert set(b) == {"users", *res["metrics"]}
        if not chosen.any():
            assert b["HR@10"] is None
            continue
        hit = ranks[chosen] < 10
        assert b["HR@10"] == pytest.approx(hit.mean())
        assert b["NDCG@10"] == pytest.approx(np.mean(hit / np.log2(ranks[chosen] + 2)))
    assert sum(b["users"] > 0 for b in res["by_popularity"].values()) >= 2  # more than one bucket is checked
    saved = json.loads((run / "evaluations" / "final-test" / "metrics.json").read_text())["tasks"]["rec"]
    assert saved["by_popularity"] == res["by_popularity"]


def test_ranking_summary_by_popularity_hand_computed(tmp_path):
    """Six users, item t the target of user t; the training data holds items 0..5 0, 4, 5, 19, 20 and 300
    times. The model's ranks are given; the popularity list is 5, 4, 3, 2, 1, 0."""
    from unimp_core.evaluation.scoring import EvalContext, ranking_summary

    counts = np.array([0, 4, 5, 19, 20, 300])
    records = [{"index": t, "target": t, "rank": r} for t, r in enumerate([0, 3, 7, 1, 0, 12])]
    ev = EvalContext(None, EvaluateSpec(run=tmp_path, ks=[1, 5]), tmp_path, counts, [])
    out = ranking_summary(records, [], ev)
    model, baseline = out["by_popularity"], out["popularity_by_popularity"]
    assert [b["users"] for b in model.values()] == [b["users"] for b in baseline.values()] == [2, 2, 2]
    assert [(b["HR@1"], b["HR@5"]) for b in model.values()] == [(0.5, 1.0), (0.0, 0.5), (0.5, 0.5)]
    assert model["5-19"]["NDCG@5"] == pytest.approx(1 / np.log2(3) / 2)
    # popularity ranks: items 0, 1 at 5, 4; items 2, 3 at 3, 2; items 4, 5 at 1, 0
    assert [(b["HR@1"], b["HR@5"]) for b in baseline.values()] == [(0.0, 0.5), (0.0, 1.0), (0.5, 1.0)]
    assert baseline["<5"]["MRR@5"] == pytest.approx(1 / 5 / 2)
    # a beam search of 3 cannot measure @5: null per bucket as overall, the users stay
    beam = ranking_summary(records, [], EvalContext(None, EvaluateSpec(run=tmp_path, ks=[1, 5], decode="beam",
                                                                       num_beams=3), tmp_path, counts, []))
    assert beam["metrics"]["HR@5"] is None and all(b["HR@5"] is None for b in beam["by_popularity"].values())
    assert [b["users"] for b in beam["by_popularity"].values()] == [2, 2, 2]


def test_leave_one_out_training_prefix():
    from tests.tasks.synthetic import make_dataset

    ds = make_dataset("leave-one-out", n_users=6)
    ctx = context(ds)
    items, _ = training_interactions(ds, ctx)
    expected = np.concatenate([seq[:-2] for seq in ctx.sequences.values()])
    assert items.tolist() == expected.tolist()


def test_beam_decoding_reproduces_the_exact_ranking(run, full):
    beam = run_evaluate(EvaluateSpec(run=run, tasks=["rec"], decode="beam", batch_size=4))
    res = beam["tasks"]["rec"]
    assert beam["folder"].endswith("final-test-beam")
    for k in (1, 3, 5, 10):
        for m in ("HR", "NDCG", "MRR"):
            assert res["metrics"][f"{m}@{k}"] == pytest.approx(full["tasks"]["rec"]["metrics"][f"{m}@{k}"])
    assert res["metrics"]["HR@20"] is None and "beams" in res["note"]
    for label, b in res["by_popularity"].items():  # per bucket too: the same numbers, nothing beyond the beams
        assert b["HR@20"] is None and b["users"] == full["tasks"]["rec"]["by_popularity"][label]["users"]
        if b["users"]:
            assert b["HR@10"] == pytest.approx(full["tasks"]["rec"]["by_popularity"][label]["HR@10"])
    ranked = _lines(run / "evaluations" / "final-test" / "predictions" / "rec.jsonl")
    beamed = _lines(Path(beam["folder"]) / "predictions" / "rec.jsonl")
    for a, b in zip(ranked, beamed):
        assert _tie_groups(a["top"][:10]) == _tie_groups(b["top"])


def _tie_groups(top: list) -> list[set]:
    """The items of a top list in order, items whose (rounded) scores tie in one set: the two decoders compute
    the scores differently, and may order near-equal ones either way."""
    groups: list[set] = []
    for i, (item, score) in enumerate(top):
        if i and score == top[i - 1][1]:
            groups[-1].add(item)
        else:
            groups.append({item})
    return groups


def test_free_decoding_reports_invalid_outputs(run):
    free = run_evaluate(EvaluateSpec(run=run, tasks=["rec"], decode="free", num_beams=3, limit=4))
    res = free["tasks"]["rec"]
    assert res["users"] == 4 and 0 <= res["invalid_share"] <= 1 and 0 <= res["invalid_top1_share"] <= 1
    records = _lines(Path(free["folder"]) / "predictions" / "rec.jsonl")
    outputs = [o for r in records for o in r["outputs"]]
    invalid = sum(not o.startswith("item_") or " " in o for o in outputs)
    assert res["invalid_share"] == pytest.approx(invalid / len(outputs))
    assert Path(free["folder"]).name == "final-test-free-first4"


def test_exclude_history_keeps_history_out_of_the_lists(run):
    res = run_evaluate(EvaluateSpec(run=run, tasks=["rec"], exclude_history=True))
    from unimp_core.data.store import load_dataset
    from unimp_core.tasks import build_eval_samples

    ds = load_dataset(json.loads((run / "train_spec.json").read_text())["data"]["path"])
    samples = build_eval_samples(ds, "rec", "test", 5)
    records = _lines(Path(res["folder"]) / "predictions" / "rec.jsonl")
    for r in records:
        history = set(samples[r["index"]].meta["history"]) - {r["target"]}
        assert not history & {i for i, _ in r["top"]}
    assert Path(res["folder"]).name == "final-test-exclude-history"


def test_step_checkpoint_and_split_get_their_own_folder(run, full):
    res = run_evaluate(EvaluateSpec(run=run, checkpoint="step-3", split="valid", tasks=["rec"]))
    assert Path(res["folder"]).name == "step-3-valid" and res["checkpoint"] == "step-3"
    assert res["split"] == "valid" and res["tasks"]["rec"]["users"] > 0
    assert json.loads((run / "evaluations" / "final-test" / "metrics.json").read_text())["checkpoint"] == "final"
    with pytest.raises(UnimpError, match=r"step-99.*step-3"):
        run_evaluate(EvaluateSpec(run=run, checkpoint="step-99", tasks=["rec"]))


def test_later_tasks_are_added_to_the_same_metrics_file(run, full):
    run_evaluate(EvaluateSpec(run=run, tasks=["img_sel"], batch_size=8))
    saved = json.loads((run / "evaluations" / "final-test" / "metrics.json").read_text())
    assert saved["evaluated"] == ["img_sel"] and set(saved["tasks"]) == {"rec", "search", "exp", "img_sel"}
    assert saved["tasks"]["rec"] == full["tasks"]["rec"]
    # batch size does not change a single number
    assert saved["tasks"]["img_sel"]["metrics"] == full["tasks"]["img_sel"]["metrics"]


def test_not_a_run_folder(tmp_path):
    with pytest.raises(UnimpError, match="not a run folder"):
        run_evaluate(EvaluateSpec(run=tmp_path))


# ------------------------------------------------------------------------------------- distribution


def test_shards_cover_every_instance_once():
    parts = [shard(11, r, 3) for r in range(3)]
    assert sorted(i for p in parts for i in p) == list(range(11))
    assert shard(2, 1, 4) == [1] and shard(2, 3, 4) == []


def test_gather_dedupes_and_refuses_drops():
    ranks = [[{"index": i, "v": i * 10} for i in shard(7, r, 2)] for r in range(2)]
    everything = lambda mine: ranks[0] + ranks[1] + ranks[1][:1]  # noqa: E731 (a duplicate, as padding makes)
    gathered = gather_records(ranks[0], 7, everything)
    assert [r["index"] for r in gathered] == list(range(7)) and gathered[3]["v"] == 30
    with pytest.raises(UnimpError, match="missing"):
        gather_records(ranks[0], 7, lambda mine: ranks[0])


def test_evaluation_names():
    spec = EvaluateSpec(run="r")
    assert evaluation_name(spec, 5) == "final-test"
    spec = EvaluateSpec(run="r", checkpoint="step-40", split="valid", decode="free", exclude_history=True,
                        history_len=8, limit=10)
    assert evaluation_name(spec, 5) == "step-40-valid-free-exclude-history-h8-first10"
    assert evaluation_name(EvaluateSpec(run="r", history_len=5), 5) == "final-test"
    # decoding and history exclusion do not touch exp / img_sel numbers
    assert evaluation_name(spec, 5, ["exp", "img_sel"]) == "step-40-valid-h8-first10"
    assert evaluation_name(spec, 5, ["exp", "search"]).startswith("step-40-valid-free-exclude-history")


@pytest.mark.slow
def test_two_processes_give_exactly_the_one_process_metrics(run, tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2` on a machine without GPUs: two gloo processes."""
    one = run_evaluate(EvaluateSpec(run=run, tasks=["rec", "img_sel"], batch_size=3, limit=7))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517",
           "-m", "unimp_cli", "evaluate", "--run", str(run), "--tasks", "rec", "img_sel", "--batch-size", "3",
           "--limit", "7", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads(proc.stdout)
    assert two["processes"] == 2
    for task in ("rec", "img_sel"):
        assert two["tasks"][task]["metrics"] == one["tasks"][task]["metrics"]
        assert two["tasks"][task]["users"] == one["tasks"][task]["users"] == 7  # odd: the shards differ in size
    assert two["tasks"]["rec"]["popularity"] == one["tasks"]["rec"]["popularity"]
    predictions = Path(two["folder"]) / "predictions" / "rec.jsonl"
    assert [r["index"] for r in _lines(predictions)] == list(range(two["tasks"]["rec"]["users"]))
