"""Explanation generation: predict the rating and the explanation a user gives an item.

History items are reconstructed as `<answer> rate_<r> <explanation> <|endofchunk|>` (what the
user said about them); the target item follows, then the question. Interactions without a rating
drop the `rate_<r>` token; targets need an explanation.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from .base import (EXPLANATION_WORDS, Sample, Task, TaskContext, assemble, clean, join, pick_target,
                   rate_token)

NAME = "exp"
QUESTION = "What is the rating and explanation for the item?"


def _rate(rating: float | None) -> str:
    return rate_token(rating) if rating is not None and math.isfinite(rating) else ""


def reaction(rating: float | None, explanation: str, max_words: int | None = EXPLANATION_WORDS) -> str:
    """`rate_<r> <explanation>` (either part may be missing)."""
    return join(_rate(rating), clean(explanation, max_words))


def make_sample(ctx: TaskContext, user_id: int, position: int, history_len: int, answer: str,
                train: bool, meta: dict | None = None) -> Sample:
    seq = ctx.sequence(user_id)
    start = max(0, position - history_len)
    ratings, expls = ctx.ratings[user_id], ctx.explanations[user_id]
    answers = [reaction(ratings[k], expls[k]) for k in range(start, position)]
    history = ctx.history(seq[start:position], answers)
    target = int(seq[position])
    meta = {"user_id": user_id, "position": position, "target": target, **(meta or {})}
    return assemble(NAME, [history, (ctx.item_text(target), ctx.image_of(target)), (QUESTION, [])], answer, train, meta)


def training(ctx: TaskContext, rng: np.random.Generator, history_len: int) -> list[Sample]:
    out = []
    for user_id, length in ctx.train_lengths.items():
        expls = ctx.explanations[user_id]
        has_exp = np.fromiter((bool(e) for e in expls[:length]), dtype=bool, count=length)
        position = pick_target(rng, length, history_len, valid=has_exp)
        if position is not None:
            answer = reaction(ctx.ratings[user_id][position], expls[position])
            out.append(make_sample(ctx, user_id, position, history_len, answer, train=True))
    return out


def evaluation(ctx: TaskContext, instances: pl.DataFrame, history_len: int) -> list[Sample]:
    out = []
    rows = instances.select("user_id", "split", "position", "rating", "explanation").iter_rows()
    for user_id, split, position, rating, explanation in rows:
        explanation = clean(explanation)
        if not explanation:
            continue
        # The reference keeps the whole explanation (the seed scores against the full text).
        answer = join(_rate(rating), explanation)
        meta = {"split": split, "rating": rating, "explanation": explanation}
        out.append(make_sample(ctx, user_id, position, history_len, answer, train=False, meta=meta))
    return out


TASK = Task(NAME, training, evaluation)
