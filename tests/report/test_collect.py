"""What the report reads from a run folder's files, on hand-written lines."""

from __future__ import annotations

import pytest

from unimp_core.report.collect import (by_popularity, numeric_leaves, ranking_names, task_loss_series,
                                       training_series, valid_metric_series)

RECORDS = [
    {"step": 2, "epoch": 0, "loss": 5.0, "lr": 1e-3, "samples_per_s": 20.0, "task_loss": {"rec": 6.0, "exp": 4.0}},
    {"step": 4, "epoch": 0, "loss": float("nan"), "lr": 2e-3, "samples_per_s": 21.0, "task_loss": {"rec": 5.0}},
    {"step": 4, "epoch": 0, "valid_loss": {"rec": 5.5, "exp": 3.5}},
    {"step": 4, "epoch": 0, "valid_rank": {"NDCG@10": 0.2, "HR@10": 0.4}, "best": 0.2, "best_step": 4},
    {"step": 8, "epoch": 1, "valid_rank": {"NDCG@10": 0.1, "HR@10": 0.5}, "best": 0.2, "best_step": 4},
]


def test_training_lines_skip_what_is_not_a_number():
    loss = training_series(RECORDS, "loss")
    assert (loss.steps, loss.values) == ([2], [5.0])  # the NaN step (a diverged batch) is left out
    assert training_series(RECORDS, "lr").values == [1e-3, 2e-3]


def test_each_task_has_its_training_and_validation_loss():
    lines = {s.label: (s.steps, s.values) for s in task_loss_series(RECORDS)}
    assert list(lines) == ["train exp", "valid exp", "train rec", "valid rec"]
    assert lines["train rec"] == ([2, 4], [6.0, 5.0]) and lines["valid exp"] == ([4], [3.5])


def test_validation_metric_over_steps():
    line = valid_metric_series(RECORDS, "NDCG@10")
    assert (line.steps, line.values) == ([4, 8], [0.2, 0.1])


def test_metric_names_tables_and_popularity_buckets():
    assert ranking_names({"NDCG@10": 1, "HR@20": 1, "HR@5": 1, "MRR@10": 1, "note": 1}) == [
        "HR@5", "HR@20", "NDCG@10", "MRR@10"]
    entry = {"users": 8, "seconds": 1.0, "decode": "greedy", "rating": {"RMSE": 0.5, "scored": 8},
             "explanation": {"BLEU-4": 0.25, "METEOR": None}, "by_popularity": {"head": {"HR@10": 1.0}}}
    assert numeric_leaves(entry) == {"rating.RMSE": 0.5, "explanation.BLEU-4": 0.25}
    assert by_popularity({}) is None and by_popularity({"by_popularity": {}}) is None
    table = by_popularity({"by_popularity": {"tail": {"NDCG@10": 0.1, "users": 3, "note": "x"}, "head": {"NDCG@10": 0.3}}})
    assert list(table) == ["tail", "head"] and table["tail"] == {"NDCG@10": 0.1, "users": 3}


@pytest.mark.parametrize("lines", [0, 1])
def test_an_empty_chart_has_no_coloured_pixel(lines):
    """The check the browser test applies to every chart: an empty one (axes, title, no data) has no
    saturated pixel, one with a line has many."""
    from tests.report.pixels import coloured_pixels
    from unimp_core.report.charts import line_chart
    from unimp_core.report.collect import Series

    line = Series("train rec", [1, 2, 3], [3.0, 2.0, 2.5]) if lines else Series("train rec")
    uri = line_chart("loss", [line], "loss")
    count = coloured_pixels(uri)
    assert (count > 300) if lines else (count == 0)
