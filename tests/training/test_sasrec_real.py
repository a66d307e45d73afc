"""SASRec and the unimp recipe on real data: the committed 3,000-user excerpt of the Amazon 2014 Beauty
sequences, and the whole file from ../shared (slow)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from tests.conftest import skip_unless_ci

ASSET = Path(__file__).resolve().parents[1] / "assets" / "amazon2014-seq" / "Beauty-first3000.txt"


def sequences_csv(lines: list[str], path: Path) -> Path:
    """`user item item ...` lines (time order) -> user,item,timestamp rows, timestamp = position."""
    rows = [(u, item, t) for u, *items in (line.split() for line in lines) for t, item in enumerate(items)]
    pl.DataFrame(rows, schema=["user", "item", "timestamp"], orient="row").write_csv(path)
    return path


@pytest.mark.slow
@pytest.mark.timeout(1800)  # about 2 minutes alone on 2 cores; far more on a machine shared with other jobs
def test_sasrec_beats_popularity_on_real_beauty_sequences(tmp_path):
    import torch

    from unimp_core.prepare import run_prepare
    from unimp_core.evaluation.runner import run_evaluate
    from unimp_core.specs.data import FilesSpec, PrepareSpec
    from unimp_core.specs.evaluate import EvaluateSpec
    from unimp_core.specs.train import TrainSpec
    from unimp_core.training.train import run_train

    torch.set_num_threads(1)
    csv = sequences_csv(ASSET.read_text().splitlines(), tmp_path / "beauty.csv")
    data = run_prepare(PrepareSpec(source="files", files=FilesSpec(interactions=csv, domain="beauty"),
                                   protocol="leave-one-out", user_core=5, item_core=5, images={"enabled": False},
                                   out=tmp_path / "beauty", cache_dir=tmp_path / "cache"))
    run = run_train(TrainSpec.model_validate({
        "model": {"family": "sasrec", "loss": "bce"}, "data": {"path": str(data)},
        "run": {"out": str(tmp_path / "run"), "epochs": 150, "eval_every": 135, "seed": 0}}))
    rec = run_evaluate(EvaluateSpec(run=run, exclude_history=True, ks=[10]))["tasks"]["rec"]
    assert rec["users"] > 1000
    model, popularity = rec["metrics"]["NDCG@10"], rec["popularity"]["NDCG@10"]
    assert model >= 1.3 * popularity, (model, popularity)


SHARED_BEAUTY = Path(__file__).resolve().parents[3] / "shared" / "data" / "amazon2014-seq" / "Beauty.txt"
RECIPE = Path(__file__).resolve().parents[2] / "examples" / "train-beauty-ids.yaml"


@pytest.mark.slow
@pytest.mark.timeout(3600)  # about 6 minutes alone on 2 cores; far more on a machine shared with other jobs
def test_unimp_recipe_and_sasrec_beat_popularity_on_real_beauty(tmp_path):
    """The whole Beauty file (22,363 users, the benchmark's data) on a short budget: the unimp recipe for 5
    epochs (its full run stops early near 60), SASRec (ce) for 4, both ranked on the first 3,000 test users
    against the whole catalogue (docs/benchmarks.md has the full runs).
    """
    import torch
    import yaml

    from unimp_core.prepare import run_prepare
    from unimp_core.evaluation.runner import run_evaluate
    from unimp_core.specs.data import FilesSpec, PrepareSpec
    from unimp_core.specs.evaluate import EvaluateSpec
    from unimp_core.specs.train import TrainSpec
    from unimp_core.training.train import run_train

    if not SHARED_BEAUTY.is_file():
        skip_unless_ci(f"{SHARED_BEAUTY} is missing (the shared data beside the checkout)")
    torch.set_num_threads(1)
    csv = sequences_csv(SHARED_BEAUTY.read_text().splitlines(), tmp_path / "beauty.csv")
    data = run_prepare(PrepareSpec(source="files", files=FilesSpec(interactions=csv, domain="beauty"),
                                   protocol="leave-one-out", user_core=5, item_core=5, images={"enabled": False},
                                   out=tmp_path / "beauty", cache_dir=tmp_path / "cache"))
    recipe = yaml.safe_load(RECIPE.read_text())
    recipe["data"]["path"] = str(data)
    recipe["run"].update(out=str(tmp_path / "unimp"), epochs=5, eval_every=10**6, select_users=1000, save_every=10**6)
    sasrec = {"model": {"family": "sasrec", "loss": "ce"}, "data": {"path": str(data)},
              "run": {"out": str(tmp_path / "sasrec"), "epochs": 4, "eval_every": 10**6, "select_users": 1000}}
    for spec in (recipe, sasrec):
        run = run_train(TrainSpec.model_validate(spec))
        rec = run_evaluate(EvaluateSpec(run=run, exclude_history=True, ks=[10], limit=3000))["tasks"]["rec"]
        assert rec["users"] == 3000
        model, popularity = rec["metrics"]["NDCG@10"], rec["popularity"]["NDCG@10"]
        assert model >= 2 * popularity, (spec["run"]["out"], model, popularity)
