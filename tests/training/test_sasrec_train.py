"""SASRec through the run-folder contract: train, select, resume, evaluate, generate, refuse other tasks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.training.conftest import read_metrics
from unimp_core import run_folder as RF
from unimp_core.errors import UnimpError
from unimp_core.specs.evaluate import EvaluateSpec, GenerateSpec
from unimp_core.specs.train import TrainSpec




def sasrec_spec(data, out, average_epochs: float = 0.0, **run) -> TrainSpec:
    return TrainSpec.model_validate({
        "model": {"family": "sasrec", "hidden": 16, "max_len": 10, "dropout": 0.2},
        "data": {"path": str(data)}, "optim": {"batch_size": 16, "average_epochs": average_epochs},
        "run": {"out": str(out), "max_steps": 6, "eval_every": 2, "save_every": 2, "log_every": 1, "seed": 3, **run},
    })


def weights(run, name=RF.FINAL):
    return torch.load(RF.weights_file(run, name), weights_only=True)


def test_a_sasrec_run_is_an_ordinary_run(sample_data, tmp_path):
    from unimp_core.evaluation.runner import run_evaluate
    from unimp_core.generation import run_generate
    from unimp_core.training.train import run_train

    run = run_train(sasrec_spec(sample_data, tmp_path / "run"))
    assert RF.read_model_meta(run)["family"] == "sasrec"
    assert RF.read_train_spec(run).data.tasks == ["rec"]
    assert RF.checkpoint_names(run)[-2:] == ["best", "final"]
    lines = read_metrics(run)
    valid = [r for r in lines if "valid_rank" in r]
    assert [r["step"] for r in valid] == [2, 4, 6] and all("NDCG@10" in r["valid_rank"] for r in valid)
    best = RF.best_record(run)
    assert best["value"] == max(r["valid_rank"]["NDCG@10"] for r in valid)
    assert best["step"] == min(r["step"] for r in valid if r["valid_rank"]["NDCG@10"] == best["value"])
    assert [r["step"] for r in lines if "loss" in r] == [1, 2, 3, 4, 5, 6]

    report = run_evaluate(EvaluateSpec(run=run, exclude_history=True))
    assert report["checkpoint"] == "best" and report["checkpoint_note"].startswith("best (the default: best valid NDCG@10")
    rec = report["tasks"]["rec"]
    assert rec["users"] > 0 and set(rec["popularity"]) == set(rec["metrics"])
    # the valid split under the same protocol measures what selection saw
    again = run_evaluate(EvaluateSpec(run=run, split="valid", exclude_history=True, checkpoint="best"))
    assert again["tasks"]["rec"]["metrics"]["NDCG@10"] == pytest.approx(best["value"], abs=1e-12)

    out = run_generate(GenerateSpec(run=run, user="3", k=5, html=tmp_path / "u.html"))
    assert len(out["recommendations"]) == 5 and out["checkpoint"] == "best"
    assert "softmax" in out["score"] and (tmp_path / "u.html").is_file()

    with pytest.raises(UnimpError, match="a sasrec run does rec only, not exp"):
        run_evaluate(EvaluateSpec(run=run, tasks=["rec", "exp"]))
    with pytest.raises(UnimpError, match="--decode beam needs a token model"):
        run_evaluate(EvaluateSpec(run=run, decode="beam"))
    with pytest.raises(UnimpError, match="a sasrec run does rec only, not search"):
        run_generate(GenerateSpec(run=run, user="3", task="search", query="x"))


@pytest.mark.parametrize("average_epochs", [0.0, 1.0])
def test_sasrec_resumes_after_a_crash_with_the_same_weights(sample_data, tmp_path, monkeypatch, average_epochs):
    """Also with a moving average of the weights (optim.average_epochs), which the checkpoints keep."""
    from unimp_core.model.sasrec import net as S
    from unimp_core.training.train import run_train

    straight = run_train(sasrec_spec(sample_data, tmp_path / "a", average_epochs, patience=0))
    real_loss, calls = S.loss, {"n": 0}

    def dies_at_step_5(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(S, "loss", dies_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        run_train(sasrec_spec(sample_data, tmp_path / "b", average_epochs))
    monkeypatch.setattr(S, "loss", real_loss)
    assert [p.name for _, p in RF.list_checkpoints(tmp_path / "b")] == ["step-2", "step-4"]
    resumed = run_train(sasrec_spec(sample_data, tmp_path / "b", average_epochs, resume=True))
    for name in (RF.FINAL, RF.BEST):
        a, b = weights(straight, name), weights(resumed, name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    def untimed(run):
        return [{k: v for k, v in r.items() if k != "samples_per_s"} for r in read_metrics(run)]

    assert untimed(straight) == untimed(resumed)


def test_early_stopping_and_selection_settings(sample_data, tmp_path):
    from unimp_core.training.train import run_train

    run = run_train(sasrec_spec(sample_data, tmp_path / "run", max_steps=40, eval_every=1, patience=1,
                                select_metric="hr@20"))
    valid = [r for r in read_metrics(run) if "valid_rank" in r]
    state = json.loads((run / RF.FINAL / RF.STATE).read_text())
    # stopped at the first validation that did not improve on the one before
    assert state["early_stopped"] and state["step"] == valid[-1]["step"] < 40
    assert valid[-1]["valid_rank"]["HR@20"] <= valid[-2]["valid_rank"]["HR@20"]
    assert RF.best_record(run)["metric"] == "HR@20"


def test_ce_validates_once_per_epoch_by_default(sample_data, tmp_path):
    from unimp_core.training.train import run_train

    spec = TrainSpec.model_validate({
        "model": {"family": "sasrec", "hidden": 16, "max_len": 10}, "data": {"path": str(sample_data)},
        "optim": {"batch_size": 16}, "run": {"out": str(tmp_path / "run"), "epochs": 2, "patience": 0}})
    valid = [r for r in read_metrics(run_train(spec)) if "valid_rank" in r]
    assert [r["epoch"] for r in valid] == [1.0, 2.0]


def test_sasrec_spec_refuses_what_does_not_apply(sample_data, tmp_path):
    base = {"model": {"family": "sasrec"}, "data": {"path": str(sample_data)}, "run": {"out": str(tmp_path)}}
    spec = TrainSpec.model_validate(base)
    assert (spec.optim.lr, spec.optim.batch_size, spec.run.epochs, spec.data.tasks) == (1e-3, 128, 200.0, ["rec"])
    assert spec.model.loss == "ce" and spec.run.eval_every is None and spec.run.patience == 10
    bce = TrainSpec.model_validate({**base, "model": {"family": "sasrec", "loss": "bce"}})
    assert (bce.run.epochs, bce.run.eval_every) == (250.0, 2000)
    assert TrainSpec.model_validate_json(spec.model_dump_json()) == spec  # a saved spec reads back
    for section, value, message in [("data", {"tasks": ["rec", "exp"]}, "SASRec trains task rec only"),
                                    ("data", {"history_len": 9}, "data.history_len does not apply to SASRec"),
                                    ("optim", {"gamma": 0.0}, "optim.gamma does not apply to SASRec"),
                                    ("optim", {"decay_scope": "all"}, "optim.decay_scope does not apply to SASRec"),
                                    ("run", {"select_metric": "auc"}, "use hr@K, ndcg@K or mrr@K")]:
        with pytest.raises(Exception, match=message):
            TrainSpec.model_validate({**base, section: {**base.get(section, {}), **value}})


def test_compare_runs_side_by_side(sample_data, tmp_path):
    from unimp_core.prepare import run_prepare
    from unimp_core.evaluation.compare import protocol_line, run_compare
    from unimp_core.specs.data import PrepareSpec
    from unimp_core.training.train import run_train

    a = run_train(sasrec_spec(sample_data, tmp_path / "a", max_steps=2))
    b = run_train(sasrec_spec(sample_data, tmp_path / "b", max_steps=2, select_users=0))  # no best/: final
    result = run_compare(EvaluateSpec(run=a, compare=[b], exclude_history=True, ks=[5, 10]))
    rec = result["tasks"]["rec"]
    assert [r["checkpoint"] for r in rec["runs"]] == ["best", "final"]
    for row in rec["runs"]:  # each run's own evaluation, with the same popularity and users
        saved = json.loads((Path(row["folder"]) / "metrics.json").read_text())["tasks"]["rec"]
        assert saved["metrics"] == row["metrics"] and saved["popularity"] == rec["popularity"]
        assert saved["by_popularity"] == row["by_popularity"]
        assert saved["popularity_by_popularity"] == rec["popularity_by_popularity"]
    p = rec["protocol"]
    assert p["history_excluded"] and p["split"] == "test" and p["users"] == saved["users"]
    assert protocol_line(p).startswith("protocol: test split (user-split), candidates: the whole catalogue (")

    other = run_prepare(PrepareSpec(datasets=["sample"], out=tmp_path / "other", cache_dir=tmp_path / "cache",
                                    sample_users=60, sample_items=30, user_core=5, item_core=3))
    c = run_train(sasrec_spec(other, tmp_path / "c", max_steps=1))
    with pytest.raises(UnimpError, match="another dataset"):
        run_compare(EvaluateSpec(run=a, compare=[c]))
    with pytest.raises(UnimpError, match="named twice"):
        run_compare(EvaluateSpec(run=a, compare=[a]))
    with pytest.raises(UnimpError, match="not exp"):
        run_compare(EvaluateSpec(run=a, compare=[b], tasks=["exp"]))
