"""The rank-metric registry: metrics defined in this file alone (precision@k, and a lower-is-better miss
rate) are registered and show up in evaluate's metrics.json and tables, and are valid selection metrics
whose direction checkpoint selection follows; nothing else names them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.evaluation.trained import trained_run
from unimp_core import rank_metrics as RM
from unimp_core.errors import UnimpError
from unimp_core.evaluation.metrics import ranking_metrics
from unimp_core.specs.train import TrainSpec
from unimp_core.training.selection import Selection, metric_name


def precision(ranks: np.ndarray, k: int) -> np.ndarray:
    """One relevant item: 1/k when it is in the first k."""
    return np.where(RM.hit(ranks, k), 1.0 / k, 0.0)


def miss(ranks: np.ndarray, k: int) -> np.ndarray:
    return 1.0 - RM.hit_rate(ranks, k)


P = RM.RankMetric("P", precision)
MISS = RM.RankMetric("MISS", miss, higher_is_better=False, brief=False)


@pytest.fixture(autouse=True)
def registered():
    RM.register(P)
    RM.register(MISS)
    yield
    RM.unregister("P")
    RM.unregister("MISS")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return trained_run(tmp_path_factory)


def test_the_metric_is_computed_and_named():
    values = ranking_metrics([0, 3, RM.ABSENT, 12], ks=[1, 5])
    assert list(values) == ["HR@1", "HR@5", "NDCG@1", "NDCG@5", "MRR@1", "MRR@5", "P@1", "P@5", "MISS@1", "MISS@5"]
    assert values["P@5"] == pytest.approx((0.2 + 0.2) / 4) and values["MISS@1"] == pytest.approx(0.75)
    assert RM.sort_key("P@5") < RM.sort_key("MISS@1") and RM.brief(["P@5", "MISS@5", "MRR@5"]) == ["P@5"]


def test_a_registered_metric_is_a_selection_metric():
    assert metric_name("p@10") == "P@10" and metric_name("miss@5") == "MISS@5"
    spec = TrainSpec(data={"path": "ds"}, run={"out": "run", "select_metric": "p@10"})
    assert spec.run.select_metric == "p@10"
    with pytest.raises(UnimpError, match="hr@K, ndcg@K, mrr@K, p@K or miss@K"):
        metric_name("auc@5")
    # lower is better for MISS: selection keeps the smallest value
    sel = Selection("MISS@5")
    assert sel.update(1, {"MISS@5": 0.5}) and sel.update(2, {"MISS@5": 0.25}) and not sel.update(3, {"MISS@5": 0.3})
    assert sel.best == 0.25 and sel.best_step == 2


def test_registration_is_checked():
    with pytest.raises(UnimpError, match="already registered"):
        RM.register(RM.RankMetric("p", precision))
    with pytest.raises(UnimpError, match="built-in"):
        RM.unregister("HR")


def test_train_dry_run_accepts_it(cli, tmp_path):
    res = cli("train", "--data", tmp_path, "--out", tmp_path / "run", "--select-metric", "p@5", "--dry-run")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["run"]["select_metric"] == "p@5"


def test_evaluate_reports_it(cli, run):
    res = cli("evaluate", "--run", run, "--tasks", "rec", "--k", "1,10", "--limit", "4", "--batch-size", "2")
    assert res.exit_code == 0, res.output
    assert "P" in [line.split()[1] for line in res.output.splitlines() if len(line.split()) > 2 and line.startswith("│")]
    saved = json.loads((run / "evaluations" / "final-test-first4" / "metrics.json").read_text())["tasks"]["rec"]
    assert {"P@1", "P@10", "MISS@1", "MISS@10"} <= set(saved["metrics"]) and "P@10" in saved["popularity"]
    assert saved["metrics"]["P@1"] == pytest.approx(saved["metrics"]["HR@1"])
    assert saved["metrics"]["MISS@10"] == pytest.approx(1 - saved["metrics"]["HR@10"])
    assert all("P@10" in bucket for bucket in saved["by_popularity"].values())
