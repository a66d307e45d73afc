"""The image codes of a dataset folder, as the tasks read them (no torch import).

`unimp tokenize-images` writes `<dataset>/image_codes.parquet` (item_id, codes: grid*grid codebook
indices, row-major), the VQ model in `<dataset>/vq/` (its `unimp_vq.json` holds the weights' hash)
and the manifest's "image_tokens" record (grid, codebook_size, resolution, weights_sha256, ...).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..data.store import CODES_KEY
from ..errors import UnimpError

if TYPE_CHECKING:
    from ..data.store import Dataset

VQ_DIR = "vq"
VQ_META = "unimp_vq.json"
CODES_FILE = "image_codes.parquet"
MANIFEST_KEY = CODES_KEY  # its record in the dataset manifest


def read_vq_meta(folder: Path) -> dict[str, Any] | None:
    path = Path(folder) / VQ_META
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def has_codes(ds: "Dataset") -> bool:
    """`unimp tokenize-images` has run on the folder."""
    return ds.root is not None and MANIFEST_KEY in ds.manifest


def load_codes(root: str | os.PathLike) -> dict[int, list[int]]:
    """item_id -> its grid*grid image codes (row-major), for every item whose image was encoded."""
    import polars as pl

    from ..data.store import read_manifest

    root = Path(root)
    manifest = read_manifest(root)
    path = root / CODES_FILE
    if MANIFEST_KEY not in manifest or not path.is_file():
        raise UnimpError(f"{root}: no image codes (run `unimp tokenize-images --data {root}` first)")
    meta = read_vq_meta(root / VQ_DIR) or {}
    if meta.get("weights_sha256") != manifest[MANIFEST_KEY].get("weights_sha256"):
        # e.g. a tokenize-images run with another --vq stopped after replacing vq/ but before the codes
        raise UnimpError(f"{root}: the image codes were made by another tokenizer than {root / VQ_DIR} holds; "
                         f"rerun `unimp tokenize-images --data {root}`")
    df = pl.read_parquet(path, columns=["item_id", "codes"])
    return dict(zip(df["item_id"].to_list(), df["codes"].to_list()))


def codebook_size(ds: "Dataset", given: int = 0) -> int:
    """The codebook size of the dataset's image codes (the img_<k> tokens img_gen adds).

    It comes from the manifest's image_tokens record; `given` (a saved run's value) must agree."""
    record = ds.manifest.get(MANIFEST_KEY)
    if not record or not (Path(ds.root) / record.get("file", CODES_FILE)).is_file():
        raise UnimpError(f"{ds.root}: img_gen needs image codes; run `unimp tokenize-images --data {ds.root}` first")
    size = int(record["codebook_size"])
    if given not in (0, size):
        raise UnimpError(f"model.image_gen_codes: {given} differs from the codebook size {size} of {ds.root}'s "
                         "image codes (it is set from the dataset; leave it out)")
    return size
