"""`unimp report` on the command line: one self-contained page about one or several runs, and its errors."""

from __future__ import annotations

import re

from tests.report.runs import EVALUATION, EXP_EVALUATION, exp_run, reported_run, second_run  # noqa: F401 (fixtures)


def test_report_of_two_runs_is_self_contained(cli, reported_run, exp_run, tmp_path):  # noqa: F811
    out = tmp_path / "report.html"
    res = cli("report", reported_run, exp_run, "--out", out)
    assert res.exit_code == 0, res.output
    assert res.output.strip() == f"report: {out}"
    page = out.read_text()
    charts = re.findall(r'data-chart="([^"]+)"', page)
    runs = [c for c in charts if c.startswith("run")]
    assert runs == ["run0-loss", "run0-lr", "run0-samples_per_s", "run0-valid",  # SASRec, rank validation
                    "run1-loss", "run1-lr", "run1-samples_per_s"]  # OpenFlamingo, none: no validation chart
    # the SASRec run's rec evaluation (evaluate writes the breakdown by target popularity); other tests of the
    # session may have added evaluations to the shared OpenFlamingo run, each with its own charts
    assert charts[len(runs):len(runs) + 2] == ["eval0-rec-bars", "eval0-rec-popularity"]
    assert all(src.startswith("data:image/") for src in re.findall(r"src=[\"']([^\"']*)", page))
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert f"evaluation {EVALUATION}" in page and f"evaluation {EXP_EVALUATION}" in page
    assert "protocol: test split" in page and "<th>popularity</th>" in page
    assert "best/ holds the weights of step" in page and "no rank validation in this run" in page
    assert "exp examples (run-6)" in page
    assert page.count("class='example'") == 2 and "generated:</b> rating" in page  # exp: two examples
    assert "rec by target-item popularity" in page


def test_runs_side_by_side_with_the_popularity_breakdown(cli, reported_run, second_run, tmp_path):  # noqa: F811
    out = tmp_path / "both.html"
    res = cli("report", reported_run, second_run, "--out", out, "--evaluation", EVALUATION)
    assert res.exit_code == 0, res.output
    page = out.read_text()
    assert "<th>run-sasrec</th><th>run-b</th><th>popularity</th>" in page
    assert 'data-chart="eval0-rec-popularity"' in page and "rec by target-item popularity" in page
    assert "<td>5-19</td>" in page and "<td>20+</td>" in page  # evaluate's buckets


def test_report_errors_are_one_line(cli, reported_run, tmp_path):  # noqa: F811
    res = cli("report", tmp_path, "--out", tmp_path / "r.html")
    assert res.exit_code == 1 and "not a run folder" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = cli("report", reported_run, "--evaluation", "final-valid", "--out", tmp_path / "r.html")
    assert res.exit_code == 1 and f"no evaluation final-valid (have: {EVALUATION})" in res.stderr
    res = cli("report", reported_run, "--out", tmp_path)
    assert res.exit_code == 1 and "a folder" in res.stderr
    res = cli("report", reported_run, reported_run, "--out", tmp_path / "r.html")
    assert res.exit_code == 1 and "named twice" in res.stderr
    assert not (tmp_path / "r.html").exists()
