"""End to end on the sample shop: prepare -> tokenize-images -> train `rec img_gen` -> evaluate -> generate a PNG."""

from __future__ import annotations

import io
import json

import pytest

TOKENIZE = ["--resolution", 16, "--factor", 4, "--width", 8, "--codebook-size", 32, "--codebook-dim", 4,
            "--steps", 8, "--batch-size", 8]


@pytest.fixture
def cli():
    """`unimp ARGS...` in-process (as tests/cli/conftest.py)."""
    from typer.testing import CliRunner

    from unimp_cli.app import app
    from unimp_cli.common import expand_multi

    runner = CliRunner()
    return lambda *args: runner.invoke(app, expand_multi([str(a) for a in args]))


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    from unimp_core.data.prepare import run_prepare
    from unimp_core.specs.data import PrepareSpec

    base = tmp_path_factory.mktemp("img-gen")
    return run_prepare(PrepareSpec(datasets=["sample"], out=base / "ds", cache_dir=base / "cache",
                                   sample_users=60, sample_items=30, user_core=3, item_core=2))


def test_training_img_gen_needs_image_codes(cli, sample, tmp_path):
    res = cli("train", "--data", sample, "--tasks", "rec", "img_gen", "--out", tmp_path / "run", "--max-steps", 1)
    assert res.exit_code == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "run `unimp tokenize-images --data" in lines[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_tokenize_train_evaluate_generate(cli, sample, tmp_path):
    from PIL import Image

    assert cli("tokenize-images", "--data", sample, *TOKENIZE).exit_code == 0
    run = tmp_path / "run"
    res = cli("train", "--data", sample, "--tasks", "rec", "img_gen", "--out", run, "--max-steps", 4,
              "--batch-size", 8, "--valid-users", 4)
    assert res.exit_code == 0, res.output
    spec = json.loads((run / "train_spec.json").read_text())
    assert spec["model"]["image_gen_codes"] == 32  # from the dataset's manifest, not hand-set
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert "img_gen" in log[-2]["task_loss"] and "img_gen" in log[-1]["valid_loss"]

    res = cli("evaluate", "--run", run, "--tasks", "img_gen", "--batch-size", 8, "--image-pairs", 3, "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    ig = report["tasks"]["img_gen"]
    assert ig["users"] > 0 and ig["codes_per_image"] == 16 and ig["grid"] == 4
    assert 0 <= ig["metrics"]["code_accuracy"] <= 1 and ig["metrics"]["psnr"] > 0 and -1 <= ig["metrics"]["ssim"] <= 1
    assert ig["fid"]["available"] is False and "FID unavailable" in ig["fid"]["message"] and "value" not in ig["fid"]
    folder = run / "evaluations" / "final-test"
    pairs = sorted((folder / "images").glob("*.png"))
    assert len(pairs) == min(3, ig["users"])
    assert Image.open(pairs[0]).size == (36, 16)
    preds = [json.loads(line) for line in (folder / "predictions" / "img_gen.jsonl").read_text().splitlines()]
    assert len(preds) == ig["users"] and all(len(p["codes"]) == 16 and max(p["codes"]) < 32 for p in preds)

    out, page = tmp_path / "img.png", tmp_path / "page.html"
    res = cli("generate", "--run", run, "--user", 1, "--task", "img_gen", "--query", "red dress", "--out", out,
              "--html", page)
    assert res.exit_code == 0, res.output
    img = Image.open(io.BytesIO(out.read_bytes()))
    assert img.format == "PNG" and img.size == (16, 16)
    html = page.read_text()
    assert "Generated image for “red dress”" in html and html.count("data:image/png;base64,") >= 1

    # `unimp serve` answers POST /v1/image with the same PNG
    import asyncio

    from aiohttp.test_utils import TestClient, TestServer

    from unimp_core.serve.app import build_app
    from unimp_core.serve.engine import Engine
    from unimp_core.specs.serve import ServeSpec

    async def served():
        spec = ServeSpec(run=run)
        async with TestClient(TestServer(build_app(spec, Engine.load(spec)))) as client:
            res = await client.post("/v1/image", json={"user": 1, "query": "red dress"})
            return res.status, res.content_type, await res.read()

    status, ctype, png = asyncio.run(served())
    assert (status, ctype) == (200, "image/png") and png == out.read_bytes()
