"""img_gen evaluation pieces: constrained decoding gives exactly N code tokens; pure metrics; FID's status."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from unimp_core.errors import UnimpError
from unimp_core.evaluation import image_gen as IG
from unimp_core.model.openflamingo import decode

N_CODES, CODEBOOK = 6, 12


@pytest.fixture(scope="module")
def bundle():
    from tests.model.conftest import make_dataset
    from unimp_core.model.openflamingo.factory import build_model
    from unimp_core.model.openflamingo.spec import ModelSpec

    return build_model(ModelSpec(image_gen_codes=CODEBOOK), items_text=make_dataset(10), n_items=10)


def _batch(bundle, prompts: list[str]):
    from unimp_core.tasks import Sample
    from unimp_core.training.collate import make_collator

    shape = (3, bundle.image_size, bundle.image_size)
    collate = make_collator(bundle.tokenizer, padding_side="left", images=lambda item: torch.zeros(shape),
                            image_shape=shape)
    return collate([Sample("img_gen", p, []) for p in prompts])


@pytest.mark.parametrize("beams", [1, 3])
def test_constrained_generation_gives_exactly_n_valid_codes(bundle, beams):
    ids = bundle.ids
    # a text prompt whose unconstrained continuation would not be image codes
    batch = _batch(bundle, ["Query: red What is the generated image ID? <answer>",
                            "ID img_3 img_4 <|endofchunk|> Query: a longer query here <answer>"])
    codes = IG.generate_codes(decode, bundle.model.eval(), batch, ids.image_codes, N_CODES, eoc_id=ids.eoc, pad_id=ids.pad,
                              num_beams=beams)
    assert codes.shape == (2, N_CODES) and codes.dtype == torch.long
    assert int(codes.min()) >= 0 and int(codes.max()) < CODEBOOK


def test_tokens_to_codes_maps_and_refuses_strangers():
    code_ids = torch.tensor([50, 51, 52, 60])
    assert IG.tokens_to_codes(torch.tensor([[60, 50, 52]]), code_ids).tolist() == [[3, 0, 2]]
    with pytest.raises(UnimpError, match="outside the image codebook"):
        IG.tokens_to_codes(torch.tensor([[50, 7]]), code_ids)
    with pytest.raises(UnimpError, match="no img_"):
        IG.code_constraint([])


def test_code_accuracy_by_hand():
    assert IG.code_accuracy([1, 2, 3, 4], [1, 0, 3, 0]) == 0.5
    assert IG.code_accuracy([5], [5]) == 1.0
    with pytest.raises(ValueError, match=r"differ in length or are empty: \(2,\) vs \(1,\)"):
        IG.code_accuracy([1, 2], [1])
    with pytest.raises(ValueError, match="empty"):
        IG.code_accuracy([], [])


def test_frechet_distance_by_hand():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 3))
    assert IG.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    # same covariance, means 2 apart in every one of 3 dimensions: distance = 3 * 2^2
    assert IG.frechet_distance(a, a + 2.0) == pytest.approx(12.0, abs=1e-6)


def test_fid_is_unavailable_without_local_weights(tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    imgs = [Image.new("RGB", (16, 16), (i * 40, 0, 0)) for i in range(3)]
    report = IG.fid_report(imgs, imgs)
    assert report["available"] is False and "value" not in report
    assert "FID unavailable" in report["message"] and "Inception" in report["message"]


def test_pair_png_is_side_by_side():
    from PIL import Image

    png = IG.pair_png(Image.new("RGB", (16, 16), (255, 0, 0)), Image.new("RGB", (32, 32), (0, 0, 255)))
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.size == (36, 16)
    assert img.getpixel((0, 0)) == (255, 0, 0) and img.getpixel((35, 15)) == (0, 0, 255)


def test_fid_runs_with_a_feature_network(tmp_path, monkeypatch):
    """The FID code path with a small stand-in for Inception: identical sets score 0, different ones more."""
    from PIL import Image

    from tests.test_img_gen_e2e import standin_features

    monkeypatch.setattr(IG, "load_inception", lambda: (standin_features(), ""))
    rng = np.random.default_rng(0)
    noise = [Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)) for _ in range(6)]
    dark = [Image.fromarray((np.asarray(im) // 4).astype(np.uint8)) for im in noise]
    same = IG.fid_report(noise, noise)
    assert same["available"] is True and same["images"] == 6 and same["value"] == pytest.approx(0.0, abs=1e-5)
    other = IG.fid_report(noise, dark)
    assert other["available"] is True and other["value"] > 0.01


def test_unreadable_inception_file_is_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / IG.INCEPTION_FILE).write_bytes(b"not a checkpoint")
    net, why = IG.load_inception()
    assert net is None and why.startswith("FID unavailable: cannot load") and "\n" not in why
