"""End to end on the sample shop: prepare -> tokenize-images -> train `rec img_gen` -> evaluate -> generate a PNG."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

TOKENIZE = ["--resolution", 16, "--factor", 4, "--width", 8, "--codebook-size", 32, "--codebook-dim", 4,
            "--steps", 8, "--batch-size", 8]


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    from unimp_core.prepare import run_prepare
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


def standin_features():
    """A small fixed network standing in for Inception v3 (whose weights are not downloaded here):
    (N, 3, 299, 299) -> (N, 4) features, so the FID code runs end to end."""
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 23, stride=23), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten()).eval()


def _halves(path):
    """A generated|true pair PNG -> the two images (4 px gap between them)."""
    from PIL import Image

    with Image.open(path) as pair:
        w = (pair.width - 4) // 2
        return pair.crop((0, 0, w, pair.height)).convert("RGB"), pair.crop((w + 4, 0, 2 * w + 4, pair.height)).convert("RGB")


@pytest.mark.slow
def test_tokenize_train_evaluate_generate(cli, sample, tmp_path, monkeypatch):
    import numpy as np
    import torch
    from PIL import Image
    from scipy import linalg

    from unimp_core.evaluation import image_gen as IG

    # FID: no Inception weights are looked up in the user's cache; a stand-in network runs the FID code
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    net = standin_features()
    monkeypatch.setattr(IG, "load_inception", lambda: (net, ""))

    assert cli("tokenize-images", "--data", sample, *TOKENIZE).exit_code == 0
    run = tmp_path / "run"
    res = cli("train", "--data", sample, "--tasks", "rec", "img_gen", "--out", run, "--max-steps", 4,
              "--batch-size", 8, "--valid-users", 4)
    assert res.exit_code == 0, res.output
    spec = json.loads((run / "train_spec.json").read_text())
    assert spec["model"]["image_gen_codes"] == 32  # from the dataset's manifest, not hand-set
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert "img_gen" in [r for r in log if "task_loss" in r][-1]["task_loss"]
    assert "img_gen" in [r for r in log if "valid_loss" in r][-1]["valid_loss"]

    res = cli("evaluate", "--run", run, "--tasks", "img_gen", "--batch-size", 8, "--image-pairs", 1000, "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    ig = report["tasks"]["img_gen"]
    assert ig["users"] > 0 and ig["codes_per_image"] == 16 and ig["grid"] == 4
    folder = Path(report["folder"])  # best-test or final-test: evaluate's default weights
    preds = [json.loads(line) for line in (folder / "predictions" / "img_gen.jsonl").read_text().splitlines()]
    assert len(preds) == ig["users"] and all(len(p["codes"]) == 16 and max(p["codes"]) < 32 for p in preds)
    assert ig["metrics"]["code_accuracy"] == pytest.approx(
        np.mean([np.mean(np.array(p["codes"]) == np.array(p["true_codes"])) for p in preds]))

    # PSNR from the saved pairs (every scored instance has one), by hand
    pairs = sorted((folder / "images").glob("*.png"))
    assert len(pairs) == ig["scored_images"] >= 2
    assert Image.open(pairs[0]).size == (36, 16)
    generated, true = zip(*(_halves(p) for p in pairs))
    unit = lambda img: np.asarray(img, dtype=np.float64) / 255  # noqa: E731
    mse = [np.mean((unit(g) - unit(t)) ** 2) for g, t in zip(generated, true)]
    psnr = np.mean([min(10 * np.log10(1 / m), 100.0) if m else 100.0 for m in mse])
    assert ig["metrics"]["psnr"] == pytest.approx(psnr, abs=1e-6)
    assert ig["metrics"]["psnr"] > 6.0  # decoded codes are pictures: well above noise vs. the truth
    assert -1 <= ig["metrics"]["ssim"] <= 1 and ig["vq_reconstruction"]["psnr"] > 6.0

    # FID from the same pairs through the stand-in network, the Fréchet distance by hand
    assert ig["fid"]["available"] is True and ig["fid"]["images"] == len(pairs)
    fa, fb = IG.inception_features(net, generated), IG.inception_features(net, true)  # (N, 4)
    ca, cb = np.cov(fa, rowvar=False), np.cov(fb, rowvar=False)
    fid = ((fa.mean(0) - fb.mean(0)) ** 2).sum() + np.trace(ca + cb) - 2 * np.trace(np.real(linalg.sqrtm(ca @ cb)))
    assert ig["fid"]["value"] == pytest.approx(fid, rel=1e-4, abs=1e-6) and ig["fid"]["value"] > 0

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
