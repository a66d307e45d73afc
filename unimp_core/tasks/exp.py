"""Explanation generation: predict the rating and the explanation a user gives an item.

History items are reconstructed as `<answer> rate_<r> <explanation> <|endofchunk|>` (what the
user said about them); the target item follows, then the question. Interactions without a rating
drop the `rate_<r>` token; targets need an explanation.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from dataclasses import replace

from .base import EXPLANATION_WORDS, Request, Sample, Task, TaskContext, assemble, clean, join, lazy, pick_target
from ..tokens import rate_token

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
        # The reference keeps the whole explanation (the paper's code scores against the full text).
        answer = join(_rate(rating), explanation)
        meta = {"split": split, "rating": rating, "explanation": explanation}
        out.append(make_sample(ctx, user_id, position, history_len, answer, train=False, meta=meta))
    return out


def draw_instances(positions: pl.DataFrame, items: pl.DataFrame, rng: np.random.Generator) -> pl.DataFrame:
    """eval/exp.parquet: targets with an explanation, after a history holding at least one."""
    return positions.with_columns(
        pl.col("item_id").list.get(pl.col("position")).alias("target"),
        pl.col("rating").list.get(pl.col("position")).alias("rating"),
        pl.col("explanation").list.get(pl.col("position")).alias("explanation"),
        pl.col("explanation").list.head(pl.col("position")).list.eval(
            pl.element().is_not_null() & (pl.element().str.len_chars() > 0)
        ).list.sum().alias("_hist_exp"),
    ).filter(
        pl.col("explanation").is_not_null() & (pl.col("explanation").str.len_chars() > 0) & (pl.col("_hist_exp") >= 1)
    ).select("user_id", "split", "position", "target", "rating", "explanation")


def prompt(ctx: TaskContext, user_id: int, seq: np.ndarray, history_len: int, request: Request) -> Sample:
    """The rating and explanation the user would give `request.item` after `seq`."""
    extended = replace(ctx, sequences={user_id: np.append(seq, request.item)},
                       ratings={user_id: ctx.ratings[user_id] + [None]},
                       explanations={user_id: ctx.explanations[user_id] + [""]})
    return make_sample(extended, user_id, len(seq), history_len, "", train=False)


TASK = Task(NAME, training, evaluation, endpoint="explain", data_needs=("reviews",), prompt=prompt, draw_instances=draw_instances, needs=("item",),
            records=lazy("unimp_core.evaluation.scoring:exp_records"), summary=lazy("unimp_core.evaluation.scoring:exp_summary"), report=lazy("unimp_core.terminal:exp_report"),
            answer=lazy("unimp_core.generation:exp_answer"), show=lazy("unimp_core.terminal:show_exp"), html=lazy("unimp_core.generation:exp_html"),
            example=lazy("unimp_core.report.page:exp_example"))
