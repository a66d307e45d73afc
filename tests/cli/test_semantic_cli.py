"""Semantic item ids through the command line: a tiny run trained, evaluated (exact and beam), asked for
recommendations (terminal, HTML, the server) on the bundled sample with item codes; and the refusals."""

from __future__ import annotations

import json

import pytest

from tests.cli.test_train_cli import one_error_line
from tests.item_codes import write_item_codes
from tests.training.conftest import make_spec, write_config


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from unimp_core.prepare import run_prepare
    from unimp_core.specs.data import PrepareSpec

    root = tmp_path_factory.mktemp("cli-semantic")
    kw = dict(cache_dir=root / "cache", sample_users=60, sample_items=30, user_core=5, item_core=3)
    coded = run_prepare(PrepareSpec(datasets=["sample"], out=root / "coded", **kw))
    write_item_codes(coded, levels=2, codes=4)
    plain = run_prepare(PrepareSpec(datasets=["sample"], out=root / "plain", **kw))
    return coded, plain


@pytest.fixture(scope="module")
def run(cli_module, data, tmp_path_factory):
    coded, _ = data
    tmp = tmp_path_factory.mktemp("semantic-run")
    config = write_config(make_spec(coded, tmp / "unused", data={"tasks": ["rec", "search", "img_sel"]},
                                    run={"max_steps": 3, "eval_every": 3, "save_every": 3}), tmp / "spec.yaml")
    res = cli_module("train", "--config", config, "--out", tmp / "run", "--item-ids", "semantic")
    assert res.exit_code == 0, res.output + res.stderr
    return tmp / "run"


@pytest.fixture(scope="module")
def cli_module():
    from typer.testing import CliRunner

    from unimp_cli.app import app
    from unimp_cli.common import expand_multi

    runner = CliRunner()
    return lambda *args: runner.invoke(app, expand_multi([str(a) for a in args]))


def test_the_run_keeps_its_semantic_ids(run, data):
    spec = json.loads((run / "train_spec.json").read_text())["model"]
    assert spec["item_ids"] == "semantic" and spec["item_codes"]["levels"] == 2
    assert (run / "item_codes.npy").is_file()
    vocab = json.loads((run / "tokenizer" / "tokenizer.json").read_text())["added_tokens"]
    names = [t["content"] for t in vocab]
    assert "<a_3>" in names and "<c_0>" in names and not any(n.startswith("item_") for n in names)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("valid_rank" in r for r in records)  # rank validation scored every item's code path


def test_evaluate_exactly_and_by_constrained_beam(cli, run):
    res = cli("evaluate", "--run", run, "--tasks", "rec", "search", "--exclude-history", "--json")
    assert res.exit_code == 0, res.output + res.stderr
    rank = json.loads(res.stdout)["tasks"]
    assert rank["rec"]["users"] > 0 and rank["rec"]["decode"] == "rank" and rank["search"]["users"] > 0
    lines = [json.loads(line) for line in (run / "evaluations" / "best-test-exclude-history" / "predictions"
                                           / "rec.jsonl").read_text().splitlines()]
    for rec in lines:
        assert rec["target"] in [i for i, _ in rec["top"]] or rec["rank"] >= len(rec["top"])
    res = cli("evaluate", "--run", run, "--tasks", "rec", "--decode", "beam", "--num-beams", "30",
              "--exclude-history", "--json")
    assert res.exit_code == 0, res.output + res.stderr
    beam = json.loads(res.stdout)["tasks"]["rec"]
    # 30 beams hold every prefix of this 30-item catalogue: the same ranks as the exact ranking
    assert beam["metrics"]["HR@10"] == rank["rec"]["metrics"]["HR@10"]
    assert beam["metrics"]["NDCG@20"] == pytest.approx(rank["rec"]["metrics"]["NDCG@20"])


def test_generate_and_serve_show_items(cli, run, tmp_path):
    from unimp_core.serve.api import RecommendRequest
    from unimp_core.serve.engine import Engine
    from unimp_core.specs.serve import ServeSpec

    page = tmp_path / "user.html"
    res = cli("generate", "--run", run, "--user", "1", "--k", "5", "--html", page, "--json")
    assert res.exit_code == 0, res.output + res.stderr
    result = json.loads(res.stdout)
    recs = result["recommendations"]
    assert len(recs) == 5 and all(r["title"] for r in recs) and "code path" in result["score"]
    assert 0 < sum(r["score"] for r in recs) <= 1.0001
    assert recs[0]["title"] in page.read_text()
    engine = Engine.load(ServeSpec(run=run))
    [served] = engine.rank([engine.ask("rec", RecommendRequest(user=1, k=5))])
    assert [r["item_id"] for r in served["recommendations"]] == [r["item_id"] for r in recs]


def test_refusals_are_one_line(cli, data, tmp_path):
    coded, plain = data
    config = write_config(make_spec(plain, tmp_path / "unused"), tmp_path / "spec.yaml")
    line = one_error_line(cli("train", "--config", config, "--out", tmp_path / "r", "--item-ids", "semantic"))
    assert "no item codes" in line and "unimp tokenize-items" in line and not (tmp_path / "r").exists()
    line = one_error_line(cli("train", "--data", coded, "--model", "sasrec", "--out", tmp_path / "s",
                              "--item-ids", "semantic"))
    assert "SASRec" in line
    line = one_error_line(cli("train", "--config", config, "--out", tmp_path / "r", "--item-ids", "codes"))
    assert "item_ids" in line
    res = cli("train", "--config", config, "--out", tmp_path / "r", "--item-ids", "atomic", "--dry-run")
    assert res.exit_code == 0 and json.loads(res.stdout)["model"]["item_ids"] == "atomic"


def test_a_run_from_before_item_ids_is_one_clear_error(cli, data, tmp_path):
    _, plain = data
    config = write_config(make_spec(plain, tmp_path / "unused", data={"tasks": ["rec"]},
                                    run={"max_steps": 2, "save_every": 1, "select_users": 0}), tmp_path / "spec.yaml")
    run = tmp_path / "old"
    assert cli("train", "--config", config, "--out", run).exit_code == 0
    for name in ("train_spec.json", "model.json"):  # as an older unimp wrote them
        saved = json.loads((run / name).read_text())
        spec = saved["model"] if name == "train_spec.json" else saved["spec"]
        del spec["item_ids"], spec["item_codes"]
        (run / name).write_text(json.dumps(saved))
    for args in (["train", "--config", run / "train_spec.json", "--out", run, "--max-steps", 3, "--resume"],
                 ["finetune", "--from", run, "--out", tmp_path / "ft", "--max-steps", 1],
                 ["evaluate", "--run", run, "--limit", 2]):
        res = cli(*args)
        assert res.exit_code == 1, res.output + res.stderr
        line = res.stderr.strip().splitlines()[-1]
        assert "item ids are not named" in line and "older than" in line and "train the run again" in line, line
