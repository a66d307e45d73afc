"""`unimp evaluate` on the command line: dry run, errors, table and JSON output."""

from __future__ import annotations

import json

import pytest

from tests.evaluation.trained import trained_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return trained_run(tmp_path_factory)


def test_dry_run_resolves_config_and_flags(cli, tmp_path):
    cfg = tmp_path / "eval.yaml"
    cfg.write_text("split: valid\nks: [10, 1]\ndecode: beam\n")
    res = cli("evaluate", "--run", tmp_path, "--config", cfg, "--k", "5,1", "--tasks", "rec", "exp", "--dry-run")
    assert res.exit_code == 0, res.output
    spec = json.loads(res.output)
    assert spec["split"] == "valid" and spec["ks"] == [1, 5] and spec["decode"] == "beam"
    assert spec["tasks"] == ["rec", "exp"] and spec["checkpoint"] is None  # best if the run kept one, else final


def test_bad_options_are_one_line(cli, tmp_path):
    res = cli("evaluate", "--run", tmp_path, "--checkpoint", "latest")
    assert res.exit_code == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "checkpoint" in lines[0] and "step-N" in lines[0]
    res = cli("evaluate", "--run", tmp_path, "--tasks", "img_foo")
    assert res.exit_code == 1 and "tasks" in res.stderr
    res = cli("evaluate", "--run", tmp_path, "--k", "ten")
    assert res.exit_code != 0 and "--k" in res.output
    res = cli("evaluate", "--run", tmp_path)
    assert res.exit_code == 1 and res.stderr.strip().splitlines()[-1].startswith("error: ") and "not a run folder" in res.stderr


def test_unknown_checkpoint_names_the_existing_ones(cli, run):
    res = cli("evaluate", "--run", run, "--checkpoint", "step-999", "--tasks", "rec")
    assert res.exit_code == 1
    line = res.stderr.strip().splitlines()[-1]
    assert "step-999" in line and "step-3" in line and "final" in line


def test_table_and_json(cli, run):
    res = cli("evaluate", "--run", run, "--tasks", "rec", "--k", "1,10", "--limit", "5", "--batch-size", "2")
    assert res.exit_code == 0, res.output
    table = res.output
    assert "popularity" in res.output and "HR" in res.output and "@10" in res.output and "SYNTHETIC" in res.output
    assert "by the target's interactions in the training data" in res.output
    assert "final-test-first5/metrics.json" in res.output and "final-test-first5/report.html" in res.output
    page = (run / "evaluations" / "final-test-first5" / "report.html").read_text()
    assert "final-test-first5" in page and page.count('class="chart"') >= 3  # loss, lr, samples/s, rec's bars
    res = cli("evaluate", "--run", run, "--tasks", "rec", "--k", "1,10", "--limit", "5", "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["tasks"]["rec"]["users"] == 5 and set(report["tasks"]["rec"]["metrics"]) == {
        "HR@1", "HR@10", "NDCG@1", "NDCG@10", "MRR@1", "MRR@10"}
    saved = json.loads((run / "evaluations" / "final-test-first5" / "metrics.json").read_text())
    assert saved["tasks"]["rec"]["metrics"] == report["tasks"]["rec"]["metrics"]
    by = report["tasks"]["rec"]["by_popularity"]
    assert saved["tasks"]["rec"]["by_popularity"] == by and list(by) == ["<5", "5-19", "20+"]
    assert sum(b["users"] for b in by.values()) == 5
    for label, b in by.items():  # the terminal table names each bucket with its users
        assert set(b) == {"users", "HR@1", "HR@10", "NDCG@1", "NDCG@10", "MRR@1", "MRR@10"}
        assert f"{label} ({b['users']:,} users)" in table


def test_beam_decoding_from_the_command_line(cli, run):
    exact = json.loads(cli("evaluate", "--run", run, "--tasks", "rec", "--limit", 6, "--json").stdout)
    res = cli("evaluate", "--run", run, "--tasks", "rec", "--limit", 6, "--decode", "beam", "--json")
    assert res.exit_code == 0, res.output
    beam = json.loads(res.stdout)
    assert beam["folder"].endswith("final-test-beam-first6") and beam["spec"]["decode"] == "beam"
    for k in (1, 5, 10):  # constrained 10-beam search finds the exact top 10
        assert beam["tasks"]["rec"]["metrics"][f"HR@{k}"] == pytest.approx(exact["tasks"]["rec"]["metrics"][f"HR@{k}"])
    assert beam["tasks"]["rec"]["metrics"]["HR@20"] is None  # beyond the beams: not a number


def test_step_checkpoint_on_the_validation_split(cli, run):
    import polars as pl

    res = cli("evaluate", "--run", run, "--checkpoint", "step-3", "--split", "valid", "--tasks", "rec", "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["checkpoint"] == "step-3" and report["split"] == "valid"
    folder = run / "evaluations" / "step-3-valid"
    assert report["folder"] == str(folder) and (folder / "metrics.json").is_file()
    data = json.loads((run / "train_spec.json").read_text())["data"]["path"]
    valid = set(pl.read_parquet(f"{data}/users.parquet").filter(pl.col("split") == "valid")["user_id"].to_list())
    users = [json.loads(line)["user_id"] for line in (folder / "predictions" / "rec.jsonl").read_text().splitlines()]
    assert users and set(users) <= valid and report["tasks"]["rec"]["users"] == len(users)
