"""Sequential recommendation: name the next item of a user's history.

Training takes one window of `history_len` items per training user and epoch: in the sequence layout
the most recent one (every position in it is trained, as SASRec trains a user's last `max_len` items;
random older windows cost 13% NDCG@10 on MovieLens 100K), in the chunks layout a random one (the paper's).
Evaluation reads the stored `eval/rec.parquet` instances (history = sequence[:position], target =
sequence[position]).

Two layouts (`model.rec_prompt`, carried by the TaskContext); both train next-item prediction at
every position of the window in one forward pass, as SASRec does for a whole sequence:
- sequence (the default): `<answer> item_3 item_9 item_4`. The items follow each other inside one
  answer span, so each item's (last) token predicts the next item and the final answer is predicted
  exactly where every history item was; an atomic item costs one token. The first item is read, not
  predicted: no ranking reads the `<answer>` position (a history holds at least one item), and SASRec
  never predicts a first item either. An item's content (`<image>`, its description) follows its name
  and is read, never predicted (the collator labels only the item tokens of such a span). No question
  and no end marker: the layout itself says "next item" (no other task's prompt opens with `<answer>`),
  a ranked answer needs no end, and on Beauty the question's 11 tokens and the end marker's
  whole-vocabulary softmax were a third of a training step.
- chunks (the paper's): every history item is followed by `<answer> item_<i> <|endofchunk|>` (context
  reconstruction), the question comes last and the answer after it.
Semantic ids spell an item as its code tuple `<a_12><b_7><c_201><d_0>` in either layout.
A user shorter than the window trains on their whole usable prefix (the window ending at its last item
holds all the shorter ones): with a long `history_len` (e.g. `task_history_len: {rec: 50}`) one epoch
sees every next-item position of every training user.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from ..tokens import ANSWER
from .base import Request, Sample, Task, TaskContext, assemble, lazy, pick_target

NAME = "rec"
QUESTION = "What is the next item recommended to the user?"


def make_sample(ctx: TaskContext, user_id: int, seq: np.ndarray, position: int, history_len: int,
                train: bool, meta: dict | None = None) -> Sample:
    """The prompt for predicting `seq[position]` from the `history_len` items before it."""
    target = int(seq[position])
    window = seq[max(0, position - history_len):position]
    meta = {"user_id": user_id, "position": position, "target": target, **(meta or {})}
    if ctx.rec_prompt == "chunks":
        return assemble(NAME, [ctx.history(window), (QUESTION, [])], ctx.item_name(target), train, meta)
    # sequence: one answer span holding the history's items, then (training) the target
    parts, images = [ANSWER], []
    for item in window:
        item = int(item)
        parts += [ctx.item_name(item), ctx.item_text(item)]
        images += ctx.image_of(item)
    if train:
        parts.append(ctx.item_name(target))
    return Sample(NAME, " ".join(p for p in parts if p), images, None if train else ctx.item_name(target), meta)


def training(ctx: TaskContext, rng: np.random.Generator, history_len: int) -> list[Sample]:
    out = []
    for user_id, length in ctx.train_lengths.items():
        if ctx.rec_prompt == "sequence":  # every position of the window is trained: the most recent one
            position = length - 1 if length >= 2 else None
        else:
            position = pick_target(rng, length, history_len, short="last")
        if position is not None:
            out.append(make_sample(ctx, user_id, ctx.sequences[user_id], position, history_len, train=True))
    return out


def evaluation(ctx: TaskContext, instances: pl.DataFrame, history_len: int) -> list[Sample]:
    return [
        make_sample(ctx, user_id, ctx.sequence(user_id), position, history_len, train=False,
                    meta={"split": split, "history": ctx.sequence(user_id)[:position].tolist()})
        for user_id, split, position in instances.select("user_id", "split", "position").iter_rows()
    ]


def draw_instances(positions: pl.DataFrame, items: pl.DataFrame, rng: np.random.Generator) -> pl.DataFrame:
    """eval/rec.parquet: user_id, split, position and the target (the item at `position`)."""
    return positions.select(
        "user_id", "split", "position", pl.col("item_id").list.get(pl.col("position")).alias("target")
    )


def prompt(ctx: TaskContext, user_id: int, seq: np.ndarray, history_len: int, request: Request) -> Sample:
    """What follows `seq` (the placeholder next item only fills Sample.answer)."""
    return make_sample(ctx, user_id, np.append(seq, 0), len(seq), history_len, train=False)


TASK = Task(NAME, training, evaluation, endpoint="recommend", prompt=prompt, draw_instances=draw_instances, ranked=True,
            selects_checkpoints=True,
            records=lazy("unimp_core.evaluation.scoring:ranking_records"), summary=lazy("unimp_core.evaluation.scoring:ranking_summary"),
            report=lazy("unimp_core.terminal:ranking_report"), answer=lazy("unimp_core.generation:ranking_answer"),
            show=lazy("unimp_core.terminal:show_ranking"), html=lazy("unimp_core.generation:ranking_html"))
