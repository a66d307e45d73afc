"""The demo's own configuration end to end (slow): the bundled sample prepared with
examples/prepare-sample.yaml, the tiny model trained with examples/train-sample-tiny.yaml, evaluated.
The trained model must beat popularity clearly, rate, and explain: what `make demo` promises."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(3600)  # ~2 minutes of training on 2 idle cores; much more on a busy machine
def test_demo_config_trains_a_model_that_recommends(cli, tmp_path, one_thread):
    data, run = tmp_path / "data", tmp_path / "run"
    res = cli("prepare", "--config", REPO / "examples" / "prepare-sample.yaml", "--out", data,
              "--cache-dir", tmp_path / "cache")
    assert res.exit_code == 0, res.output + res.stderr
    res = cli("train", "--config", REPO / "examples" / "train-sample-tiny.yaml", "--data", data, "--out", run)
    assert res.exit_code == 0, res.output + res.stderr
    spec = json.loads((run / "train_spec.json").read_text())
    assert spec["model"]["preset"] == "tiny" and set(spec["data"]["tasks"]) == {"rec", "search", "exp", "img_sel"}

    res = cli("evaluate", "--run", run, "--json")
    assert res.exit_code == 0, res.output + res.stderr
    report = json.loads(res.stdout)
    rec = report["tasks"]["rec"]
    assert rec["users"] >= 20
    assert rec["metrics"]["HR@10"] >= 1.5 * rec["popularity"]["HR@10"] > 0, (rec["metrics"], rec["popularity"])
    assert report["tasks"]["search"]["metrics"]["HR@10"] > report["tasks"]["search"]["popularity"]["HR@10"]

    exp = report["tasks"]["exp"]
    assert exp["rating"]["scored"] > 0 and math.isfinite(exp["rating"]["RMSE"]) and 0 <= exp["rating"]["RMSE"] <= 4
    folder = Path(report["folder"])
    texts = [json.loads(line) for line in (folder / "predictions" / "exp.jsonl").read_text().splitlines()]
    assert texts and all(t["explanation"].strip() for t in texts)  # the model explains, every time
    assert math.isfinite(exp["explanation"]["BLEU-1"])

    sel = report["tasks"]["img_sel"]["metrics"]
    assert 0 <= sel["f1"] <= 1
