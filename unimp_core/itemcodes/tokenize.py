"""`unimp tokenize-items`: give every catalogue item a semantic id, a few codes of a residual quantiser over
its embeddings plus a collision index, and store them in the dataset folder.

Adds to the dataset folder (which stays valid for `load_dataset`; the schema version is unchanged):
    item_codes.parquet         item_id, codes (levels quantiser codes + 1 collision index); see codes.py
    tokenize_items_spec.json   the resolved spec
    manifest.json              gains the key "item_codes" (every other key is kept)

A rerun with the same dataset, sources and settings finds the codes up to date and does nothing (--force
makes them again). prepare --overwrite and filter-images rewrite the folder without them (item ids change).
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ..data.store import MANIFEST, Dataset, dataset_identity, load_dataset, read_manifest
from ..errors import UnimpError
from ..io import atomic_path, folder_lock, sha256_file, write_json_atomic
from ..progress import Progress
from ..specs.items import SOURCES, TokenizeItemsSpec
from . import embed
from .codes import CODES_FILE, MANIFEST_KEY
from .quantize import add_collision_index, balance_last_level, effective_codes, level_usage, residual_kmeans

SPEC_FILE = "tokenize_items_spec.json"


def run_tokenize_items(spec: TokenizeItemsSpec, progress: Progress | None = None) -> dict[str, Any]:
    """Make the semantic item ids of `spec.data`; returns the manifest's new `item_codes` record.

    Holds the dataset folder's write lock throughout (a concurrent filter-images or prepare --overwrite
    fails at once instead of replacing the folder under it)."""
    root = Path(spec.data)
    read_manifest(root)
    with folder_lock(root):
        return _tokenize(spec, root, progress or Progress())


def _identity(spec: TokenizeItemsSpec, ds: Dataset, root: Path) -> str:
    """What the codes depend on: the dataset (as prepare / filter-images wrote it), the settings, the bytes
    of every --source FILE and of the image codes an image block reads."""
    from ..imagegen.codes import CODES_FILE as IMAGE_CODES

    exclude = {"data", "force", "device"} | ({"rqvae"} if spec.quantizer != "rqvae" else set())
    files = {str(p): sha256_file(p) for p in spec.files() if p.is_file()}
    if "image" in spec.source and (root / IMAGE_CODES).is_file():
        files[IMAGE_CODES] = sha256_file(root / IMAGE_CODES)
    key = {"dataset": dataset_identity(ds.manifest), "settings": spec.model_dump(mode="json", exclude=exclude),
           "files": files}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _embeddings(spec: TokenizeItemsSpec, ds: Dataset, root: Path, progress: Progress) -> tuple[np.ndarray, list]:
    """Every --source block, then `embed.combine`: (n_items, D) float32 and each block's info."""
    n = ds.items.height
    blocks, infos = [], []
    for source in spec.source:
        if source == "text":
            block = embed.text_embeddings(ds.items, spec.text_encoder, spec.dims, spec.device, spec.seed, progress)
        elif source == "image":
            block = embed.image_embeddings(ds, root, spec.dims, spec.seed, progress)
        elif source == "collab":
            block = embed.collab_embeddings(ds, spec.dims, spec.window, spec.seed, progress)
        else:
            block = embed.file_embeddings(Path(source).expanduser(), n)
        blocks.append(block[0])
        infos.append(block[1])
        if block[1]["zero_rows"]:
            progress.log(f"{block[1]['source']}: {block[1]['zero_rows']} of {n} items have no vector (zero row)")
    return embed.combine(blocks), infos


def _tokenize(spec: TokenizeItemsSpec, root: Path, progress: Progress) -> dict[str, Any]:
    t0 = time.perf_counter()
    ds = load_dataset(root)
    n = ds.items.height
    if n == 0:
        raise UnimpError(f"{root}: the catalogue is empty (items.parquet has no rows)")
    for path in spec.files():  # before any work: a typo in a path fails at once
        if not path.is_file():
            raise UnimpError(f"--source {path}: file not found (besides files, --source takes {', '.join(SOURCES)})")

    identity = _identity(spec, ds, root)
    old = read_manifest(root).get(MANIFEST_KEY)
    path = root / CODES_FILE
    if old and not spec.force and old.get("identity") == identity and path.is_file() \
            and sha256_file(path) == old.get("sha256"):
        progress.log(f"item codes in {path} are up to date")
        return old

    x, infos = _embeddings(spec, ds, root, progress)
    k = effective_codes(spec.codes, n)
    if k < spec.codes:
        progress.log(f"{n} items: {k} codes per level instead of {spec.codes} (at most a quarter of the catalogue)")
    t_q = time.perf_counter()
    training = None
    if spec.quantizer == "rqvae":
        from .rqvae import train_rqvae

        quant, training, space, books = train_rqvae(x, spec.rqvae, spec.levels, k, spec.fit_items, spec.seed,
                                                    spec.device, progress)
        unexplained = None
    else:
        quant, books, unexplained = residual_kmeans(x, spec.levels, k, spec.fit_items, spec.seed, progress)
        space = x
    balance = None
    if spec.balance:
        quant, balance = balance_last_level(quant, space, books)
    quant_seconds = time.perf_counter() - t_q
    full, colliding, largest = add_collision_index(quant)  # (n, levels + 1)

    table = pl.DataFrame({"item_id": np.arange(n, dtype=np.int64),
                          "codes": pl.Series("codes", full).cast(pl.List(pl.Int32))})
    with atomic_path(path) as tmp:
        table.write_parquet(tmp)
    record = {
        "file": CODES_FILE,
        "levels": spec.levels,
        "codes": k,
        "collision_codes": largest,
        "colliding_items": colliding,
        "source": list(spec.source),
        "quantizer": spec.quantizer,
        "seed": spec.seed,
        "sha256": sha256_file(path),
        "codes_requested": spec.codes,
        "tokens": spec.levels * k + largest,
        "items": n,
        "dims": int(x.shape[1]),
        "blocks": infos,
        "level_usage": level_usage(quant, k),
        "unexplained_energy": unexplained,
        "balance": balance,
        "training": training,
        "identity": identity,
        "quantize_seconds": round(quant_seconds, 2),
        "seconds": round(time.perf_counter() - t0, 2),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    spec.save(root / SPEC_FILE)
    # Read the manifest again just before writing, add one key, keep the rest.
    manifest = read_manifest(root)
    manifest[MANIFEST_KEY] = record
    write_json_atomic(root / MANIFEST, manifest)
    return record
