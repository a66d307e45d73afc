"""The VQ image tokenizer: a diffusers `VQModel` that turns an image into a grid of discrete codes and back.

The codes of one image are a flat list of grid*grid codebook indices in row-major (y, x) order, where
grid = resolution / f and f = 2 ** (levels - 1) is the model's downsampling factor. Pixels enter the model
in [-1, 1] (the taming-transformers / diffusers convention).

Sections: building and preprocessing, the `VQ` wrapper (encode/decode), training a small codebook,
saving and loading (`<dataset>/vq/`, diffusers `save_pretrained` format plus `unimp_vq.json`). The stored
codes (`<dataset>/image_codes.parquet`) are read by `unimp_core.imagegen.codes`, without torch.
"""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UnimpError
from ..io import atomic_path, replacing_folder, write_json_atomic
from ..progress import Progress
from ..schedule import lr_at
from ..specs.images import CodebookSpec
from .codes import VQ_DIR, VQ_META, read_vq_meta

# The codebook's learning rate: warmup over 5% of the steps, then cosine down to a tenth of the peak.
CODEBOOK_SCHEDULE = {"warmup_ratio": 0.05, "kind": "cosine", "floor": 0.1}

# Background that non-square images are padded with: product photos sit on white.
PAD_COLOR = (255, 255, 255)


# ---------------------------------------------------------------- building and preprocessing

def build_vq_model(codebook: CodebookSpec, resolution: int):
    """A fresh diffusers VQModel from the codebook spec (random weights; seed the RNG before calling)."""
    from diffusers import VQModel

    channels = tuple(codebook.channels())
    return VQModel(
        in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(channels),
        up_block_types=("UpDecoderBlock2D",) * len(channels),
        block_out_channels=channels, layers_per_block=codebook.layers_per_block,
        latent_channels=codebook.dim, num_vq_embeddings=codebook.size, norm_num_groups=8,
        sample_size=resolution, mid_block_add_attention=codebook.attention,
    )


def model_factor(model) -> int:
    """Downsampling factor of a VQModel: every encoder level but the last halves the resolution."""
    return 2 ** (len(model.config.block_out_channels) - 1)


def open_image(path: Path):
    """The image at `path` as RGB, or None when it is missing, undecodable or a decompression bomb
    (Pillow's guard stays on: its warning band is refused too)."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                return img.convert("RGB")
    except Exception:
        return None


def square(img, resolution: int):
    """RGB, padded to a centred square on white, resized (antialiased) to resolution x resolution."""
    from PIL import Image

    img = img.convert("RGB")
    w, h = img.size
    if w != h:
        side = max(w, h)
        canvas = Image.new("RGB", (side, side), PAD_COLOR)
        canvas.paste(img, ((side - w) // 2, (side - h) // 2))
        img = canvas
    if img.size != (resolution, resolution):
        img = img.resize((resolution, resolution), Image.BICUBIC)
    return img


def to_uint8(images: Sequence, resolution: int) -> torch.Tensor:
    """PIL images -> (B, 3, R, R) uint8, squared and resized."""
    arrays = [np.asarray(square(img, resolution), dtype=np.uint8) for img in images]  # (R, R, 3) each
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def to_model(x: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, R, R) -> float in [-1, 1]."""
    return x.float() / 127.5 - 1.0


def to_pil(x: torch.Tensor) -> list:
    """float (B, 3, R, R) in [-1, 1] -> PIL images."""
    from PIL import Image

    arr = ((x.detach().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arr]


# ---------------------------------------------------------------- the tokenizer

def _quantize(model, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Latents (B, D, g, g) -> quantized latents (B, D, g, g), VQ loss, code indices (B, g*g)."""
    quant, loss, (_, _, idx) = model.quantize(h)
    return quant, loss, idx.reshape(h.shape[0], -1)


def _decode_quant(model, quant: torch.Tensor) -> torch.Tensor:
    """Quantized latents (B, D, g, g) -> pixels (B, 3, R, R). The decoder is called directly (as
    VQModel.decode does after quantizing) so this works whatever the model's lookup_from_codebook flag."""
    dec_in = model.post_quant_conv(quant)
    return model.decoder(dec_in, quant if model.config.norm_type == "spatial" else None)


class VQ:
    """A VQModel in inference mode at a fixed resolution: images <-> code grids.

    `encode(images) -> LongTensor (B, grid*grid)`; `decode(codes) -> list of PIL images`.
    """

    def __init__(self, model, resolution: int, device: str | torch.device = "cpu", origin: str = "VQ model") -> None:
        if model.dtype != torch.float32:
            model = model.float()
        self.model = model.to(device).eval().requires_grad_(False)
        self.device = torch.device(device)
        self.factor = model_factor(model)
        if resolution % self.factor:
            raise UnimpError(f"{origin}: resolution {resolution} is not a multiple of the model's factor {self.factor}")
        self.resolution = resolution
        self.grid = resolution // self.factor
        self.codebook_size = int(model.config.num_vq_embeddings)
        self.embed_dim = int(model.quantize.vq_embed_dim)

    @property
    def codes_per_image(self) -> int:
        return self.grid * self.grid

    @torch.no_grad()
    def encode_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, R, R) uint8, or float in [-1, 1] -> codes (B, grid*grid), int64 on the CPU."""
        if x.dtype == torch.uint8:
            x = to_model(x)
        h = self.model.encode(x.to(self.device)).latents  # (B, D, g, g)
        return _quantize(self.model, h)[2].cpu()

    def encode(self, images: Sequence) -> torch.Tensor:
        """PIL images (any size; squared and resized) -> codes (B, grid*grid)."""
        return self.encode_tensor(to_uint8(images, self.resolution))

    @torch.no_grad()
    def decode_tensor(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (B, grid*grid) -> pixels (B, 3, R, R) in [-1, 1]."""
        codes = torch.as_tensor(codes, dtype=torch.long)
        if codes.ndim != 2 or codes.shape[1] != self.codes_per_image:
            raise ValueError(f"codes must be shaped (B, {self.codes_per_image}), got {tuple(codes.shape)}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise ValueError(f"codes must lie in [0, {self.codebook_size}), got {int(codes.min())}..{int(codes.max())}")
        b = codes.shape[0]
        quant = self.model.quantize.get_codebook_entry(
            codes.reshape(-1).to(self.device), (b, self.grid, self.grid, self.embed_dim))  # (B, D, g, g)
        return _decode_quant(self.model, quant).clamp(-1, 1).cpu()

    def decode(self, codes: torch.Tensor) -> list:
        """Codes (B, grid*grid) -> PIL images of resolution x resolution."""
        return to_pil(self.decode_tensor(codes))

    def resize(self, images: Sequence) -> list:
        """PIL images as the tokenizer sees them (squared, resized): the reference to compare decoded images with."""
        return [square(img, self.resolution) for img in images]


# ---------------------------------------------------------------- training a small codebook

def kmeans(x: torch.Tensor, k: int, iters: int = 15, generator: torch.Generator | None = None) -> torch.Tensor:
    """Lloyd's k-means of points x (N, D) -> centres (k, D). Starts from k distinct random points (with
    replacement plus tiny noise when N < k); an emptied cluster is re-seeded on a random point."""
    n = x.shape[0]
    if n >= k:
        centres = x[torch.randperm(n, generator=generator)[:k]].clone()
    else:
        pick = torch.randint(n, (k,), generator=generator)
        centres = x[pick] + 1e-3 * x.std().clamp_min(1e-6) * torch.randn(k, x.shape[1], generator=generator)
    for _ in range(iters):
        assign = torch.cdist(x, centres).argmin(1)  # (N,)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        empty = counts == 0
        centres = torch.where(empty[:, None], centres, sums / counts.clamp_min(1)[:, None])
        if empty.any():
            centres[empty] = x[torch.randint(n, (int(empty.sum()),), generator=generator)]
    return centres


def _step_generator(seed: int, step: int) -> torch.Generator:
    """One generator per step, so batches and restarts do not depend on where a run was resumed."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def _batch(images: torch.Tensor, batch_size: int, g: torch.Generator) -> torch.Tensor:
    """A random batch (with replacement) of (N, 3, R, R) uint8, half of it mirrored -> float (B, 3, R, R)."""
    idx = torch.randint(images.shape[0], (batch_size,), generator=g)
    x = to_model(images[idx])
    flip = torch.rand(batch_size, generator=g) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


@torch.no_grad()
def _latent_vectors(model, images: torch.Tensor, batch_size: int, device, limit: int,
                    g: torch.Generator) -> torch.Tensor:
    """Encoder outputs of (a random sample of) the training images as at most `limit` vectors (M, D)."""
    out, total = [], 0
    order = torch.randperm(images.shape[0], generator=g)
    for start in range(0, images.shape[0], batch_size):
        h = model.encode(to_model(images[order[start:start + batch_size]]).to(device)).latents  # (B, D, g, g)
        out.append(h.permute(0, 2, 3, 1).reshape(-1, h.shape[1]).cpu())  # (B*g*g, D)
        total += len(out[-1])
        if total >= limit:
            break
    vecs = torch.cat(out)
    return vecs[torch.randperm(len(vecs), generator=g)[:limit]]


def init_codebook(model, images: torch.Tensor, batch_size: int, device, seed: int) -> None:
    """Set the codebook to k-means centres of the encoder's outputs on the training images."""
    g = torch.Generator().manual_seed(seed)
    k = model.config.num_vq_embeddings
    vecs = _latent_vectors(model, images, batch_size, device, limit=max(20 * k, 4096), g=g)
    with torch.no_grad():
        model.quantize.embedding.weight.copy_(kmeans(vecs, k, generator=g).to(device))


def restart_dead_codes(model, usage: torch.Tensor, latents: torch.Tensor, g: torch.Generator) -> int:
    """Move codes that went unused (usage == 0) onto random encoder outputs (M, D) of the current batch;
    returns how many moved. Keeps the codebook in use instead of collapsing onto a few entries."""
    dead = (usage == 0).nonzero().flatten()
    if len(dead) == 0:
        return 0
    pick = torch.randint(latents.shape[0], (len(dead),), generator=g)
    noise = 1e-2 * latents.std().clamp_min(1e-6) * torch.randn(len(dead), latents.shape[1], generator=g)
    with torch.no_grad():
        w = model.quantize.embedding.weight
        w[dead.to(w.device)] = (latents[pick] + noise).to(w.device, w.dtype)
    return len(dead)


def _read_checkpoint(path: Path) -> dict[str, Any] | None:
    """A training checkpoint, or None when there is none or it cannot be read (training then starts over)."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None
    return state if isinstance(state, dict) else None


def train_vq(images: torch.Tensor, spec: CodebookSpec, resolution: int, batch_size: int, device: str,
             checkpoint: Path, key: str, progress: Progress | None = None):
    """Train a VQModel on `images` (N, 3, R, R) uint8; resumable from `checkpoint` when it holds the same `key`.

    Loss: L1 + MSE reconstruction plus diffusers' VQ loss (codebook + commitment). The first `ae_warmup` of
    the steps skip quantization; the codebook is then set to k-means centres of the encoder's outputs, and
    codes unused for `restart_every` steps are restarted on encoder outputs (until 80% of the steps).
    Returns (model in eval mode, stats dict). The checkpoint is deleted by the caller once the model is saved.
    """
    progress = progress or Progress()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = build_vq_model(spec, resolution)
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, betas=(0.9, 0.99), weight_decay=0.0)
    k = spec.size
    usage = torch.zeros(k, dtype=torch.long)  # code counts since the last restart check
    window = 0  # steps counted in `usage`
    start, seconds, restarts = 0, 0.0, 0
    state = _read_checkpoint(checkpoint)
    if state is not None and state.get("key") == key:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        usage, window, start = state["usage"], int(state["window"]), int(state["step"])
        seconds, restarts = float(state["seconds"]), int(state["restarts"])
        progress.log(f"resuming codebook training at step {start}/{spec.steps}")
    warm = int(spec.steps * spec.ae_warmup)
    restart_until = int(spec.steps * 0.8)
    recent: list[float] = []
    t0 = time.perf_counter()

    def save(step: int) -> None:
        state = {"key": key, "step": step, "model": model.state_dict(), "optimizer": opt.state_dict(), "usage": usage,
                 "window": window, "seconds": seconds + time.perf_counter() - t0, "restarts": restarts}
        with atomic_path(checkpoint) as tmp:
            torch.save(state, tmp)

    with progress.task("training the codebook", spec.steps) as advance:
        advance(start)
        for step in range(start, spec.steps):
            if step == warm:
                init_codebook(model, images, batch_size, device, spec.seed + step)
            g = _step_generator(spec.seed, step)
            for group in opt.param_groups:
                group["lr"] = lr_at(step, spec.steps, spec.lr, **CODEBOOK_SCHEDULE)
            x = _batch(images, batch_size, g).to(device)  # (B, 3, R, R)
            h = model.encode(x).latents  # (B, D, g, g)
            if step < warm:
                rec, vq_loss = _decode_quant(model, h), torch.zeros((), device=device)
            else:
                quant, vq_loss, idx = _quantize(model, h)
                rec = _decode_quant(model, quant)
                usage += torch.bincount(idx.flatten().cpu(), minlength=k)
                window += 1
            recon = F.l1_loss(rec, x) + F.mse_loss(rec, x)
            loss = recon + vq_loss.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            recent = (recent + [recon.item()])[-20:]
            done = step + 1
            if spec.restart_every and window >= spec.restart_every:
                if done <= restart_until:
                    latents = h.detach().permute(0, 2, 3, 1).reshape(-1, h.shape[1]).cpu()  # (B*g*g, D)
                    restarts += restart_dead_codes(model, usage, latents, g)
                usage, window = torch.zeros(k, dtype=torch.long), 0
            if done % spec.save_every == 0 and done < spec.steps:
                save(done)
            advance(1, info=f"loss {np.mean(recent):.4f}")
    model.eval()
    return model, {"steps": spec.steps, "seconds": round(seconds + time.perf_counter() - t0, 2),
                   "final_recon_loss": round(float(np.mean(recent)), 5) if recent else None,
                   "restarted_codes": restarts, "train_images": int(images.shape[0])}


# ---------------------------------------------------------------- saving and loading

def weights_sha256(folder: Path) -> str:
    """One hash over the weight files of a saved model (what the stored codes depend on)."""
    h = hashlib.sha256()
    files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin"))
    if not files:
        raise UnimpError(f"{folder}: no weight files")
    for p in files:
        h.update(p.name.encode())
        with open(p, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    return h.hexdigest()


def save_vq(model, folder: Path, meta: dict[str, Any]) -> str:
    """Save `model` (diffusers save_pretrained) and `meta` into `folder` through a staging folder that
    replaces it only when complete; returns the weights hash (also written into the meta file)."""
    with replacing_folder(folder) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        digest = weights_sha256(tmp)
        write_json_atomic(tmp / VQ_META, {**meta, "weights_sha256": digest})
    return digest


def load_pretrained(source: str):
    """A diffusers VQModel from a local folder (or its `vqvae/` subfolder) or a hub id `owner/name[/subfolder]`."""
    from diffusers import VQModel

    local = Path(source).expanduser()
    try:
        if local.exists():
            if not (local / "config.json").is_file() and (local / "vqvae" / "config.json").is_file():
                local = local / "vqvae"
            if not (local / "config.json").is_file():
                raise UnimpError(f"--vq {source}: no config.json (expected a diffusers VQModel folder)")
            args: tuple = (str(local),)
            kwargs: dict = {}
        elif source.startswith(("/", ".", "~")):
            raise UnimpError(f"--vq {source}: folder not found")
        else:
            parts = source.split("/")
            if len(parts) < 2:
                raise UnimpError(f"--vq {source}: neither a local folder nor a hub id owner/name[/subfolder]")
            args, kwargs = ("/".join(parts[:2]),), {"subfolder": "/".join(parts[2:]) or None}
        config = VQModel.load_config(*args, **kwargs)
        if config.get("_class_name") not in (None, "VQModel"):
            raise UnimpError(f"--vq {source}: a {config.get('_class_name')}, not a VQModel")
        return VQModel.from_pretrained(*args, torch_dtype=torch.float32, **kwargs)
    except UnimpError:
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UnimpError(f"--vq {source}: cannot load a diffusers VQModel: {first}") from exc


def pick_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UnimpError("device: cuda requested but no CUDA device is available")
    return device


def load_vq(path: str | os.PathLike, device: str = "auto") -> VQ:
    """The tokenizer of a dataset folder (`<path>/vq/`) or of a saved VQ folder itself, ready to encode/decode."""
    from diffusers import VQModel

    path = Path(path)
    folder = path / VQ_DIR if (path / VQ_DIR / "config.json").is_file() else path
    if not (folder / "config.json").is_file():
        raise UnimpError(f"{path}: no VQ image tokenizer (run `unimp tokenize-images --data {path}` first)")
    meta = read_vq_meta(folder) or {}
    try:
        model = VQModel.from_pretrained(str(folder))
    except Exception as exc:
        raise UnimpError(f"{folder}: cannot load the VQ model: {(str(exc).splitlines() or [''])[0]}") from exc
    resolution = int(meta.get("resolution") or model.config.sample_size)
    return VQ(model, resolution, pick_device(device), origin=str(folder))
