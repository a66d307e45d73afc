"""Image selection: pick the item(s) the user takes next among three pictured candidates.

Candidates are the true next one or two items plus negatives the user never touched, shuffled;
the answer names their slots in ascending order (`s_0 s_2`). Each candidate reads
`<image> Selection s_<j> Category … <|endofchunk|>`: the slot token comes after its picture so that,
under Flamingo's attend-to-the-latest-image rule, it sees its own image (the paper's code's layout).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from .base import Request, Sample, Task, TaskContext, assemble, draw_negatives, join, lazy, pick_target
from ..tokens import EOC, IMAGE, slot_token

NAME = "img_sel"
QUESTION = "Can you select the suitable item from above for the user?"
N_CANDIDATES = 3


def candidates_text(ctx: TaskContext, candidates: list[int]) -> tuple[str, list[int]]:
    chunks, images = [], []
    for j, item in enumerate(candidates):
        image = IMAGE if ctx.has_image[item] else ""
        chunks.append(join(image, f"Selection {slot_token(j)}", ctx.item_desc[item], EOC))
        images += ctx.image_of(item)
    return " ".join(chunks), images


def make_sample(ctx: TaskContext, user_id: int, position: int, candidates: list[int], answers: list[int],
                history_len: int, train: bool, meta: dict | None = None) -> Sample:
    """History = sequence[:position] (last `history_len` items); `answers` are among `candidates`."""
    seq = ctx.sequence(user_id)
    history = ctx.history(seq[max(0, position - history_len):position])
    slots = sorted({candidates.index(a) for a in answers})
    meta = {"user_id": user_id, "position": position, "candidates": list(candidates), "answers": list(answers),
            "slots": slots, **(meta or {})}
    answer = " ".join(slot_token(j) for j in slots)
    return assemble(NAME, [history, candidates_text(ctx, candidates), (QUESTION, [])], answer, train, meta)


def training(ctx: TaskContext, rng: np.random.Generator, history_len: int) -> list[Sample]:
    out = []
    for user_id, length in ctx.train_lengths.items():
        seq = ctx.sequences[user_id]
        position = pick_target(rng, length, history_len)
        if position is None:
            continue
        n_true = int(rng.integers(1, 3)) if position + 1 < length else 1
        answers = [int(x) for x in seq[position:position + n_true]]
        if len(set(answers)) < len(answers):  # a repeated purchase cannot fill two slots
            answers = answers[:1]
        negatives = draw_negatives(rng, ctx.n_items, set(seq.tolist()), N_CANDIDATES - len(answers))
        if negatives is None:
            continue
        candidates = [int(x) for x in rng.permutation(answers + negatives)]
        out.append(make_sample(ctx, user_id, position, candidates, answers, history_len, train=True))
    return out


def evaluation(ctx: TaskContext, instances: pl.DataFrame, history_len: int) -> list[Sample]:
    rows = instances.select("user_id", "split", "position", "candidates", "answers").iter_rows()
    return [
        make_sample(ctx, user_id, position, list(candidates), list(answers), history_len, train=False,
                    meta={"split": split})
        for user_id, split, position, candidates, answers in rows
    ]


def draw_instances(positions: pl.DataFrame, items: pl.DataFrame, rng: np.random.Generator) -> pl.DataFrame:
    """eval/img_sel.parquet: candidates = the true next 1 or 2 items and negatives the user never
    touched, shuffled; users who touched (almost) the whole catalogue are left out."""
    n_items = items.height
    rows: dict[str, list] = {"user_id": [], "split": [], "position": [], "candidates": [], "answers": []}
    for user_id, split, position, seq in positions.select("user_id", "split", "position", "item_id").iter_rows():
        n_true = int(rng.integers(1, 3)) if position >= 2 else 1
        start = position - n_true + 1
        answers = [int(a) for a in seq[start:position + 1]]
        negatives = draw_negatives(rng, n_items, set(seq), N_CANDIDATES - n_true)
        if negatives is None:
            continue
        candidates = answers + negatives
        rng.shuffle(candidates)
        rows["user_id"].append(user_id)
        rows["split"].append(split)
        rows["position"].append(start)
        rows["candidates"].append([int(c) for c in candidates])
        rows["answers"].append(answers)
    return pl.DataFrame(rows, schema={"user_id": pl.Int64, "split": pl.Utf8, "position": pl.Int64,
                                      "candidates": pl.List(pl.Int64), "answers": pl.List(pl.Int64)})


def prompt(ctx: TaskContext, user_id: int, seq: np.ndarray, history_len: int, request: Request) -> Sample:
    """Which of `request.candidates` the user takes after `seq`."""
    candidates = list(request.candidates)
    return make_sample(ctx, user_id, len(seq), candidates, [candidates[0]], history_len, train=False)


TASK = Task(NAME, training, evaluation, endpoint="select", data_needs=("images",), prompt=prompt, draw_instances=draw_instances, needs=("candidates",),
            records=lazy("unimp_core.evaluation.scoring:selection_records"), summary=lazy("unimp_core.evaluation.scoring:selection_summary"),
            report=lazy("unimp_core.terminal:metrics_report"), answer=lazy("unimp_core.generation:selection_answer"),
            show=lazy("unimp_core.terminal:show_selection"), html=lazy("unimp_core.generation:selection_html"))
