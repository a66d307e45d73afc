"""Pure metric functions for ranking (`rec`, `search`), ratings (`exp`) and selection (`img_sel`).

Everything here takes numpy arrays or plain lists and returns plain floats / numpy arrays; no torch.

Ranking protocol: each user has one target item, ranked against the whole catalogue. A *rank* is
0-based (rank 0 = first place); `ABSENT` (-1) marks a target that is not in a truncated top-k list.
The rank metrics (HR@k, NDCG@k, MRR@k, ...) and their formulas are the table in `unimp_core/rank_metrics.py`.

Ties are pessimistic: an item scoring exactly the target's score is counted as ranked above it. Any
tie-break a top-k or beam search could make puts the target at this rank or better, so the reported
numbers are a lower bound, and a model that gives every item the same score gets HR@k = 0 (k < N),
never a lucky 1.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

from .. import rank_metrics as RM
from ..errors import UnimpError
from ..rank_metrics import ABSENT
from ..tokens import EOC, RATE_RE, RATINGS, SLOT_RE

RANK_KS: tuple[int, ...] = RM.DEFAULT_KS

RATING_RANGE = (RATINGS[0], RATINGS[-1])


# ----------------------------------------------------------------------------------------- ranking

def _check_ks(ks: Iterable[int]) -> tuple[int, ...]:
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise UnimpError(f"metrics: cut-offs k must be positive integers, got {ks}")
    return ks


def _exclusion_mask(exclude, shape: tuple[int, int]) -> np.ndarray:
    """A (B, N) bool mask from either a (B, N) bool array or B iterables of item ids."""
    if not isinstance(exclude, (list, tuple)):  # an array (numpy, or torch on the CPU)
        array = np.asarray(exclude)
        if array.dtype == bool:
            if array.shape != shape:
                raise UnimpError(f"metrics: exclusion mask has shape {array.shape}, scores have {shape}")
            return array
        if array.shape == shape:  # a 0/1 mask would otherwise be read as lists of item ids 0 and 1
            raise UnimpError("metrics: an exclusion mask of the scores' shape must have dtype bool")
    if len(exclude) != shape[0]:
        raise UnimpError(f"metrics: {len(exclude)} exclusion lists for {shape[0]} users")
    mask = np.zeros(shape, dtype=bool)  # (B, N)
    for row, items in enumerate(exclude):
        items = np.asarray(list(items), dtype=np.int64)
        if items.size and (items.min() < 0 or items.max() >= shape[1]):
            raise UnimpError(f"metrics: exclusion list of user row {row} holds an item id outside 0..{shape[1] - 1}")
        mask[row, items] = True
    return mask


def _check_targets(targets, batch: int, n_items: int) -> np.ndarray:
    targets = np.asarray(targets, dtype=np.int64).reshape(-1)  # (B,)
    if targets.shape[0] != batch:
        raise UnimpError(f"metrics: {targets.shape[0]} targets for {batch} score rows")
    if targets.size and (targets.min() < 0 or targets.max() >= n_items):
        raise UnimpError(f"metrics: a target item id is outside the catalogue 0..{n_items - 1}")
    return targets


def target_ranks(scores, targets, exclude=None) -> np.ndarray:
    """0-based rank of each user's target among all items, ties counted against the target.

    Args:
        scores: (B, N) item scores (higher is better), e.g. the logits of the N item tokens.
        targets: (B,) target item ids in 0..N-1.
        exclude: optional items removed from each user's ranking (e.g. the history), as a (B, N)
            bool mask or B iterables of item ids. The target itself is never removed.

    Returns:
        (B,) int64 ranks: the number of non-excluded items other than the target whose score is
        >= the target's score. Equivalent torch: `((s >= s.gather(1, t[:, None])) & ~mask).sum(1) - 1`
        with the target left out of the mask.

    Raises UnimpError on NaN scores (a broken model must not get a rank) or bad shapes/ids.
    """
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise UnimpError(f"metrics: scores must be (users, items), got shape {scores.shape}")
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float64)
    if np.isnan(scores).any():
        raise UnimpError("metrics: scores contain NaN; the model output is broken, no rank can be given")
    batch, n_items = scores.shape
    targets = _check_targets(targets, batch, n_items)
    rows = np.arange(batch)
    above = scores >= scores[rows, targets][:, None]  # (B, N)
    above[rows, targets] = False  # the target does not outrank itself
    if exclude is not None:
        above &= ~_exclusion_mask(exclude, (batch, n_items))
    return above.sum(axis=1).astype(np.int64)


def ranking_per_user(ranks, ks: Iterable[int] = RANK_KS) -> dict[str, np.ndarray]:
    """Per-user values of every rank metric (`unimp_core.rank_metrics`) from 0-based ranks (`ABSENT` = not retrieved).

    Returns:
        {"HR@1": (B,) float64, ..., "NDCG@1": ..., "MRR@1": ...}, metric-major (the table's order) then k
        in the order given.
    """
    ks = _check_ks(ks)
    ranks = np.asarray(ranks, dtype=np.int64).reshape(-1)
    if (ranks < ABSENT).any():
        raise UnimpError(f"metrics: ranks must be >= 0 (or {ABSENT} for absent), got {ranks.min()}")
    return {f"{name}@{k}": np.asarray(metric.value(ranks, k), dtype=np.float64)
            for name, metric in RM.METRICS.items() for k in ks}


def ranking_metrics(ranks, ks: Iterable[int] = RANK_KS) -> dict[str, float]:
    """HR@k, NDCG@k and MRR@k averaged over users (see `ranking_per_user`).

    Returns:
        {"HR@1": float, ..., "MRR@20": float}. Raises UnimpError when there are no users.
    """
    per_user = ranking_per_user(ranks, ks)
    n = next(iter(per_user.values())).shape[0]
    if n == 0:
        raise UnimpError("metrics: no users to score")
    return {name: float(values.mean()) for name, values in per_user.items()}


# -------------------------------------------------------------------------------------- popularity

def item_counts(train_items, n_items: int) -> np.ndarray:
    """How often each item id 0..n_items-1 occurs in the training interactions. Returns (N,) int64."""
    items = np.asarray(train_items, dtype=np.int64).reshape(-1)
    if items.size and (items.min() < 0 or items.max() >= n_items):
        raise UnimpError(f"metrics: a training item id is outside the catalogue 0..{n_items - 1}")
    return np.bincount(items, minlength=n_items).astype(np.int64)


def popularity_order(counts) -> np.ndarray:
    """The most-popular list: item ids by training count descending, equal counts by item id ascending.

    Returns:
        (N,) int64 item ids, best first. The id tie-break makes the list deterministic, so this
        baseline has no score ties.
    """
    counts = np.asarray(counts).reshape(-1)
    return np.lexsort((np.arange(counts.shape[0]), -counts)).astype(np.int64)


def popularity_ranks(counts, targets, exclude=None) -> np.ndarray:
    """0-based rank of each target in the most-popular list (see `popularity_order`).

    Args:
        counts: (N,) training counts per item id.
        targets: (B,) target item ids.
        exclude: optional per-user removals, as in `target_ranks` (the target is never removed).

    Returns:
        (B,) int64 ranks.
    """
    counts = np.asarray(counts).reshape(-1)
    n_items = counts.shape[0]
    targets = np.asarray(targets, dtype=np.int64).reshape(-1)
    targets = _check_targets(targets, targets.shape[0], n_items)
    position = np.empty(n_items, dtype=np.int64)
    position[popularity_order(counts)] = np.arange(n_items)
    ranks = position[targets]  # (B,)
    if exclude is None:
        return ranks
    mask = _exclusion_mask(exclude, (targets.shape[0], n_items))  # (B, N)
    # removed items that were ahead of the target move it up; the target itself is never ahead
    return ranks - (mask & (position[None, :] < ranks[:, None])).sum(axis=1)


def popularity_metrics(counts, targets, ks: Iterable[int] = RANK_KS, exclude=None) -> dict[str, float]:
    """HR/NDCG/MRR@k of the most-popular baseline under the same protocol as the model."""
    return ranking_metrics(popularity_ranks(counts, targets, exclude), ks)


# -------------------------------------------------------------------------- by the target's popularity

# Where the popularity buckets split: a target seen c times in the training data falls in the first bucket
# whose upper edge exceeds c. (5, 20) gives "<5" (rare items), "5-19" and "20+".
POPULARITY_EDGES: tuple[int, ...] = (5, 20)


def popularity_buckets(edges: Sequence[int] = POPULARITY_EDGES) -> list[str]:
    """The bucket labels for `edges`, e.g. (5, 20) -> ["<5", "5-19", "20+"]."""
    edges = [int(e) for e in edges]
    if not edges or edges[0] < 1 or any(b <= a for a, b in zip(edges, edges[1:])):
        raise UnimpError(f"metrics: popularity edges must be increasing positive integers, got {edges}")
    inner = [f"{a}-{b - 1}" if b - 1 > a else f"{a}" for a, b in zip(edges, edges[1:])]
    return [f"<{edges[0]}", *inner, f"{edges[-1]}+"]


def metrics_by_popularity(ranks, target_counts, ks: Iterable[int] = RANK_KS,
                          edges: Sequence[int] = POPULARITY_EDGES) -> dict[str, dict[str, float | int | None]]:
    """HR/NDCG/MRR@k (as `ranking_metrics`) over the users whose target falls in each popularity bucket.

    Args:
        ranks: (B,) 0-based ranks of the targets (`ABSENT`: not retrieved).
        target_counts: (B,) how often each user's target occurs in the training data.
        ks, edges: the cut-offs and the bucket edges (`POPULARITY_EDGES`).

    Returns:
        {"<5": {"users": n, "HR@1": float, ..., "MRR@20": float}, "5-19": {...}, "20+": {...}}, every bucket
        present, in order; a bucket without users has "users": 0 and every metric None.
    """
    per_user = ranking_per_user(ranks, ks)
    counts = np.asarray(target_counts, dtype=np.int64).reshape(-1)
    n = next(iter(per_user.values())).shape[0]
    if counts.shape[0] != n:
        raise UnimpError(f"metrics: {counts.shape[0]} target counts for {n} ranks")
    labels = popularity_buckets(edges)
    bucket = np.searchsorted(np.asarray(edges), counts, side="right")  # (B,) index into labels
    out: dict[str, dict[str, float | int | None]] = {}
    for b, label in enumerate(labels):
        chosen = bucket == b
        users = int(chosen.sum())
        out[label] = {"users": users, **{name: float(values[chosen].mean()) if users else None
                                         for name, values in per_user.items()}}
    return out


# ------------------------------------------------------------------------------------------ rating

def _answer_part(text: str | None) -> str:
    """The generated answer: text before the first chunk terminator."""
    return (text or "").split(EOC, 1)[0]


def parse_rating(text: str | None) -> int | None:
    """The rating in an `exp` output such as "rate_4 great product".

    The first `rate_<n>` token (spaces after the underscore tolerated; it must not be glued to a
    preceding letter or digit) gives the rating; values outside 1..5 and texts without the token give
    None. Text after `<|endofchunk|>` is ignored.
    """
    match = RATE_RE.search(_answer_part(text))
    if match is None:
        return None
    value = int(match.group(1))
    return value if RATING_RANGE[0] <= value <= RATING_RANGE[1] else None


def parse_exp_output(text: str | None) -> tuple[int | None, str]:
    """Split an `exp` output into (rating or None, explanation).

    The explanation is the answer with every `rate_<n>` token removed and whitespace collapsed (taking only
    what follows the first token would lose a word when the rating is missing).
    """
    answer = _answer_part(text)
    return parse_rating(answer), " ".join(RATE_RE.sub(" ", answer).split())


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def rating_metrics(predicted: Sequence[float | None], true: Sequence[float | None], policy: str = "exclude",
                   fill_value: float | None = None) -> dict:
    """RMSE and MAE of predicted ratings, with unparsable predictions handled by a stated policy.

    Args:
        predicted: per-sample predicted rating, None (or NaN) when the output had no parsable rating.
        true: per-sample true rating; None/NaN samples have no reference and are left out.
        policy: "exclude" leaves unparsable predictions out; "fill" scores them as `fill_value`
            (e.g. the training-set mean rating; the paper's code silently used 3.0).
        fill_value: required for policy "fill".

    Returns:
        {"RMSE", "MAE": float or None when nothing was scored, "scored": samples in the averages,
         "unparsable": predictions without a rating (among samples with a reference),
         "no_reference": samples without a true rating, "unparsable_policy": "exclude" or "fill",
         "fill_value": float or None}.
    """
    if len(predicted) != len(true):
        raise UnimpError(f"metrics: {len(predicted)} predicted ratings for {len(true)} true ratings")
    if policy not in ("exclude", "fill"):
        raise UnimpError(f"metrics: unparsable-rating policy must be 'exclude' or 'fill', got {policy!r}")
    if policy == "fill" and (fill_value is None or not math.isfinite(fill_value)):
        raise UnimpError("metrics: policy 'fill' needs a finite fill_value (e.g. the training mean rating)")
    errors, unparsable, no_reference = [], 0, 0
    for pred, ref in zip(predicted, true):
        if _is_missing(ref):
            no_reference += 1
            continue
        if _is_missing(pred):
            unparsable += 1
            if policy == "exclude":
                continue
            pred = fill_value
        errors.append(float(pred) - float(ref))
    err = np.asarray(errors, dtype=np.float64)
    return {
        "RMSE": float(np.sqrt(np.mean(err ** 2))) if err.size else None,
        "MAE": float(np.mean(np.abs(err))) if err.size else None,
        "scored": int(err.size),
        "unparsable": unparsable,
        "no_reference": no_reference,
        "unparsable_policy": policy,
        "fill_value": float(fill_value) if policy == "fill" else None,
    }


# --------------------------------------------------------------------------------------- selection

def parse_slots(text: str | None) -> tuple[frozenset[int], int]:
    """The slots named in an `img_sel` output such as "s_0 s_2".

    Returns:
        (distinct slot numbers, number of distinct other tokens). Like the paper's code, which scored the set
        of all generated words, other tokens count as wrong picks in precision (see
        `selection_metrics`). Surrounding ",.;:" is stripped from each token; text after
        `<|endofchunk|>` is ignored.
    """
    slots, others = set(), set()
    for token in _answer_part(text).split():
        match = SLOT_RE.fullmatch(token.strip(",.;:"))
        if match:
            slots.add(int(match.group(1)))
        else:
            others.add(token)
    return frozenset(slots), len(others)


def selection_per_sample(predicted: Sequence[Iterable[int]], true: Sequence[Iterable[int]],
                         n_other: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    """Per-sample precision, recall and F1 of selected slots, as the paper's code computes them.

    Args:
        predicted: per sample, the predicted slot numbers (duplicates count once).
        true: per sample, the true slot numbers (at least one).
        n_other: per sample, distinct non-slot tokens generated; they enlarge precision's denominator.

    Returns:
        {"precision", "recall", "f1": (S,) float64}. An empty prediction has precision 0; F1 is 0
        when precision + recall is 0.
    """
    if len(predicted) != len(true) or (n_other is not None and len(n_other) != len(true)):
        raise UnimpError(f"metrics: {len(predicted)} predicted selections for {len(true)} true selections")
    precision, recall, f1 = [], [], []
    for i, (pred, ref) in enumerate(zip(predicted, true)):
        pred, ref = set(pred), set(ref)
        if not ref:
            raise UnimpError(f"metrics: selection sample {i} has no true slot")
        hits = len(pred & ref)
        n_pred = len(pred) + (int(n_other[i]) if n_other is not None else 0)
        p = hits / n_pred if n_pred else 0.0
        r = hits / len(ref)
        precision.append(p)
        recall.append(r)
        f1.append(2 * p * r / (p + r) if p + r > 0 else 0.0)
    return {name: np.asarray(v, dtype=np.float64) for name, v in
            (("precision", precision), ("recall", recall), ("f1", f1))}


def selection_metrics(predicted: Sequence[Iterable[int]], true: Sequence[Iterable[int]],
                      n_other: Sequence[int] | None = None) -> dict[str, float]:
    """Precision, recall and F1 averaged over samples (per-sample first, as the paper's code).

    Returns {"precision", "recall", "f1": float}; raises UnimpError when there are no samples.
    """
    per_sample = selection_per_sample(predicted, true, n_other)
    if per_sample["f1"].size == 0:
        raise UnimpError("metrics: no selection samples to score")
    return {name: float(values.mean()) for name, values in per_sample.items()}
