"""Item embeddings for `unimp tokenize-items`: one block per --source, combined into one matrix.

Each function returns (vectors (n_items, d) float32, info) where info says how the block was made and how
many items got a zero row (no text, no image, never in a training history). Blocks:

    text    title, brand, category, description -> a sentence encoder (--text-encoder), else TF-IDF + SVD
    image   bag of VQ image codes (image_codes.parquet, from tokenize-images) -> TF-IDF + SVD; without codes,
            a small frozen pixel feature (an 8x8 thumbnail + a 4x4x4 colour histogram) -> PCA. A vision
            tower's features are not computed here: export them to a Parquet file and pass it as --source FILE.
    collab  PPMI of item co-occurrence within a window of the training part of the histories -> SVD
    FILE    the user's own vectors, checked: every item once, one width, finite values
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ..data.store import Dataset, training_lengths
from ..errors import UnimpError, first_line
from ..progress import Progress

TEXT_FIELDS = ("title", "brand", "category", "description")
MAX_TEXT_WORDS = 128  # per item: titles and categories come first, long descriptions are cut
ENCODER_BATCH = 64
THUMB = 8  # side of the pixel thumbnail (8x8x3 = 192 values)
HIST_BINS = 4  # per RGB channel: 64 colour-histogram bins
IMAGE_WORKERS = 8

Block = tuple[np.ndarray, dict[str, Any]]


def _svd(matrix, dims: int, seed: int) -> np.ndarray:
    """(n, <=dims) float32 coordinates of the rows of `matrix` (sparse or dense) on its top singular
    directions (U * S, as TruncatedSVD); a matrix narrower than `dims` is returned as it is."""
    from scipy import sparse
    from sklearn.decomposition import TruncatedSVD

    k = min(dims, matrix.shape[1] - 1, matrix.shape[0] - 1)
    if k < 1 or matrix.shape[1] <= dims:
        dense = matrix.toarray() if sparse.issparse(matrix) else np.asarray(matrix)
        return dense.astype(np.float32)
    svd = TruncatedSVD(n_components=k, algorithm="randomized", n_iter=5, random_state=seed)
    return svd.fit_transform(matrix).astype(np.float32)


def _scatter(n: int, rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    out = np.zeros((n, values.shape[1]), dtype=np.float32)
    out[rows] = values
    return out


# ---------------------------------------------------------------- text

def item_texts(items: pl.DataFrame) -> list[str]:
    """Each item's title, brand, category and description (whichever it has) as one line of at most
    MAX_TEXT_WORDS words, in item order; "" for an item with none."""
    fields = [pl.col(c).cast(pl.Utf8) for c in TEXT_FIELDS if c in items.columns]
    if not fields:
        return [""] * items.height
    joined = items.sort("item_id").select(pl.concat_str(fields, separator=" ", ignore_nulls=True).alias("t"))["t"]
    return [" ".join((t or "").split()[:MAX_TEXT_WORDS]) for t in joined.to_list()]


def text_embeddings(items: pl.DataFrame, encoder: str | None, dims: int, device: str, seed: int,
                    progress: Progress) -> Block:
    """The text block: `encoder` (a sentence encoder) when given, else TF-IDF + truncated SVD to `dims`."""
    texts = item_texts(items)
    has = np.flatnonzero([bool(t) for t in texts])
    if not len(has):
        raise UnimpError("--source text: no item has a title, brand, category or description; "
                         "choose another --source")
    present = [texts[i] for i in has]
    if encoder:
        values, kind = _encode_texts(present, encoder, device, seed, progress), f"encoder {encoder}"
    else:
        from sklearn.feature_extraction.text import TfidfVectorizer

        with progress.task("text: TF-IDF + SVD", None):
            try:
                matrix = TfidfVectorizer(sublinear_tf=True, dtype=np.float32, max_features=1 << 18,
                                         token_pattern=r"(?u)\b\w+\b").fit_transform(present)
            except ValueError as exc:  # "empty vocabulary": nothing but punctuation
                raise UnimpError(f"--source text: the item texts hold no words ({first_line(exc)})") from None
            values, kind = _svd(matrix, dims, seed), "tfidf-svd"
    x = _scatter(len(texts), has, values)
    return x, {"source": "text", "kind": kind, "dims": int(x.shape[1]), "zero_rows": len(texts) - len(has)}


def _encode_texts(texts: list[str], encoder: str, device: str, seed: int, progress: Progress) -> np.ndarray:
    """Sentence embeddings of `texts`: sentence-transformers when installed, else a transformers model with
    mean pooling over the attention mask. (B, H) float32."""
    import torch

    torch.manual_seed(seed)
    dev = "cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu"
    out: list[np.ndarray] = []
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        SentenceTransformer = None
    try:
        if SentenceTransformer is not None:
            model = SentenceTransformer(encoder, device=dev)
            with progress.task("text: encoding", len(texts)) as advance:
                for start in range(0, len(texts), ENCODER_BATCH):
                    batch = texts[start:start + ENCODER_BATCH]
                    out.append(model.encode(batch, batch_size=ENCODER_BATCH, convert_to_numpy=True,
                                            show_progress_bar=False))
                    advance(len(batch))
            return np.concatenate(out).astype(np.float32)
        from transformers import AutoModel, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(encoder)
        model = AutoModel.from_pretrained(encoder).to(dev).eval()
    except (OSError, ValueError, ImportError) as exc:
        raise UnimpError(f"--text-encoder {encoder}: cannot load it ({first_line(exc)})") from None
    max_len = min(512, int(getattr(tok, "model_max_length", 512) or 512))
    with torch.no_grad(), progress.task("text: encoding", len(texts)) as advance:
        for start in range(0, len(texts), ENCODER_BATCH):
            batch = texts[start:start + ENCODER_BATCH]
            enc = tok(batch, padding=True, truncation=True, max_length=max_len, return_tensors="pt").to(dev)
            hidden = model(**enc).last_hidden_state  # (B, T, H)
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)  # (B, H)
            out.append(pooled.float().cpu().numpy())
            advance(len(batch))
    return np.concatenate(out).astype(np.float32)


# ---------------------------------------------------------------- image

def image_embeddings(ds: Dataset, root: Path, dims: int, seed: int, progress: Progress) -> Block:
    """The image block: from the VQ image codes when tokenize-images has run, else from pixels."""
    from ..imagegen.codes import CODES_FILE, MANIFEST_KEY

    n = ds.items.height
    record = ds.manifest.get(MANIFEST_KEY)
    if record and (root / CODES_FILE).is_file():
        x, with_codes = _bag_of_codes(root / CODES_FILE, n, int(record.get("codebook_size") or 0), dims, seed)
        return x, {"source": "image", "kind": "image-codes-svd", "dims": int(x.shape[1]), "zero_rows": n - with_codes}
    rels = ds.items.sort("item_id")["image"].to_list()
    jobs = [(i, root / r) for i, r in enumerate(rels) if r]
    if not jobs:
        raise UnimpError(f"--source image: no item of {root} has an image; choose another --source")

    def feature(job: tuple[int, Path]) -> np.ndarray | None:
        img = _open(job[1])
        return None if img is None else pixel_feature(img)

    rows, feats = [], []
    workers = max(1, min(IMAGE_WORKERS, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for (i, _), f in progress.track(zip(jobs, pool.map(feature, jobs)), "image: reading", total=len(jobs)):
            if f is not None:
                rows.append(i)
                feats.append(f)
    if not feats:
        raise UnimpError(f"--source image: none of the {len(jobs)} item images of {root} could be read "
                         f"(run `unimp filter-images --data {root}` first)")
    values = np.stack(feats)  # (n_with_image, 256)
    values -= values.mean(0)  # centred: the SVD is then a PCA
    x = _scatter(n, np.asarray(rows), _svd(values, dims, seed))
    return x, {"source": "image", "kind": "pixels-pca", "dims": int(x.shape[1]), "zero_rows": n - len(rows),
               "unreadable": len(jobs) - len(rows)}


def _open(path: Path):
    from ..data.images import open_small

    return open_small(path, 4 * THUMB)


def pixel_feature(img) -> np.ndarray:
    """A small frozen image feature: an 8x8 RGB thumbnail (layout, colour) and a 4x4x4 colour histogram
    (colour regardless of where). (256,) float32 in [0, 1]."""
    from PIL import Image

    thumb = np.asarray(img.resize((THUMB, THUMB), Image.BILINEAR), dtype=np.float32).reshape(-1) / 255.0  # (192,)
    pix = np.asarray(img, dtype=np.uint8).reshape(-1, 3) // (256 // HIST_BINS)  # (H*W, 3) bin per channel
    idx = (pix[:, 0].astype(np.int64) * HIST_BINS + pix[:, 1]) * HIST_BINS + pix[:, 2]
    hist = np.bincount(idx, minlength=HIST_BINS ** 3).astype(np.float32)
    return np.concatenate([thumb, hist / max(1.0, hist.sum())])


def _bag_of_codes(path: Path, n: int, codebook: int, dims: int, seed: int) -> tuple[np.ndarray, int]:
    """Each item's histogram of VQ codes, TF-IDF weighted, reduced by SVD; items without codes get zeros."""
    from scipy import sparse
    from sklearn.feature_extraction.text import TfidfTransformer

    try:
        df = pl.read_parquet(path, columns=["item_id", "codes"]).filter(pl.col("codes").is_not_null())
    except Exception as exc:  # noqa: BLE001 (polars/arrow raise many kinds for a broken file)
        raise UnimpError(f"{path}: unreadable ({first_line(exc)}); rerun `unimp tokenize-images`") from None
    ids = df["item_id"].to_numpy()
    lengths = df["codes"].list.len().to_numpy()
    codes = df["codes"].explode().to_numpy().astype(np.int64)
    codebook = codebook or (int(codes.max()) + 1 if len(codes) else 1)  # a record without the size: the codes tell
    if len(ids) and (ids.min() < 0 or ids.max() >= n or codes.min() < 0 or codes.max() >= codebook):
        raise UnimpError(f"{path}: item ids or codes out of range; rerun `unimp tokenize-images`")
    counts = sparse.csr_matrix((np.ones(len(codes), np.float32), (np.repeat(ids, lengths), codes)),
                               shape=(n, codebook))
    weighted = TfidfTransformer(sublinear_tf=True).fit_transform(counts)
    return _svd(weighted, dims, seed), len(np.unique(ids))


# ---------------------------------------------------------------- collab

def training_histories(ds: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """The training part of every history (`store.training_lengths`) as (items, users), concatenated user
    after user in time order."""
    lengths = training_lengths(ds)
    keep = pl.DataFrame({"user_id": list(lengths), "_n": list(lengths.values())}, schema={"user_id": pl.Int64, "_n": pl.Int64})
    inter = ds.interactions.select("user_id", "item_id").with_row_index("_row").join(keep, on="user_id")
    inter = inter.sort("user_id", "_row")  # time order within each user is the row order
    inter = inter.filter(pl.int_range(pl.len()).over("user_id") < pl.col("_n"))
    return inter["item_id"].to_numpy().astype(np.int64), inter["user_id"].to_numpy().astype(np.int64)


def cooccurrence(items: np.ndarray, users: np.ndarray, n: int, window: int):
    """Symmetric (n, n) CSR counts of item pairs at most `window` positions apart in one user's history,
    weighted 1/distance; an item never pairs with itself."""
    from scipy import sparse

    rows, cols, vals = [], [], []
    for d in range(1, window + 1):
        same = users[:-d] == users[d:]
        r, c = items[:-d][same], items[d:][same]
        keep = r != c
        rows += [r[keep], c[keep]]
        cols += [c[keep], r[keep]]
        vals.append(np.full(2 * int(keep.sum()), 1.0 / d, dtype=np.float32))
    if not rows:
        return sparse.csr_matrix((n, n), dtype=np.float32)
    m = sparse.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    return m.tocsr()  # duplicates summed


def ppmi(m):
    """Positive pointwise mutual information of a symmetric co-occurrence matrix (CSR, zeros kept sparse)."""
    m = m.tocsr(copy=True).astype(np.float64)
    m.sum_duplicates()
    total = m.sum()
    if total == 0:
        return m.astype(np.float32)
    marg = np.asarray(m.sum(axis=1)).ravel()
    rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    m.data = np.maximum(np.log(m.data * total / (marg[rows] * marg[m.indices])), 0.0)
    m.eliminate_zeros()
    return m.astype(np.float32)


def collab_embeddings(ds: Dataset, dims: int, window: int, seed: int, progress: Progress) -> Block:
    """The collab block: SVD of the PPMI co-occurrence of the training histories (U * sqrt(S)). Only the
    training part is read, so no validation or test target shapes an id; items that never co-occur there
    get a zero row."""
    n = ds.items.height
    with progress.task("collab: co-occurrence + SVD", None):
        items, users = training_histories(ds)
        m = ppmi(cooccurrence(items, users, n, window))
        seen = np.flatnonzero(np.diff(m.indptr) > 0)
        if len(seen) < 2:
            raise UnimpError("--source collab: fewer than two items co-occur in the training part of the "
                             "histories; choose another --source")
        sub = m[seen][:, seen]
        k = min(dims, len(seen) - 1)
        from sklearn.decomposition import TruncatedSVD

        svd = TruncatedSVD(n_components=k, algorithm="randomized", n_iter=5, random_state=seed)
        u_s = svd.fit_transform(sub)  # (n_seen, k) = U * S
        values = (u_s / np.sqrt(np.maximum(svd.singular_values_, 1e-12))).astype(np.float32)
    x = _scatter(n, seen, values)
    return x, {"source": "collab", "kind": "ppmi-svd", "dims": int(x.shape[1]), "zero_rows": n - len(seen),
               "training_interactions": int(len(items)), "window": window}


# ---------------------------------------------------------------- FILE

def file_embeddings(path: Path, n: int) -> Block:
    """The user's own vectors from a Parquet file: item_id and one list/array column, or item_id and numeric
    columns. Every item 0..n-1 exactly once, one width, finite values; otherwise one line naming the file and
    the first item at fault."""
    if not path.is_file():
        raise UnimpError(f"--source {path}: file not found (the values text, image and collab name built-in sources)")
    try:
        df = pl.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 (polars/arrow raise many kinds for a broken file)
        raise UnimpError(f"{path}: not a readable Parquet file ({first_line(exc)})") from None
    if "item_id" not in df.columns:
        raise UnimpError(f"{path}: no item_id column (columns: {', '.join(df.columns) or 'none'})")
    if not df["item_id"].dtype.is_integer():
        raise UnimpError(f"{path}: item_id is {df['item_id'].dtype}, not integers")
    if df["item_id"].null_count():
        raise UnimpError(f"{path}: row {df['item_id'].is_null().arg_max()} has no item_id")
    ids = df["item_id"].to_numpy().astype(np.int64)
    bad = np.flatnonzero((ids < 0) | (ids >= n))
    if len(bad):
        raise UnimpError(f"{path}: item {ids[bad[0]]} is not in the catalogue (item ids are 0..{n - 1})")
    seen = np.bincount(ids, minlength=n)
    if (seen > 1).any():
        twice = int(np.argmax(seen > 1))
        raise UnimpError(f"{path}: item {twice} appears {int(seen[twice])} times; give each item once")
    if (seen == 0).any():
        raise UnimpError(f"{path}: item {int(np.argmax(seen == 0))} has no vector ({int((seen == 0).sum())} of {n} "
                         "items are missing); give every item one")
    values = _file_matrix(path, df.drop("item_id"), ids)
    if values.shape[1] == 0:
        raise UnimpError(f"{path}: the vectors are empty")
    finite = np.isfinite(values).all(axis=1)
    if not finite.all():
        raise UnimpError(f"{path}: item {int(ids[np.argmin(finite)])} has a value that is not a finite number")
    x = np.empty_like(values)
    x[ids] = values
    return x, {"source": str(path), "kind": "file", "dims": int(x.shape[1]), "zero_rows": int((~x.any(axis=1)).sum())}


def _file_matrix(path: Path, cols: pl.DataFrame, ids: np.ndarray) -> np.ndarray:
    """(rows, d) float32 from one list/array column or from numeric columns."""
    if cols.width == 1 and isinstance(cols.dtypes[0], (pl.List, pl.Array)):
        name = cols.columns[0]
        vec = cols[name]
        if isinstance(vec.dtype, pl.Array):
            vec = vec.cast(pl.List(vec.dtype.inner))
        if vec.null_count():
            raise UnimpError(f"{path}: item {ids[vec.is_null().arg_max()]} has no {name} vector")
        lengths = vec.list.len().to_numpy()
        odd = np.flatnonzero(lengths != lengths[0])
        if len(odd):
            raise UnimpError(f"{path}: item {ids[odd[0]]} has a {name} vector of {lengths[odd[0]]} values, "
                             f"item {ids[0]} has {lengths[0]}; give every item the same width")
        if not vec.dtype.inner.is_numeric():
            raise UnimpError(f"{path}: column {name} holds {vec.dtype.inner}, not numbers")
        flat = vec.explode().cast(pl.Float32)
        if flat.null_count():
            raise UnimpError(f"{path}: item {ids[int(flat.is_null().arg_max()) // max(1, lengths[0])]} "
                             f"has an empty value in {name}")
        return flat.to_numpy().reshape(len(ids), int(lengths[0]))
    if cols.width == 0:
        raise UnimpError(f"{path}: only an item_id column; add a list column or numeric columns of vectors")
    for name, dtype in zip(cols.columns, cols.dtypes):
        if not dtype.is_numeric():
            raise UnimpError(f"{path}: column {name} is {dtype}; give item_id and one list column, "
                             "or item_id and numeric columns")
        if cols[name].null_count():
            raise UnimpError(f"{path}: item {ids[cols[name].is_null().arg_max()]} has no value in column {name}")
    return cols.cast(pl.Float32).to_numpy()


# ---------------------------------------------------------------- combining blocks

def combine(blocks: list[np.ndarray]) -> np.ndarray:
    """Concatenate the blocks so that none dominates by scale or width: each is L2-normalised per row, then
    centred and scaled to unit mean squared row norm over the items that have it (a block-level
    standardisation: a per-column one would inflate the weakest SVD directions). Items without the block
    (zero rows) sit at its centre, 0. (n, sum of widths) float32."""
    out = []
    for b in blocks:
        b = np.array(b, dtype=np.float32)  # a copy: the caller's block is kept
        norms = np.linalg.norm(b, axis=1)
        present = norms > 0
        b[present] /= norms[present, None]
        if present.any():
            b[present] -= b[present].mean(axis=0)
            scale = float(np.sqrt((b[present] ** 2).sum(axis=1).mean()))
            if scale > 0:
                b /= scale
        b[~present] = 0
        out.append(b)
    return np.ascontiguousarray(np.hstack(out), dtype=np.float32)
