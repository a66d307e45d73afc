"""What `unimp report` reads, built once per session and kept cheap: a SASRec run with rank validation
(so best/ is kept) evaluated on rec, and the shared tiny OpenFlamingo run (tests/evaluation/trained.py:
per-task losses) evaluated on exp (generated examples)."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.evaluation.trained import sample_dataset, trained_run

EVALUATION = "best-test-first6"  # the SASRec run's
EXP_EVALUATION = "final-test-first2"  # the OpenFlamingo run's


@pytest.fixture(scope="session")
def reported_run(tmp_path_factory):
    from unimp_core.evaluation.runner import run_evaluate
    from unimp_core.specs.evaluate import EvaluateSpec
    from unimp_core.specs.train import TrainSpec
    from unimp_core.training.train import run_train

    base = tmp_path_factory.getbasetemp() / "unimp-eval"
    base.mkdir(exist_ok=True)
    run = base / "run-sasrec"
    if not (run / "evaluations" / EVALUATION / "metrics.json").is_file():
        shutil.rmtree(run, ignore_errors=True)  # a half-built one from an interrupted session
        run_train(TrainSpec.model_validate({
            "model": {"family": "sasrec", "hidden": 16, "max_len": 10}, "data": {"path": str(sample_dataset(base))},
            "optim": {"batch_size": 16},
            "run": {"out": str(run), "max_steps": 8, "eval_every": 2, "save_every": 4, "log_every": 1}}))
        run_evaluate(EvaluateSpec(run=run, limit=6))
    return run


@pytest.fixture(scope="session")
def exp_run(tmp_path_factory):
    from unimp_core.evaluation.runner import run_evaluate
    from unimp_core.specs.evaluate import EvaluateSpec

    run = trained_run(tmp_path_factory)
    if not (run / "evaluations" / EXP_EVALUATION / "metrics.json").is_file():
        run_evaluate(EvaluateSpec(run=run, tasks=["exp"], limit=2, max_new_tokens=4))
    return run


@pytest.fixture
def second_run(reported_run, tmp_path):
    """A copy of the SASRec run (the files the report reads) whose rec evaluation's `by_popularity`
    breakdown ({bucket: {metric: value, "users": n}}, as evaluate writes it) has other numbers."""
    copy = tmp_path / "run-b"
    shutil.copytree(reported_run, copy, ignore=shutil.ignore_patterns("*.pt", "checkpoints"))
    path = copy / "evaluations" / EVALUATION / "metrics.json"
    report = json.loads(path.read_text())
    report["folder"] = str(path.parent)
    for bucket, row in report["tasks"]["rec"]["by_popularity"].items():
        row.update({k: (v / 2 if isinstance(v, float) else v) for k, v in row.items() if k != "users"})
    path.write_text(json.dumps(report))
    return copy
