import pytest

from unimp_core.errors import UnimpError
from unimp_core.training.selection import Selection, metric_name


def test_metric_names():
    assert metric_name("ndcg@10") == "NDCG@10"
    assert metric_name(" HR@5") == "HR@5"
    assert metric_name("mrr@20") == "MRR@20"
    for bad in ("ndcg", "auc@10", "ndcg@0", "ndcg@-1"):
        with pytest.raises(UnimpError, match="hr@K, ndcg@K or mrr@K"):
            metric_name(bad)


def test_best_and_patience():
    sel = Selection(metric="NDCG@10", patience=2)
    assert sel.update(100, {"NDCG@10": 0.01, "HR@10": 0.02})
    assert sel.update(200, {"NDCG@10": 0.03})
    assert not sel.update(300, {"NDCG@10": 0.03})  # equal is not better: the earlier checkpoint stays
    assert not sel.stop
    assert not sel.update(400, {"NDCG@10": 0.02})
    assert sel.stop and sel.best == 0.03 and sel.best_step == 200
    assert not Selection(patience=None, since_best=99).stop
    with pytest.raises(UnimpError, match="HR@5 was not measured"):
        Selection(metric="HR@5").update(1, {"NDCG@10": 0.1})


def test_resume_keeps_the_record():
    sel = Selection(metric="NDCG@10", patience=3)
    sel.update(10, {"NDCG@10": 0.2})
    sel.update(20, {"NDCG@10": 0.1})
    again = Selection.from_state(sel.state(), "NDCG@10", 3)
    assert again == sel
    # another metric starts a fresh record; patience always comes from the spec
    assert Selection.from_state(sel.state(), "HR@10", 3).best is None
    assert Selection.from_state(sel.state(), "NDCG@10", 1).stop
    assert Selection.from_state(None, "NDCG@10", None) == Selection()
