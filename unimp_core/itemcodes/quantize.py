"""Residual k-means over item embeddings, and the collision level that makes every code tuple unique.

Level 1 clusters the embeddings; level l clusters what the levels before it left unexplained (the
residuals), so an item's codes read coarse to fine. k-means is scikit-learn's (k-means++, then Lloyd),
fitted on a seeded sample of at most `fit_items` items and then applied to every item, so a million items
quantise in about a minute on one core. MiniBatchKMeans is not used: on the residuals of levels 2 and up
(a centred, nearly isotropic cloud) it collapsed, one code taking almost every item (perplexity 1.3 of 256
on Gaussian data), where Lloyd keeps every code in use.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from ..progress import Progress

BALANCE_MAX = 4  # a prefix group of more than BALANCE_MAX * codes items keeps its nearest last codes
MIN_ITEMS_PER_CODE = 4  # a small catalogue gets at most n/4 codes per level: codes then name groups, not items


def effective_codes(requested: int, n_items: int) -> int:
    """Codes per level for a catalogue of `n_items`: `requested`, capped at a quarter of the catalogue (at
    least 2, never more than the items)."""
    return max(1, min(requested, max(2, math.ceil(n_items / MIN_ITEMS_PER_CODE)), n_items))


def fit_kmeans(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k-means++ then Lloyd k-means on `x` (N, D); returns the centres (k, D) float32."""
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():  # fewer distinct points than k (duplicates, tiny data) is fine here
        warnings.simplefilter("ignore", ConvergenceWarning)
        km = KMeans(n_clusters=k, n_init=1, max_iter=100, random_state=seed).fit(x)
    return km.cluster_centers_.astype(np.float32)


def nearest(x: np.ndarray, centres: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Index of the nearest centre (squared Euclidean) of every row of `x` (N, D) -> (N,) int32, in chunks."""
    c_sq = (centres.astype(np.float32) ** 2).sum(axis=1)  # (k,)
    out = np.empty(len(x), dtype=np.int32)
    for start in range(0, len(x), chunk):
        part = x[start:start + chunk]
        dist = c_sq[None, :] - 2.0 * (part @ centres.T)  # (B, k); ||x||^2 is the same for every centre
        out[start:start + chunk] = dist.argmin(axis=1)
    return out


def residual_kmeans(x: np.ndarray, levels: int, k: int, fit_items: int, seed: int,
                    progress: Progress) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Residual k-means codes of `x` (N, D).

    Returns codes (N, levels) int32, codebooks (levels, k, D) float32 and, per level, the share of the
    embeddings' energy (sum of squares, after centring) that is still unexplained after it."""
    n = len(x)
    rng = np.random.default_rng(seed)
    fit_rows = np.sort(rng.choice(n, fit_items, replace=False)) if n > fit_items else None
    residual = np.array(x, dtype=np.float32)  # in x's own coordinates: the level-1 centres absorb the mean
    total = _energy(residual - residual.mean(axis=0)) or 1.0
    codes = np.empty((n, levels), dtype=np.int32)
    books, left = [], []
    with progress.task("residual k-means", levels) as advance:
        for level in range(levels):
            sample = residual if fit_rows is None else residual[fit_rows]
            centres = fit_kmeans(sample, k, seed + level)
            codes[:, level] = nearest(residual, centres)
            residual -= centres[codes[:, level]]
            books.append(centres)
            left.append(round(_energy(residual) / total, 4))
            advance(1)
    return codes, np.stack(books), left


def balance_last_level(codes: np.ndarray, x: np.ndarray, books: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
    """Spread items that would collide over the last level's codes.

    Among items that share all but the last code (a prefix group) and where some full tuples coincide, the
    last codes are re-assigned by an optimal assignment (scipy's linear_sum_assignment) that minimises the
    summed squared distance from each item's residual to its code, each code taking at most ceil(m / codes)
    of the group's m items: a group of at most `codes` items then needs no collision index, and each item
    keeps the nearest code the others leave it (the idea of LC-Rec's uniform last level, per group).

    codes (N, L), x (N, D) the quantised vectors, books (L, k, D). Returns the new codes and counts."""
    from scipy.optimize import linear_sum_assignment

    n, levels = codes.shape
    k = books.shape[1]
    info = {"groups": 0, "items_moved": 0, "too_large": 0}
    if levels < 2 or n < 2:
        return codes, info
    _, full, sizes = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    colliding = sizes[full.reshape(-1)] > 1
    if not colliding.any():
        return codes, info
    _, prefix = np.unique(codes[:, :-1], axis=0, return_inverse=True)
    prefix = prefix.reshape(-1)
    todo = np.unique(prefix[colliding])
    order = np.argsort(prefix, kind="stable")  # each group's items together, in item order
    sorted_prefix = prefix[order]
    starts, ends = np.searchsorted(sorted_prefix, todo, "left"), np.searchsorted(sorted_prefix, todo, "right")
    book = books[-1]  # (k, D)
    book_sq = (book * book).sum(axis=1)  # (k,)
    out = codes.copy()
    for start, end in zip(starts.tolist(), ends.tolist()):
        members = order[start:end]
        m = len(members)
        if m > BALANCE_MAX * k:
            info["too_large"] += 1
            continue
        residual = x[members] - sum(books[lv][codes[members, lv]] for lv in range(levels - 1))  # (m, D)
        cost = book_sq[None, :] - 2.0 * (residual @ book.T)  # (m, k); ||r||^2 is the same for every code
        rows, cols = linear_sum_assignment(np.tile(cost, (1, -(-m // k))))  # each code ceil(m/k) times
        out[members[rows], -1] = cols % k
        info["groups"] += 1
    info["items_moved"] = int((out[:, -1] != codes[:, -1]).sum())
    return out, info


def _energy(a: np.ndarray) -> float:
    """Sum of squares of `a` (N, D): per row in float32, over rows in float64 (no (N, D) float64 copy)."""
    return float(np.einsum("ij,ij->i", a, a).sum(dtype=np.float64))


def add_collision_index(codes: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Append the collision level: items with the same quantiser codes are numbered 0, 1, ... in item order.

    Returns (codes (N, levels + 1) int32, items in a group of two or more, the largest group's size)."""
    n = len(codes)
    if n == 0:
        return np.zeros((0, codes.shape[1] + 1), dtype=np.int32), 0, 1
    _, group, sizes = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    group = group.reshape(-1)
    order = np.argsort(group, kind="stable")  # items of a group together, in item order
    sorted_group = group[order]
    first = np.searchsorted(sorted_group, sorted_group, side="left")
    index = np.empty(n, dtype=np.int32)
    index[order] = np.arange(n) - first
    colliding = int(sizes[sizes > 1].sum())
    return np.column_stack([codes.astype(np.int32), index]), colliding, int(sizes.max())


def level_usage(codes: np.ndarray, k: int) -> list[dict[str, float]]:
    """Per level: codes used and the perplexity exp(entropy) of their distribution (= k when uniform)."""
    out = []
    for level in range(codes.shape[1]):
        counts = np.bincount(codes[:, level], minlength=k)
        p = counts[counts > 0] / max(1, counts.sum())
        out.append({"used": int((counts > 0).sum()), "perplexity": round(float(np.exp(-(p * np.log(p)).sum())), 2)})
    return out
