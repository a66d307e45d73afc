"""Personalised search: given the history and a query (the target's category), name the target.

Targets without a category have no query and are never drawn.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from .base import FIELD_WORDS, Sample, Task, TaskContext, assemble, clean, item_token, pick_target

NAME = "search"
QUESTION = "What is the related item ID to the query based on the history?"


def make_sample(ctx: TaskContext, user_id: int, seq: np.ndarray, position: int, query: str, history_len: int,
                train: bool, meta: dict | None = None) -> Sample:
    target = int(seq[position])
    history = ctx.history(seq[max(0, position - history_len):position])
    meta = {"user_id": user_id, "position": position, "target": target, "query": query, **(meta or {})}
    return assemble(NAME, [history, (f"Query: {query} {QUESTION}", [])], item_token(target), train, meta)


def training(ctx: TaskContext, rng: np.random.Generator, history_len: int) -> list[Sample]:
    out = []
    has_query = ctx.has_category
    for user_id, length in ctx.train_lengths.items():
        seq = ctx.sequences[user_id]
        position = pick_target(rng, length, history_len, valid=has_query[seq])
        if position is not None:
            query = ctx.item_category[int(seq[position])]
            out.append(make_sample(ctx, user_id, seq, position, query, history_len, train=True))
    return out


def evaluation(ctx: TaskContext, instances: pl.DataFrame, history_len: int) -> list[Sample]:
    out = []
    for user_id, split, position, query in instances.select("user_id", "split", "position", "query").iter_rows():
        query = clean(query, FIELD_WORDS)
        if not query:
            continue
        seq = ctx.sequence(user_id)
        out.append(make_sample(ctx, user_id, seq, position, query, history_len, train=False,
                               meta={"split": split, "history": seq[:position].tolist()}))
    return out


TASK = Task(NAME, training, evaluation)
