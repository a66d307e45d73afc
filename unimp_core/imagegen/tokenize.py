"""`unimp tokenize-images`: encode every item image of a dataset folder into a grid of discrete VQ codes.

Adds to the dataset folder (which stays valid for `load_dataset`; the schema version is unchanged):
    vq/                      the tokenizer: diffusers save_pretrained files + unimp_vq.json (identity, resolution)
    vq/reconstructions.png   a few measured images (top) over their reconstructions from the codes (bottom)
    image_codes.parquet      item_id, image, codes (list of grid*grid ints, row-major); items without a usable
                             image have no row
    manifest.json            gains the key "image_tokens" (every other key is kept)

Resumable: codebook training checkpoints to `.vq_train.pt`; encoding writes shards to `.image_codes.parts/`;
a rerun with the same tokenizer, resolution and images finds everything up to date and does nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ..data.store import MANIFEST, load_dataset, read_manifest
from ..errors import UnimpError
from ..io import atomic_path, folder_lock, write_json_atomic
from ..progress import Progress
from ..specs.images import TokenizeImagesSpec
from . import codes as codelib, vq as vqlib
from .quality import mean_quality

TRAIN_CHECKPOINT = ".vq_train.pt"
PARTS_DIR = ".image_codes.parts"
SHARD = 1024  # images per encoding shard (the unit of resumption)
QUALITY_IMAGES = 256  # at most this many images are decoded to measure PSNR / SSIM
SAMPLE_PAIRS = 8  # image pairs in vq/reconstructions.png

Row = tuple[int, str, int]  # item_id, image path relative to the dataset folder, file size in bytes


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _image_rows(ds, root: Path) -> tuple[list[Row], int]:
    """Items that name an image file, in item order, and how many name none."""
    rows, none = [], 0
    for item_id, rel in ds.items.select("item_id", "image").iter_rows():
        if rel is None:
            none += 1
            continue
        path = root / rel
        rows.append((int(item_id), rel, path.stat().st_size if path.is_file() else -1))
    return rows, none


def split_holdout(rows: list[Row], share: float, seed: int) -> tuple[list[Row], list[Row]]:
    """A seeded (train, held-out) split of the image rows; at least one row stays in training."""
    n_held = min(len(rows) - 1, round(len(rows) * share)) if share > 0 and len(rows) > 1 else 0
    order = np.random.default_rng(seed).permutation(len(rows))
    held = sorted(order[:n_held].tolist())
    keep = sorted(order[n_held:].tolist())
    return [rows[i] for i in keep], [rows[i] for i in held]


def _load_images(root: Path, rows: list[Row], resolution: int, workers: int):
    """Yield (row, uint8 array (R, R, 3) or None when unreadable), decoding on a thread pool (in order)."""

    def load(row: Row):
        img = vqlib.open_image(root / row[1])
        return row, None if img is None else np.asarray(vqlib.square(img, resolution), dtype=np.uint8)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(load, rows)


def _workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def _stack(arrays: list[np.ndarray]):
    import torch

    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()  # (B, 3, R, R) uint8


# ---------------------------------------------------------------- the tokenizer

def _train_identity(spec: TokenizeImagesSpec, rows: list[Row]) -> dict[str, Any]:
    config = {"codebook": spec.codebook.model_dump(mode="json", exclude={"save_every"}),
              "resolution": spec.train_resolution(), "batch_size": spec.batch_size}
    return {"kind": "trained", "config_hash": _hash(config), "data_hash": _hash(rows), "config": config}


def _setup_trained(spec: TokenizeImagesSpec, root: Path, rows: list[Row], device: str,
                   progress: Progress) -> tuple[dict[str, Any], list[Row]]:
    """Train the codebook (or reuse the one in vq/ when its config and images match); returns
    (vq meta, held-out rows)."""
    resolution = spec.train_resolution()
    identity = _train_identity(spec, rows)
    train_rows, held = split_holdout(rows, spec.codebook.holdout, spec.codebook.seed)
    meta = codelib.read_vq_meta(root / codelib.VQ_DIR)
    if meta and not spec.force and meta.get("tokenizer", {}).get("config_hash") == identity["config_hash"] \
            and meta["tokenizer"].get("data_hash") == identity["data_hash"]:
        progress.log(f"reusing the trained codebook in {root / codelib.VQ_DIR}")
        return meta, held
    if len(train_rows) > spec.codebook.max_train_images:
        pick = np.random.default_rng(spec.codebook.seed + 1).choice(len(train_rows), spec.codebook.max_train_images,
                                                                    replace=False)
        train_rows = [train_rows[i] for i in sorted(pick)]
    arrays = [a for _, a in progress.track(_load_images(root, train_rows, resolution, _workers()),
                                           "loading training images", total=len(train_rows)) if a is not None]
    if not arrays:
        raise UnimpError(f"{root}: none of the {len(train_rows)} training images could be read "
                         f"(run `unimp filter-images --data {root}` first)")
    images = _stack(arrays)  # (N, 3, R, R) uint8
    checkpoint = root / TRAIN_CHECKPOINT
    if spec.force and checkpoint.exists():
        checkpoint.unlink()
    key = identity["config_hash"] + identity["data_hash"]
    model, stats = vqlib.train_vq(images, spec.codebook, resolution, spec.batch_size, device, checkpoint, key, progress)
    meta = {"tokenizer": identity, "resolution": resolution, "training": stats,
            "held_out_items": [r[0] for r in held]}
    model.to("cpu")
    digest = vqlib.save_vq(model, root / codelib.VQ_DIR, meta)
    checkpoint.unlink(missing_ok=True)
    return {**meta, "weights_sha256": digest}, held


def _setup_pretrained(spec: TokenizeImagesSpec, root: Path, rows: list[Row]) -> tuple[dict[str, Any], list[Row]]:
    """Load --vq and keep a copy in vq/ (so the dataset folder is self-contained); quality is measured on
    a seeded sample of the images (none of them was seen in training here)."""
    model = vqlib.load_pretrained(spec.vq)
    local = Path(spec.vq).expanduser()
    source = str(local.resolve()) if local.exists() else spec.vq
    resolution = spec.resolution or int(model.config.sample_size)
    factor = vqlib.model_factor(model)
    if resolution % factor:
        raise UnimpError(f"resolution {resolution} is not a multiple of the --vq model's factor {factor}")
    meta = {"tokenizer": {"kind": "pretrained", "source": source}, "resolution": resolution, "training": None}
    digest = vqlib.save_vq(model, root / codelib.VQ_DIR, meta)
    order = np.random.default_rng(spec.codebook.seed).permutation(len(rows))[:QUALITY_IMAGES]
    return {**meta, "weights_sha256": digest}, [rows[i] for i in sorted(order.tolist())]


# ---------------------------------------------------------------- encoding

def _encode_all(tok: vqlib.VQ, root: Path, rows: list[Row], batch_size: int, identity: dict[str, Any],
                progress: Progress) -> pl.DataFrame:
    """Codes of every row (null when unreadable), written shard by shard to PARTS_DIR so an interrupted
    run continues where it stopped; returns item_id, image, codes."""
    parts = root / PARTS_DIR
    ident_file = parts / "identity.json"
    if parts.exists():
        try:
            same = json.loads(ident_file.read_text()) == identity
        except (OSError, json.JSONDecodeError):
            same = False
        if not same:
            shutil.rmtree(parts)
    parts.mkdir(exist_ok=True)
    write_json_atomic(ident_file, identity)
    schema = {"item_id": pl.Int64, "image": pl.Utf8, "codes": pl.List(pl.Int32)}
    with progress.task("encoding images", len(rows)) as advance:
        for i, start in enumerate(range(0, len(rows), SHARD)):
            chunk = rows[start:start + SHARD]
            part = parts / f"part-{i:05d}.parquet"
            if part.is_file():
                advance(len(chunk))
                continue
            out: list[tuple[int, str, list[int] | None]] = []
            batch: list[tuple[Row, np.ndarray]] = []

            def flush() -> None:
                codes = tok.encode_tensor(_stack([a for _, a in batch])).tolist()  # (B, grid*grid)
                out.extend((row[0], row[1], c) for (row, _), c in zip(batch, codes))
                advance(len(batch))
                batch.clear()

            for row, arr in _load_images(root, chunk, tok.resolution, _workers()):
                if arr is None:
                    out.append((row[0], row[1], None))
                    advance(1)
                    continue
                batch.append((row, arr))
                if len(batch) == batch_size:
                    flush()
            if batch:
                flush()
            with atomic_path(part) as tmp:
                pl.DataFrame(out, schema=schema, orient="row").write_parquet(tmp)
    files = sorted(parts.glob("part-*.parquet"))
    return pl.concat([pl.read_parquet(f) for f in files]) if files else pl.DataFrame(schema=schema)


def codebook_usage(codes: list[list[int]], size: int) -> dict[str, float]:
    """How much of the codebook the stored codes use: entries used, their share, and the perplexity
    exp(entropy) of the code distribution (= size when all codes are equally frequent)."""
    counts = np.bincount(np.asarray([c for seq in codes for c in seq], dtype=np.int64), minlength=size)
    total = counts.sum()
    if total == 0:
        return {"used": 0, "share": 0.0, "perplexity": 0.0}
    p = counts[counts > 0] / total
    return {"used": int((counts > 0).sum()), "share": round(float((counts > 0).mean()), 4),
            "perplexity": round(float(np.exp(-(p * np.log(p)).sum())), 2)}


def _measure(tok: vqlib.VQ, root: Path, rows: list[Row], codes: dict[int, list[int]], batch_size: int,
             held_out: bool) -> dict[str, Any] | None:
    """PSNR / SSIM of the images in `rows` against their decoded codes; saves a few pairs as vq/reconstructions.png."""
    import torch
    from PIL import Image

    rows = [r for r in rows if r[0] in codes][:QUALITY_IMAGES]
    originals, recons = [], []
    for start in range(0, len(rows), batch_size):
        chunk = [(r, img) for r in rows[start:start + batch_size] if (img := vqlib.open_image(root / r[1])) is not None]
        if chunk:
            originals += [vqlib.square(img, tok.resolution) for _, img in chunk]
            recons += tok.decode(torch.tensor([codes[r[0]] for r, _ in chunk]))
    if not originals:
        return None
    quality = {k: round(v, 4) if isinstance(v, float) else v for k, v in mean_quality(originals, recons).items()}
    n = min(SAMPLE_PAIRS, len(originals))
    r = tok.resolution
    sheet = Image.new("RGB", (n * r, 2 * r), (255, 255, 255))
    for i in range(n):
        sheet.paste(originals[i], (i * r, 0))
        sheet.paste(recons[i], (i * r, r))
    with atomic_path(root / codelib.VQ_DIR / "reconstructions.png") as tmp:
        sheet.save(tmp, format="PNG")
    return {**quality, "held_out": held_out}


# ---------------------------------------------------------------- the command

def run_tokenize_images(spec: TokenizeImagesSpec, progress: Progress | None = None) -> dict[str, Any]:
    """Tokenize the images of `spec.data`; returns the manifest's new `image_tokens` record.

    Holds the dataset folder's write lock throughout (a concurrent filter-images or prepare --overwrite
    fails at once instead of replacing the folder under it)."""
    root = Path(spec.data)
    read_manifest(root)
    with folder_lock(root):
        return _tokenize(spec, root, progress or Progress())


def _tokenize(spec: TokenizeImagesSpec, root: Path, progress: Progress) -> dict[str, Any]:
    t0 = time.perf_counter()
    ds = load_dataset(root)
    rows, no_image = _image_rows(ds, root)
    if not rows:
        raise UnimpError(f"{root}: no item images (items.parquet names none); run `unimp prepare` with images, "
                         "or `unimp filter-images`, first")
    if not any(size >= 0 for _, _, size in rows):
        raise UnimpError(f"{root}: none of the {len(rows)} image files exist "
                         f"(run `unimp filter-images --data {root}` first)")
    device = vqlib.pick_device(spec.device)
    if spec.train_codebook:
        meta, quality_rows = _setup_trained(spec, root, rows, device, progress)
    else:
        meta, quality_rows = _setup_pretrained(spec, root, rows)
    tok = vqlib.load_vq(root, device=device)

    identity = {"weights_sha256": meta["weights_sha256"], "resolution": tok.resolution, "items_hash": _hash(rows)}
    old = read_manifest(root).get(codelib.MANIFEST_KEY)
    up_to_date = old and old.get("encoding", {}).get("identity") == identity and (root / codelib.CODES_FILE).is_file()
    if up_to_date and not spec.force:
        progress.log(f"image codes in {root / codelib.CODES_FILE} are up to date")
        return old

    t_enc = time.perf_counter()
    df = _encode_all(tok, root, rows, spec.batch_size, identity, progress)
    enc_seconds = time.perf_counter() - t_enc
    unreadable = df["codes"].null_count()
    codes_df = df.filter(pl.col("codes").is_not_null()).sort("item_id")
    if codes_df.height == 0:
        raise UnimpError(f"{root}: none of the {len(rows)} item images could be read "
                         f"(run `unimp filter-images --data {root}` first)")
    with atomic_path(root / codelib.CODES_FILE) as tmp:
        codes_df.write_parquet(tmp)
    shutil.rmtree(root / PARTS_DIR, ignore_errors=True)

    codes = dict(zip(codes_df["item_id"].to_list(), codes_df["codes"].to_list()))
    record = {
        "file": codelib.CODES_FILE,
        "vq": codelib.VQ_DIR,
        "tokenizer": {k: v for k, v in meta["tokenizer"].items() if k != "config"},
        "weights_sha256": meta["weights_sha256"],
        "resolution": tok.resolution,
        "factor": tok.factor,
        "grid": tok.grid,
        "codes_per_image": tok.codes_per_image,
        "codebook_size": tok.codebook_size,
        "order": "row-major (y, x)",
        "items": {"total": ds.items.height, "encoded": codes_df.height, "missing": no_image + unreadable,
                  "no_image": no_image, "unreadable": unreadable},
        "quality": _measure(tok, root, quality_rows, codes, spec.batch_size, held_out=spec.train_codebook),
        "codebook_usage": codebook_usage(list(codes.values()), tok.codebook_size),
        "training": meta.get("training"),
        "encoding": {"identity": identity, "seconds": round(enc_seconds, 2),
                     "images_per_second": round(len(rows) / enc_seconds, 1) if enc_seconds > 0 else None},
        "seconds": round(time.perf_counter() - t0, 2),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    # Read the manifest again just before writing, add one key, keep the rest.
    manifest = read_manifest(root)
    manifest[codelib.MANIFEST_KEY] = record
    write_json_atomic(root / MANIFEST, manifest)
    return record
