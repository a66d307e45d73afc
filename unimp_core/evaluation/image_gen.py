"""img_gen: generate exactly one image's worth of code tokens, decode them, and score the pictures.

    codes = generate_codes(setup.decoder, model, batch, ids.image_codes, n_codes=16, eoc_id=..., pad_id=...)  # (B, 16)
    images = vq.decode(codes)                                                                 # PIL images

Generation is constrained: every step may only emit an `img_<k>` token (prefix_allowed_tokens_fn) and
exactly `n_codes` of them are produced (min = max new tokens), so every output decodes to an image.
Scores: code accuracy (share of grid positions equal to the target's code), PSNR and SSIM against the
true item image at the VQ resolution, and FID only when Inception weights are on this machine (a
message saying why not otherwise, never a made-up number).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..errors import UnimpError

# torchvision's ImageNet Inception v3 weights, looked up in the local torch hub cache only (no download)
INCEPTION_FILE = "inception_v3_google-0cc3c7bd.pth"
FID_MIN_IMAGES = 2


def code_constraint(code_ids: Sequence[int]) -> Callable[[int, torch.Tensor], list[int]]:
    """A `prefix_allowed_tokens_fn` allowing only the image-code tokens, at every step."""
    allowed = [int(t) for t in code_ids]
    if not allowed:
        raise UnimpError("img_gen: the model has no img_<k> tokens (train it with --tasks img_gen)")
    return lambda batch_id, input_ids: allowed


def tokens_to_codes(tokens: torch.Tensor, code_ids: torch.Tensor) -> torch.Tensor:
    """Generated token ids (B, n) -> codebook indices (B, n); raises if any is not a code token."""
    lookup = torch.full((int(max(int(code_ids.max()), int(tokens.max())) + 1),), -1, dtype=torch.long)
    lookup[code_ids.cpu()] = torch.arange(code_ids.numel())
    codes = lookup[tokens.cpu().long()]
    if (codes < 0).any():
        raise UnimpError("img_gen: generation produced a token outside the image codebook")
    return codes


def generate_codes(decoder, model, batch: dict[str, Any], code_ids: torch.Tensor, n_codes: int, *, eoc_id: int,
                   pad_id: int, num_beams: int = 1, precision: str = "fp32") -> torch.Tensor:
    """Exactly `n_codes` image codes per prompt (greedy, or the best of `num_beams` beams): (B, n_codes) long.
    `decoder`: the run's token decoding (`Setup.decoder`)."""
    seqs, _ = decoder.generate(model, batch, max_new_tokens=n_codes, min_new_tokens=n_codes, eos_id=eoc_id,
                               pad_id=pad_id, num_beams=num_beams, num_return=1,
                               allowed=code_constraint(code_ids.tolist()), precision=precision)  # (B, n_codes)
    if seqs.shape[1] != n_codes:
        raise UnimpError(f"img_gen: generated {seqs.shape[1]} tokens instead of {n_codes}")
    return tokens_to_codes(seqs, code_ids)


def code_accuracy(predicted: Sequence[int], true: Sequence[int]) -> float:
    """Share of grid positions where the predicted code equals the target's."""
    a, b = np.asarray(predicted), np.asarray(true)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"code sequences differ in length or are empty: {a.shape} vs {b.shape}")
    return float(np.mean(a == b))


def true_image(root: Path, rel: str | None, resolution: int):
    """The item's picture squared and resized to the VQ resolution (None when unreadable)."""
    from ..imagegen.vq import open_image, square
    from ..io import safe_join

    if not rel:
        return None
    img = open_image(safe_join(root, rel))
    return None if img is None else square(img, resolution)


def pair_png(generated, true) -> bytes:
    """One PNG: the generated image on the left, the true one on the right (4 px white gap)."""
    from PIL import Image

    w, h = generated.size
    canvas = Image.new("RGB", (2 * w + 4, h), (255, 255, 255))
    canvas.paste(generated, (0, 0))
    canvas.paste(true.resize((w, h)), (w + 4, 0))
    return png_bytes(canvas)


def png_bytes(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------ FID


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets a (N, D) and b (M, D)."""
    from scipy import linalg

    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = np.real(linalg.sqrtm(np.atleast_2d(cov_a) @ np.atleast_2d(cov_b)))
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean))


def load_inception() -> tuple[Any, str]:
    """(Inception v3 feature extractor, "") when its weights are in the local torch hub cache, else (None, why)."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
    if not path.is_file():
        return None, (f"FID unavailable: Inception v3 weights not found at {path} (no download is attempted; "
                      "put torchvision's inception_v3 ImageNet weights there to get FID)")
    try:
        from torchvision.models import inception_v3

        net = inception_v3(weights=None, aux_logits=True, init_weights=False)
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        net.fc = torch.nn.Identity()  # 2048-d pool features
        return net.eval(), ""
    except Exception as exc:  # a corrupt or foreign file: say so instead of scoring
        return None, f"FID unavailable: cannot load {path}: {(str(exc).splitlines() or [type(exc).__name__])[0]}"


@torch.no_grad()
def inception_features(net, images: Sequence) -> np.ndarray:
    """(N, 2048) pool features of PIL images (resized to 299, ImageNet normalisation)."""
    from PIL import Image

    x = np.stack([np.asarray(im.convert("RGB").resize((299, 299), Image.BICUBIC), dtype=np.float32) / 255
                  for im in images])  # (N, 299, 299, 3)
    t = torch.from_numpy(x).permute(0, 3, 1, 2)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return net((t - mean) / std).numpy()


def fid_report(generated: Sequence, true: Sequence) -> dict[str, Any]:
    """{"available": True, "value": ...} or {"available": False, "message": why}."""
    if len(generated) < FID_MIN_IMAGES:
        return {"available": False, "message": f"FID unavailable: needs at least {FID_MIN_IMAGES} images"}
    net, why = load_inception()
    if net is None:
        return {"available": False, "message": why}
    value = frechet_distance(inception_features(net, generated), inception_features(net, true))
    return {"available": True, "value": value, "images": len(generated),
            "note": "torchvision Inception v3 pool features (not the pytorch-fid port); few images bias FID upwards"}
