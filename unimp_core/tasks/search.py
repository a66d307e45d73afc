"""Personalised search: given the history and a query (the target's category), name the target.

Targets without a category have no query and are never drawn.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from .base import FIELD_WORDS, Request, Sample, Task, TaskContext, assemble, clean, lazy, pick_target

NAME = "search"
QUESTION = "What is the related item ID to the query based on the history?"


def make_sample(ctx: TaskContext, user_id: int, seq: np.ndarray, position: int, query: str, history_len: int,
                train: bool, meta: dict | None = None) -> Sample:
    target = int(seq[position])
    history = ctx.history(seq[max(0, position - history_len):position])
    meta = {"user_id": user_id, "position": position, "target": target, "query": query, **(meta or {})}
    return assemble(NAME, [history, (f"Query: {query} {QUESTION}", [])], ctx.item_name(target), train, meta)


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


def draw_instances(positions: pl.DataFrame, items: pl.DataFrame, rng: np.random.Generator) -> pl.DataFrame:
    """eval/search.parquet: rec's instances whose target has a category, which is the query."""
    from .rec import draw_instances as rec_instances

    search = rec_instances(positions, items, rng).join(
        items.select(pl.col("item_id").alias("target"), pl.col("category").alias("query")), on="target", how="left")
    return search.filter(pl.col("query").is_not_null() & (pl.col("query").str.len_chars() > 0))


def prompt(ctx: TaskContext, user_id: int, seq: np.ndarray, history_len: int, request: Request) -> Sample:
    return make_sample(ctx, user_id, np.append(seq, 0), len(seq), request.query or "", history_len, train=False)


TASK = Task(NAME, training, evaluation, endpoint="search", data_needs=("categories",), prompt=prompt, draw_instances=draw_instances, ranked=True, needs=("query",),
            records=lazy("unimp_core.evaluation.scoring:ranking_records"), summary=lazy("unimp_core.evaluation.scoring:ranking_summary"),
            report=lazy("unimp_core.terminal:ranking_report"), answer=lazy("unimp_core.generation:ranking_answer"),
            show=lazy("unimp_core.terminal:show_ranking"), html=lazy("unimp_core.generation:ranking_html"))
