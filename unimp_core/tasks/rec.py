"""Sequential recommendation: name the next item of a user's history.

Training draws one window of `history_len` items per training user and epoch; evaluation reads
the stored `eval/rec.parquet` instances (history = sequence[:position], target = sequence[position]).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from .base import Sample, Task, TaskContext, assemble, item_token, pick_target

NAME = "rec"
QUESTION = "What is the next item recommended to the user?"


def make_sample(ctx: TaskContext, user_id: int, seq: np.ndarray, position: int, history_len: int,
                train: bool, meta: dict | None = None) -> Sample:
    """The prompt for predicting `seq[position]` from the `history_len` items before it."""
    target = int(seq[position])
    history = ctx.history(seq[max(0, position - history_len):position])
    meta = {"user_id": user_id, "position": position, "target": target, **(meta or {})}
    return assemble(NAME, [history, (QUESTION, [])], item_token(target), train, meta)


def training(ctx: TaskContext, rng: np.random.Generator, history_len: int) -> list[Sample]:
    out = []
    for user_id, length in ctx.train_lengths.items():
        position = pick_target(rng, length, history_len)
        if position is not None:
            out.append(make_sample(ctx, user_id, ctx.sequences[user_id], position, history_len, train=True))
    return out


def evaluation(ctx: TaskContext, instances: pl.DataFrame, history_len: int) -> list[Sample]:
    return [
        make_sample(ctx, user_id, ctx.sequence(user_id), position, history_len, train=False,
                    meta={"split": split, "history": ctx.sequence(user_id)[:position].tolist()})
        for user_id, split, position in instances.select("user_id", "split", "position").iter_rows()
    ]


TASK = Task(NAME, training, evaluation)
