from contextlib import contextmanager

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from unimp_core.errors import UnimpError
from unimp_core.imagegen import vq as vqlib
from unimp_core.imagegen.codes import read_vq_meta
from unimp_core.imagegen.vq import CODEBOOK_SCHEDULE, VQ, kmeans, load_vq, save_vq, train_vq
from unimp_core.training.optim import lr_at
from unimp_core.progress import Progress
from unimp_core.specs.images import CodebookSpec

RES = 16
SPEC = CodebookSpec(size=32, dim=4, factor=4, width=8, steps=10, save_every=3, restart_every=4)


def shapes(n: int, size=(RES, RES)) -> list:
    """Coloured rectangles on white: simple, varied images."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        img = Image.new("RGB", size, (255, 255, 255))
        x0, y0 = rng.integers(0, size[0] // 2), rng.integers(0, size[1] // 2)
        ImageDraw.Draw(img).rectangle([x0, y0, x0 + size[0] // 2, y0 + size[1] // 2],
                                      fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
        out.append(img)
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    ck = tmp_path_factory.mktemp("ck") / "train.pt"
    images = vqlib.to_uint8(shapes(24), RES)  # (24, 3, 16, 16)
    model, stats = train_vq(images, SPEC, RES, 8, "cpu", ck, "key")
    return model, stats, images


def test_round_trip_sizes_and_stable_codes(trained):
    model, stats, _ = trained
    tok = VQ(model, RES)
    assert (tok.grid, tok.codebook_size, tok.resolution, tok.codes_per_image) == (4, 32, RES, 16)
    imgs = shapes(3, size=(40, 24))  # not square, not the model's size: padded and resized
    codes = tok.encode(imgs)
    assert codes.shape == (3, 16) and codes.dtype == torch.long
    assert int(codes.min()) >= 0 and int(codes.max()) < 32
    out = tok.decode(codes)
    assert len(out) == 3 and all(o.size == (RES, RES) and o.mode == "RGB" for o in out)
    assert torch.equal(tok.encode(imgs), codes)  # deterministic
    assert torch.equal(tok.encode(imgs[1:2]), codes[1:2])  # independent of the rest of the batch
    assert stats["steps"] == SPEC.steps and stats["train_images"] == 24


def test_decode_rejects_bad_codes(trained):
    tok = VQ(trained[0], RES)
    with pytest.raises(ValueError, match=r"\(B, 16\)"):
        tok.decode(torch.zeros(2, 15, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 32\)"):
        tok.decode(torch.full((1, 16), 32))
    with pytest.raises(UnimpError, match="multiple"):
        VQ(trained[0], 18)


def test_save_and_load_round_trip(trained, tmp_path):
    model, _, _ = trained
    digest = save_vq(model, tmp_path / "vq", {"resolution": RES, "tokenizer": {"kind": "trained"}})
    assert (tmp_path / "vq" / "config.json").is_file() and not (tmp_path / ".vq.tmp").exists()
    assert read_vq_meta(tmp_path / "vq")["weights_sha256"] == digest == vqlib.weights_sha256(tmp_path / "vq")
    loaded = load_vq(tmp_path, device="cpu")  # a dataset-like folder holding vq/
    imgs = shapes(4)
    assert torch.equal(loaded.encode(imgs), VQ(model, RES).encode(imgs))
    assert loaded.resolution == RES
    # saving again replaces the folder atomically and keeps the same hash for the same weights
    assert save_vq(model, tmp_path / "vq", {"resolution": RES}) == digest
    with pytest.raises(UnimpError, match="tokenize-images"):
        load_vq(tmp_path / "nothing")


class Interrupt(Progress):
    """Raises KeyboardInterrupt once `after` steps of `desc` have been reported."""

    def __init__(self, desc: str, after: int) -> None:
        super().__init__()
        self.desc, self.after, self.seen = desc, after, 0

    @contextmanager
    def task(self, description, total=None):
        def advance(n=1, info=None):
            if description == self.desc:
                self.seen += n
                if self.seen > self.after:
                    raise KeyboardInterrupt

        yield advance


def test_training_resumes_to_the_same_weights(trained, tmp_path):
    model, _, images = trained
    ck = tmp_path / "train.pt"
    with pytest.raises(KeyboardInterrupt):
        train_vq(images, SPEC, RES, 8, "cpu", ck, "key", Interrupt("training the codebook", 7))
    assert torch.load(ck, weights_only=True)["step"] == 6  # checkpoints every 3 steps
    resumed, _ = train_vq(images, SPEC, RES, 8, "cpu", ck, "key")
    for (name, a), b in zip(model.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    # a checkpoint of another configuration is ignored (training starts over)
    other, _ = train_vq(images, SPEC, RES, 8, "cpu", ck, "other-key")
    assert torch.equal(other.quantize.embedding.weight, model.quantize.embedding.weight)


def test_lr_schedule():
    def lr(step):
        return lr_at(step, 100, 1.0, **CODEBOOK_SCHEDULE)

    assert [lr(s) for s in range(6)] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])  # warmup of 5 steps
    assert lr(100) == pytest.approx(0.1)
    mid = 5 + (100 - 5) // 2
    assert lr(mid) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * (mid - 5) / 95)))


def test_kmeans_finds_blobs():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(200, 2, generator=g) * 0.1 + torch.tensor([5.0, 0.0])
    b = torch.randn(200, 2, generator=g) * 0.1 + torch.tensor([-5.0, 3.0])
    centres = kmeans(torch.cat([a, b]), 2, generator=torch.Generator().manual_seed(1))
    centres = centres[centres[:, 0].argsort()]
    assert torch.allclose(centres[0], b.mean(0), atol=1e-4) and torch.allclose(centres[1], a.mean(0), atol=1e-4)
    # fewer points than centres: still k centres, all near the data
    few = kmeans(torch.tensor([[0.0, 0.0], [1.0, 1.0]]), 4, generator=g)
    assert few.shape == (4, 2) and float(few.abs().max()) < 1.1


def test_restart_dead_codes_moves_only_unused(trained):
    model = vqlib.build_vq_model(SPEC, RES)
    before = model.quantize.embedding.weight.detach().clone()
    usage = torch.ones(32, dtype=torch.long)
    usage[[3, 7]] = 0
    latents = torch.full((10, 4), 9.0)
    assert vqlib.restart_dead_codes(model, usage, latents, torch.Generator().manual_seed(0)) == 2
    after = model.quantize.embedding.weight.detach()
    changed = (after != before).any(1).nonzero().flatten().tolist()
    assert changed == [3, 7] and torch.allclose(after[3], torch.full((4,), 9.0), atol=0.01)
